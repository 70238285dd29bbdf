# The two set-up commands of the README. Each installs what it needs first (idempotent).
.PHONY: demo test

demo:
	scripts/setup.sh demo
	.venv/bin/arbench demo

test:
	scripts/setup.sh test
	eval "$$(scripts/postgres.sh start)" && .venv/bin/python -m pytest -q -ra $(PYTEST_ARGS)
