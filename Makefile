# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Both create .venv, install what they need, and use the database configured in the environment
# or .env (DB_HOST / DATABASE_URL), else an embedded PostgreSQL kept in .pgdata/.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVDB := $(BIN)/python scripts/devdb.py run --

.PHONY: install run test test-faults bench bench-holds bench-slow-clients fuzz lint db-stop clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# The service starts even when the database cannot be set up (contract: /live answers with the
# database down); /ready answers 503 until it is reachable and migrated (run database_setup.py).
run: $(STAMP)
	$(DEVDB) sh -c '$(BIN)/python database_setup.py || echo "make run: database set-up failed (above); serving anyway: /ready answers 503 until the database is reachable and set up (python database_setup.py)" >&2; exec $(BIN)/python app.py'

# The whole suite: all but the fault scenarios on two pytest-xdist workers, then the fault scenarios
# alone (scripts/test.sh). FAULTS=no skips the fault scenarios (about two minutes).
test: $(STAMP)
	$(DEVDB) sh scripts/test.sh $(BIN)/python $(PYTEST_ARGS)

# Only the fault scenarios; they run their own PostgreSQL, so no database needs configuring.
test-faults: $(STAMP)
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

# The benchmark (bench/bench.py): needs wrk (installed here with apt-get when missing and possible).
# ROWS=10000000 sets the size of the big table (default 1,000,000); BENCH_ARGS passes anything else.
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || true
	$(DEVDB) $(BIN)/python bench/bench.py $(if $(ROWS),--rows $(ROWS)) $(BENCH_ARGS)

# Authorize and capture per second next to the charge (bench/holds.py).
bench-holds: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk >/dev/null || true
	$(DEVDB) $(BIN)/python bench/holds.py $(BENCH_ARGS)

# Slow clients held open through the front door and against bare gunicorn (bench/slow_clients.py).
bench-slow-clients: $(STAMP)
	$(DEVDB) $(BIN)/python bench/slow_clients.py $(BENCH_ARGS)

fuzz: $(STAMP)
	$(DEVDB) bash scripts/fuzz.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

db-stop: $(STAMP)
	$(BIN)/python scripts/devdb.py stop

clean: db-stop
	rm -rf $(VENV) .pgdata .pytest_cache .ruff_cache
