# ordertally: `make run` starts it with demo data, `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ORDERTALLY_DATA_DIR ?= ./var

.PHONY: install run test lint typecheck migrate migrations-check pytest bench demo clean \
	bench-orders bench-payments bench-fulfillment bench-channels drill drill-smoke bench-web \
	bench-exports bench-casework bench-search bench-rules bench-aftersales bench-outbound \
	bench-consumers bench-flat

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
	$(BIN)/ordertally user bootstrap
	$(BIN)/ordertally serve

LINT_DIRS := $(wildcard src tests bench)

# ruff, formatting, types, and the layering contracts of .importlinter.
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo --no-cache

# upgrade head + check on a scratch SQLite file, and on PostgreSQL when a test URL is given.
migrations-check: $(STAMP)
	$(BIN)/python -m ordertally.ops.migration_check

# The suite in PYTEST_WORKERS processes (pytest-xdist; isolation rules and PostgreSQL connection
# budget in ADR 0037): 2 by default, measured against 3 on the 2-core CI machine
# (docs/benchmarks.md). PYTEST_WORKERS=1 (or 0) runs serially. Giving PYTEST_ARGS replaces the
# default; the slowest tests are listed at the end of every run (--durations).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadgroup --durations=20
pytest: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint migrations-check pytest

# Every benchmark suite, one after the other (see docs/benchmarks.md for each figure's target).
# PostgreSQL figures use ORDERTALLY_TEST_PG_URL (default: postgres on 127.0.0.1:5432).
bench: bench-orders bench-payments bench-fulfillment bench-channels bench-web \
	bench-exports bench-casework bench-search bench-rules bench-aftersales bench-outbound \
	bench-consumers bench-flat

bench-orders: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.order_response

bench-payments: $(STAMP)
	$(BIN)/python -m bench.payments --server-workers 2 --workers 2 $(BENCH_PAYMENTS_ARGS)

bench-fulfillment: $(STAMP)
	$(BIN)/python -m bench.fulfillment $(BENCH_FULFILLMENT_ARGS)

bench-casework: $(STAMP)
	$(BIN)/python -m bench.casework $(BENCH_CASEWORK_ARGS)

bench-channels: $(STAMP)
	$(BIN)/python -m bench.channels_ingest $(BENCH_CHANNELS_ARGS)
	$(BIN)/python -m bench.channels_import $(BENCH_IMPORT_ARGS)

# Back-office page times with a million orders on PostgreSQL (issue 20).
bench-web: $(STAMP)
	$(BIN)/python -m bench.web_pages $(BENCH_WEB_ARGS)

# Issue 19: exports (CSV/XLSX), XLSX writers, stage table, analytics consumers (PostgreSQL).
bench-exports: $(STAMP)
	$(BIN)/python -m bench.exports $(BENCH_EXPORTS_ARGS)

# Search (issue 16): segmenters side by side, BENCH_SEARCH_ORDERS generated orders COPYed into a
# scratch PostgreSQL database, then 20 searchers over HTTP and the relevance set on it; the same
# orders copied into SQLite and measured the same way; creation with and without the indexer,
# and the index lag.
BENCH_SEARCH_ORDERS ?= 1000000
bench-search: $(STAMP)
	$(BIN)/python -m bench.search_segment
	$(BIN)/python -m bench.search_data --orders $(BENCH_SEARCH_ORDERS) --name ot_search_bench
	$(BIN)/python -m bench.search --manifest bench/results/search-ot_search_bench.json $(BENCH_SEARCH_ARGS)
	$(BIN)/python -m bench.search_data --sqlite bench/results/ot_search_bench.sqlite \
		--copy-of bench/results/search-ot_search_bench.json --name ot_search_bench_sqlite
	$(BIN)/python -m bench.search --manifest bench/results/search-ot_search_bench_sqlite.json $(BENCH_SEARCH_ARGS)
	$(BIN)/python -m bench.search_writes $(BENCH_SEARCH_WRITES_ARGS)

bench-rules: $(STAMP)
	$(BIN)/python -m bench.rules $(BENCH_RULES_ARGS)

bench-aftersales: $(STAMP)
	$(BIN)/python -m bench.aftersales_ingest $(BENCH_AFTERSALES_ARGS)

# Every consumer a worker runs, draining the events of orders made by the services (issue 21).
bench-consumers: $(STAMP)
	$(BIN)/python -m bench.consumers $(BENCH_CONSUMERS_ARGS)

# Flat with data (issue 21, ADR 0045): BENCH_FLAT_ORDERS orders COPYed into a scratch PostgreSQL
# database (with their lines, audit rows, events, keys, customers, payments, shipments), a
# BENCH_SOAK_MINUTES soak on it with the workers on, then order creation there against an empty
# database (interleaved; after the soak, whose workers would otherwise start on the backlog the
# flat bench leaves: it runs without workers); the database is dropped at the end. 10,000,000
# orders need the machine alone for about an hour and ~60 GB of disk (docs/benchmarks.md, h33).
BENCH_FLAT_ORDERS ?= 1000000
BENCH_SOAK_MINUTES ?= 10
bench-flat: $(STAMP)
	$(BIN)/python -m bench.preload --orders $(BENCH_FLAT_ORDERS) --name ot_flat_bench
	$(BIN)/python -m bench.soak --name ot_flat_bench --minutes $(BENCH_SOAK_MINUTES) \
		$(BENCH_SOAK_ARGS) && \
	$(BIN)/python -m bench.flat --name ot_flat_bench $(BENCH_FLAT_ARGS); status=$$?; \
	$(BIN)/python -m bench.preload --name ot_flat_bench --drop-only; exit $$status

# Outbound HTTP calls: a new client per call against the process's shared one (issue 21).
bench-outbound: $(STAMP)
	$(BIN)/python -m bench.outbound $(BENCH_OUTBOUND_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# The full-chain drill (issue 21): the promotion at DRILL_ARGS' --speed (x1 = 120,000 orders in
# 30 minutes) through 2 API and 2 worker processes, the broker relay and the simulators, on a
# scratch PostgreSQL database; report in bench/results/ (--publish: docs/drill/ too).
drill: $(STAMP)
	$(BIN)/python -m bench.drill $(DRILL_ARGS)

# The drill's short smoke run (PostgreSQL and RabbitMQ required).
drill-smoke: $(STAMP)
	$(BIN)/python -m pytest -q tests/drill
