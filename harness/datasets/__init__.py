"""Reference data that ships with the project, shared by the tasks that score on it and the methods
that generate in its format: scikit-learn digits (`digits`), moving-digit clips (`moving_digits`), the
rule-based En->De corpus (`en_de_corpus`) and espeak-ng speech (`espeak`)."""
