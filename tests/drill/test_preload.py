"""The flat-with-data preload (bench/preload.py, issue 21) as a smoke test: a few thousand orders
COPYed into a scratch PostgreSQL database make a database the app accepts. `ordertally doctor`
finds nothing wrong, the rows add up to what the manifest says, the sequences are past the
loaded ids, a preloaded order reads back decrypted over HTTP, and a new order is created over
HTTP with the next id. No figure is asserted."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import payload, preload
from bench.server import Server, asyncpg_dsn, existing_database

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("ORDERTALLY_TEST_PG_URL", "")
REQUIRE_SERVICES = os.environ.get("ORDERTALLY_REQUIRE_SERVICES") == "1"
ORDERS = 2_000

pytestmark = [pytest.mark.pg, pytest.mark.slow]


async def _fetch(url: str, sql: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def test_a_preloaded_database_passes_the_doctor_and_takes_new_orders() -> None:
    if not PG_URL:
        if REQUIRE_SERVICES:
            pytest.fail("ORDERTALLY_TEST_PG_URL is not set but ORDERTALLY_REQUIRE_SERVICES=1")
        pytest.skip("set ORDERTALLY_TEST_PG_URL to run the preload")
    name = f"ordertally_preload_test_{secrets.token_hex(4)}"
    try:
        # Given 2,000 orders preloaded by two processes in chunks of 500 (secondary indexes
        # dropped and built again)
        done = subprocess.run(
            [
                sys.executable, "-m", "bench.preload", "--orders", str(ORDERS), "--name", name,
                "--processes", "2", "--chunk", "500", "--pg-url", PG_URL,
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = preload.load_manifest(name)
        url = manifest["url"]
        # Then every table holds what the manifest counted
        counts = {
            table: asyncio.run(_fetch(url, f"SELECT count(*) FROM {table}"))[0][0]
            for table in manifest["rows"]
        }
        assert counts == manifest["rows"]
        assert counts["sales_order"] == ORDERS
        for table in ("order_line", "order_event", "outbox", "idempotency_key", "payment"):
            assert counts[table] > 0, table
        assert counts["customer"] == manifest["customers"]
        # And the secondary indexes dropped for the COPY exist again
        indexes = {r[0] for r in asyncio.run(_fetch(url, "SELECT indexname FROM pg_indexes"))}
        assert manifest["indexes_rebuilt"]
        assert set(manifest["indexes_rebuilt"]) <= indexes
        # And the growth report covers the orders table
        assert "sales_order" in {g["table"] for g in manifest["growth_per_million_orders"]}

        env = {"ORDERTALLY_DB_POOL_SIZE": "4"}
        with existing_database(url, manifest["pii_key"], env) as db:
            # When the doctor examines it, every check passes
            report = json.loads(db.cli("doctor", "--json"))
            failed = [c for c in report["checks"] if not c["ok"]]
            assert failed == [], failed
            with Server(db, 1) as server:
                # And a preloaded order reads back with its contact decrypted
                status, order = server.request("GET", "/api/v1/orders?limit=1", None)
                assert status == 200, order
                first = order["items"][0]["order_no"]
                status, detail = server.request("GET", f"/api/v1/orders/{first}", None)
                assert status == 200, detail
                status, contact = server.request(
                    "GET", f"/api/v1/orders/{first}/contact?reason=preload+smoke+test", None
                )
                assert status == 200, contact
                assert "****" not in json.dumps(contact), contact
                # And a new order is created over HTTP, past the loaded ids
                server.seed_stock(4)
                body = json.loads(payload.order_body(1))
                status, created = server.request("POST", "/api/v1/orders", body)
                assert status == 201, created
                ids = asyncio.run(
                    _fetch(
                        url, f"SELECT id FROM sales_order WHERE order_no = '{created['order_no']}'"
                    )
                )
                assert ids[0][0] > ORDERS
            # And the doctor still passes with the new order in
            report = json.loads(db.cli("doctor", "--json"))
            assert [c for c in report["checks"] if not c["ok"]] == []
    finally:
        preload.forget(PG_URL, name)
