# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Both create .venv, install what they need, and use the database configured in the environment
# or .env (DB_HOST / DATABASE_URL), else an embedded PostgreSQL kept in .pgdata/.
# What they install is locked with hashes (docs/development.md, "Dependencies and the lock"): `make run` the
# runtime set plus the embedded PostgreSQL (requirements-run.txt), `make test` and the other targets
# the development set (requirements-dev.txt). `make lock` regenerates the locks from pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# Hash-checking mode (each lock line carries its hashes; --require-hashes also refuses a line without).
# --no-compile: Python compiles each module into .venv on its first import instead of all at install.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --require-hashes --no-compile
DEVDB := $(BIN)/python scripts/devdb.py run --

.PHONY: install run test test-faults bench bench-holds bench-slow-clients fuzz lint lock lock-check db-stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements-run.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements-run.txt
	touch $(RUN_STAMP)

$(DEV_STAMP): requirements-dev.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements-dev.txt
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

# The service starts even when the database cannot be set up (contract: /live answers with the
# database down); /ready answers 503 until it is reachable and migrated (run database_setup.py).
run: $(RUN_STAMP)
	$(DEVDB) sh -c '$(BIN)/python database_setup.py || echo "make run: database set-up failed (above); serving anyway: /ready answers 503 until the database is reachable and set up (python database_setup.py)" >&2; exec $(BIN)/python app.py'

# The whole suite: all but the fault scenarios on two pytest-xdist workers, then the fault scenarios
# alone (scripts/test.sh). FAULTS=no skips the fault scenarios (about two minutes).
test: $(DEV_STAMP)
	$(DEVDB) sh scripts/test.sh $(BIN)/python $(PYTEST_ARGS)

# Only the fault scenarios; they run their own PostgreSQL, so no database needs configuring.
test-faults: $(DEV_STAMP)
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

# The benchmark (bench/bench.py): needs wrk (installed here with apt-get when missing and possible).
# ROWS=10000000 sets the size of the big table (default 1,000,000); BENCH_ARGS passes anything else.
bench: $(DEV_STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || true
	$(DEVDB) $(BIN)/python bench/bench.py $(if $(ROWS),--rows $(ROWS)) $(BENCH_ARGS)

# Authorize and capture per second next to the charge (bench/holds.py).
bench-holds: $(DEV_STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || true
	$(DEVDB) $(BIN)/python bench/holds.py $(BENCH_ARGS)

# Slow clients held open through the front door and against bare gunicorn (bench/slow_clients.py).
bench-slow-clients: $(DEV_STAMP)
	$(DEVDB) $(BIN)/python bench/slow_clients.py $(BENCH_ARGS)

fuzz: $(DEV_STAMP)
	$(DEVDB) bash scripts/fuzz.sh

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrite requirements.txt, requirements-run.txt and requirements-dev.txt from pyproject.toml (uv,
# a pinned dev dependency; reaches PyPI). LOCK_ARGS=--upgrade moves every unpinned package to its
# newest release, LOCK_ARGS="--upgrade-package NAME" one of them; otherwise locked versions stay.
lock: $(DEV_STAMP)
	sh scripts/lock.sh $(BIN)/uv $(LOCK_ARGS)

# Fails when the locks are not what `make lock` would write (CI runs it).
lock-check: $(DEV_STAMP)
	sh scripts/lock.sh --check $(BIN)/uv

db-stop: $(RUN_STAMP)
	$(BIN)/python scripts/devdb.py stop

clean: db-stop
	rm -rf $(VENV) .pgdata .pytest_cache .ruff_cache
