"""`ordertally aftersales list|show|pull|records|reapply`, run as an operator would: a real
process against the database and the channel simulator over HTTP (once, on SQLite: the service
paths run on both databases in test_refund_pull.py and test_cases.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.simkit.server import serve
from tests.aftersales.helpers import run_cli, walk
from tests.channels.helpers import make_account
from tests.conftest import ONLY_SQLITE
from tests.factories import make_order

pytestmark = pytest.mark.anyio


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(
        result.stdout[
            min(i for i in (result.stdout.find("{"), result.stdout.find("[")) if i >= 0) :
        ]
    )


@pytest.fixture
def sim() -> Iterator[tuple[str, ChannelSim]]:
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@ONLY_SQLITE  # the command line is the same on both databases; it runs once
async def test_an_operator_pulls_lists_shows_and_reapplies_from_the_command_line(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, _ = sim
    now = clock.now()
    # Given a Pinduoduo account, one of its orders shipped, and at the platform (added through
    # the simulator's control API) two successful refunds: one on that order (a return of one
    # tea), one on an order not pulled yet
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client"},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        overlap_seconds=60,
    )
    order = await make_order(db, "paid", channel="pdd_a", external_id="261205-01")
    await walk(db, order.order_no, "shipped")
    async with httpx.AsyncClient(base_url=url) as control:
        for body in (
            {
                "id": 9101,
                "order_sn": "261205-01",
                "updated_at": (now - timedelta(minutes=20)).isoformat(),
                "after_sales_type": 3,
                "reason": "质量问题",
            },
            {
                "id": 9102,
                "order_sn": "261205-02",
                "updated_at": (now - timedelta(minutes=15)).isoformat(),
                "refund_amount": "10.00",
            },
        ):
            added = await control.post("/sim/pinduoduo/refunds", json=body)
            assert added.status_code == 200 and added.json()["id"] == body["id"]
        assert (await control.get("/sim/status")).json()["pdd_refunds"] == 2
    # When the operator pulls the account from an hour ago
    pulled = run_cli("pull", "pdd_a", "--from", (now - timedelta(hours=1)).isoformat())
    # Then one case was opened and one record waits for its order
    assert pulled.returncode == 0, pulled.stderr
    outcome = _json(pulled)
    assert (outcome["read"], outcome["created"], outcome["unknown_order"]) == (2, 1, 1)
    waiting = run_cli("records")
    assert waiting.returncode == 0, waiting.stderr
    assert [(r["platform_refund_id"], r["status"]) for r in _json(waiting)] == [
        ("9102", "unknown_order")
    ]
    # When the order arrives and the operator applies the waiting records again
    await make_order(db, "paid", channel="pdd_a", external_id="261205-02")
    reapplied = run_cli("reapply")
    # Then the refund is a case now, and nothing waits
    assert reapplied.returncode == 0, reapplied.stdout + reapplied.stderr
    assert _json(reapplied) == {
        "created": 1,
        "duplicates": 0,
        "unknown_order": 0,
        "refused": [],
    }
    assert _json(run_cli("records")) == []
    # And the list shows both cases, and one shows its line by product name, its refund
    listed = run_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    cases = {c["platform_refund_id"]: c for c in _json(listed)}
    assert sorted(cases) == ["9101", "9102"]
    assert (cases["9101"]["type"], cases["9101"]["reason_code"]) == (
        "return_refund",
        "pdd:质量问题",
    )
    table = run_cli("list")
    assert table.returncode == 0 and cases["9101"]["case_no"] in table.stdout
    shown = run_cli("show", cases["9101"]["case_no"])
    assert shown.returncode == 0, shown.stderr
    doc = _json(shown)
    assert [(line["sku"], line["name"], line["quantity"]) for line in doc["lines"]] == [
        ("TEA-LJ-250", "测试商品 TEA-LJ-250", 1)
    ]
    assert [(r["source"], r["amount"]) for r in doc["refunds"]] == [("platform", "59.90")]
    # And a case that does not exist is an error, with its code
    missing = run_cli("show", "AS000000000000000")
    assert missing.returncode == 1 and "aftersales." in missing.stdout
