# The two set-up commands of the README. Each installs what it needs first (idempotent).
.PHONY: demo test

demo:
	scripts/setup.sh demo
	.venv/bin/arbench demo

# The test PostgreSQL server is stopped when the suite ends, pass or fail (KEEP_PG=1 keeps it running).
test:
	scripts/setup.sh test
	eval "$$(scripts/postgres.sh start)" && .venv/bin/python -m pytest -q -ra $(PYTEST_ARGS); \
	status=$$?; [ -n "$(KEEP_PG)" ] || scripts/postgres.sh stop; exit $$status
