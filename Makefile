# make demo: set up and run the sample portfolio over simulated business days (SQLite, ./outbox)
# make test: the whole suite, on three workers (they wait on Prefect and subprocesses) (SQLite, and PostgreSQL at DUNNING_TEST_PG_URL or 127.0.0.1:5432/test)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install clean schemas

$(BIN)/dunning: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/dunning

demo: $(BIN)/dunning
	rm -rf dunning.db dunning.db-wal dunning.db-shm outbox data
	$(BIN)/dunning demo

test: $(BIN)/dunning
	$(BIN)/pytest -q -n 3

lint: $(BIN)/dunning
	$(BIN)/ruff check dunning flows tasks tests bench

# the JSON Schemas of the agency case and status, from the models in dunning/channels/agency.py
schemas: $(BIN)/dunning
	$(BIN)/python -c "from dunning.channels.agency import write_schemas; write_schemas()"

clean:
	rm -rf $(VENV) dunning.db dunning.db-wal dunning.db-shm outbox data .pytest_cache
