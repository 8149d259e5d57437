"""The full-chain drill as a smoke test: the promotion for a few seconds through the whole chain
(the API, a worker with the broker relay, the payment, carrier, channel and SMS simulators) on
PostgreSQL. No figure is asserted, only the drill's end-state checks and that the run covered
every path of the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("ORDERTALLY_TEST_PG_URL", "")
AMQP_URL = os.environ.get("ORDERTALLY_TEST_AMQP_URL", "")
REQUIRE_SERVICES = os.environ.get("ORDERTALLY_REQUIRE_SERVICES") == "1"
# A short promotion, sized so the test costs about a minute of wall time on the 2-core machine
# (docs/drill/README.md, "The smoke test in make test"): x0.3 (20 orders/s) for 3 s is 60 orders,
# enough that the fixed seed plays every fate (paid, abandoned, paid after the cancel, Shopify,
# Pinduoduo, a client retry; the file import's floor is 5 orders) while the misbehaviour rates
# are raised so that a few callbacks are dropped (compensation), forged and replayed stale. One
# API and one worker process: the chain is the same (consumers, jobs, the broker relay), with
# less start-up and less CPU than 2 + 2.
SPEED = os.environ.get("ORDERTALLY_DRILL_SMOKE_SPEED", "0.3")
SECONDS = os.environ.get("ORDERTALLY_DRILL_SMOKE_SECONDS", "3")
# The drain bound only guards against a hang (a loaded machine drains more slowly).
DRAIN = os.environ.get("ORDERTALLY_DRILL_SMOKE_DRAIN", "120")

# In `make test` (PostgreSQL suites): skipped without PostgreSQL and RabbitMQ unless
# ORDERTALLY_REQUIRE_SERVICES=1. `make drill-smoke` runs it alone. In CI it once caught 3 x 500
# on ship (a worker batch holding a stock row against a ship holding its order row): requests
# that lock an order then its stock now run their unit of work again after a deadlock
# (`Database.run`), as the worker does with its batches.
pytestmark = [pytest.mark.pg, pytest.mark.slow]


def _needs(value: str, variable: str) -> None:
    if not value:
        if REQUIRE_SERVICES:
            pytest.fail(f"{variable} is not set but ORDERTALLY_REQUIRE_SERVICES=1")
        pytest.skip(f"set {variable} to run the drill")


def test_a_short_drill_ends_with_every_check_clean(tmp_path: Path) -> None:
    _needs(PG_URL, "ORDERTALLY_TEST_PG_URL")
    _needs(AMQP_URL, "ORDERTALLY_TEST_AMQP_URL")
    # Given the whole chain on 127.0.0.1, when the promotion plays for a few seconds
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.drill",
            "--speed",
            SPEED,
            "--duration",
            SECONDS,
            "--drain-timeout",
            DRAIN,
            "--api-processes",
            "1",
            "--worker-processes",
            "1",
            "--push-every",
            "0.2",
            "--drop-rate",
            "0.1",
            "--forge-rate",
            "0.1",
            "--stale-rate",
            "0.1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it wrote its report, and every end-state check passed
    [written] = list(tmp_path.glob("drill-*.json"))
    doc = json.loads(written.read_text())
    assert [c for c in doc["checks"] if not c["ok"]] == [], done.stdout[-3000:]
    assert doc["anomalies"] == []
    assert doc["orders"]["created"] == doc["orders"]["scheduled"] > 0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(tmp_path.glob("drill-*.html"))) == 1
    # And the run covered the chain: every fate played, callbacks dropped (found by the
    # compensation query), forged and stale copies refused, Shopify webhooks applied,
    # Pinduoduo orders pulled by the scheduled sync, a file imported with its wrong rows
    # rejected (and imported again, creating nothing)
    checks = {c["name"]: c["detail"] for c in doc["checks"]}
    fates = checks["orders_accounted"]["by_fate"]
    assert min(fates["paid"], fates["abandoned"], fates["late"]) >= 1, fates
    assert checks["compensation_ran"]["queried"] >= 1, checks["compensation_ran"]
    assert checks["forged_and_stale_refused"]["sent"] >= 1
    assert checks["shopify_orders_ingested_once"]["orders"] >= 1
    assert checks["idempotent_retries"]["retried"] >= 1
    assert checks["pinduoduo_orders_pulled_once"]["orders"] >= 1
    imported = checks["file_import_rows_accounted"]
    assert (imported["good_rows"], imported["wrong_rows"]) == (5, 3), imported
    assert doc["orders"]["from_file"] == 5
