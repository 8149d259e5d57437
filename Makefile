# ordertally: `make run` starts it with demo data, `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ORDERTALLY_DATA_DIR ?= ./var

.PHONY: install run test lint typecheck migrate migrations-check pytest bench demo clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "ordertally needs Python 3.11 or newer"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/ordertally migrate

run: $(STAMP)
	$(BIN)/ordertally migrate
	$(BIN)/ordertally demo --if-empty
	$(BIN)/ordertally serve

LINT_DIRS := $(wildcard src tests bench)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy

# upgrade head + check on a scratch SQLite file, and on PostgreSQL when a test URL is given.
migrations-check: $(STAMP)
	$(BIN)/python -m ordertally.ops.migration_check

pytest: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint migrations-check pytest

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
