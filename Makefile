# make demo: set up and run the sample portfolio over simulated business days (SQLite, ./outbox)
# make test: the whole suite, on three workers (they wait on Prefect and subprocesses) (SQLite, and PostgreSQL at DUNNING_TEST_PG_URL or 127.0.0.1:5432/test)
# make lint: ruff and mypy (CI runs it before the tests)
# make lock: recompile requirements.lock from pyproject.toml's ranges (see the README, "Dependencies")
# make messages: the templates' wording into locale/dunning.pot, then each language's catalog updated from it

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install clean schemas lock messages

# Installs exactly what requirements.lock names (every version pinned, every file's hash checked),
# then dunning itself without resolving anything again.
$(BIN)/dunning: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/dunning

demo: $(BIN)/dunning
	rm -rf dunning.db dunning.db-wal dunning.db-shm dunning.db.run.lock outbox data
	$(BIN)/dunning demo

test: $(BIN)/dunning
	$(BIN)/pytest -q -n 3

# ruff, then mypy with the pydantic plugin over dunning, flows and tasks (pyproject.toml, [tool.mypy])
lint: $(BIN)/dunning
	$(BIN)/ruff check dunning flows tasks tests bench
	$(BIN)/mypy

# The newest versions pyproject.toml's ranges allow, for Linux x86_64 and Python 3.11 (this
# project's machines); hatchling and editables are pinned too, since the editable install builds without isolation.
lock: $(BIN)/dunning
	printf 'hatchling>=1.25\neditables>=0.5\n' | $(BIN)/uv pip compile pyproject.toml - --extra test --upgrade \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command 'make lock' -o requirements.lock

# the JSON Schemas of the agency case and status, from the models in dunning/channels/agency/models.py
schemas: $(BIN)/dunning
	$(BIN)/python -c "from dunning.channels.agency.models import write_schemas; write_schemas()"

# New messages arrive empty in every catalog and changed ones marked fuzzy: translate them (the
# tests refuse an empty or fuzzy translation). Rendering reads the .po files as they are.
messages: $(BIN)/dunning
	$(BIN)/pybabel extract --mapping-file babel.cfg --add-location file --sort-by-file --no-wrap \
	  --project dunning --omit-header --output-file locale/dunning.pot .
	$(BIN)/pybabel update --domain dunning --input-file locale/dunning.pot --output-dir locale \
	  --no-wrap --ignore-obsolete --ignore-pot-creation-date

clean:
	rm -rf $(VENV) dunning.db dunning.db-wal dunning.db-shm dunning.db.run.lock outbox data .pytest_cache
