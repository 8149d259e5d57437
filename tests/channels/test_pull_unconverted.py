"""Issue 15: a raw platform order that a pull's adapter cannot convert (a bad field, an unknown
shape) is held exactly like a failed webhook or a held pull: sealed in the webhook inbox with
one `order_not_created` case per platform version, counted, and replayable by the API and
`ordertally channels replay` once the cause is fixed. Real pulls over HTTP from the simulator,
for each pull channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ordertally.channels import held, sync
from ordertally.channels.models import ChannelWebhook
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.cli import app as cli_app
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from ordertally.simkit.server import serve
from tests.channels.helpers import make_account
from tests.factories import auth

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
# An Amazon marketplace id that `amazon.MARKETPLACES` does not list (Amazon.co.za's), so a
# Pending order of it (no OrderTotal, no ItemPrice) carries no currency at all.
UNLISTED_MARKETPLACE = "AE08WJ6YKNBMC"


@pytest.fixture(scope="module")
def sim_server() -> Iterator[tuple[str, ChannelSim]]:
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@pytest.fixture
def sim(sim_server: tuple[str, ChannelSim]) -> Iterator[tuple[str, ChannelSim]]:
    url, state = sim_server
    state.reset()
    with clock.frozen(NOW):
        yield url, state
    state.reset()


async def _held(db: Database) -> list[tuple[ChannelWebhook, ExceptionCase]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(ChannelWebhook, ExceptionCase)
            .join(ExceptionCase, ExceptionCase.id == ChannelWebhook.held_case_id)
            .order_by(ChannelWebhook.id)
        )
        return [(w, c) for w, c in rows.all()]


async def _count(db: Database, model: Any) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _orders(db: Database) -> list[tuple[str, str, int]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(SalesOrder.external_id, SalesOrder.currency, SalesOrder.total_minor).order_by(
                SalesOrder.id
            )
        )
        return [(str(e), str(c), int(t)) for e, c, t in rows.all()]


async def _replay(client: httpx.AsyncClient, keys: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.post("/api/v1/channels/held-orders/replay", headers=auth(keys["admin"]))
    assert response.status_code == 200, response.text
    replayed: list[dict[str, Any]] = response.json()["replayed"]
    return replayed


async def test_a_pinduoduo_order_the_adapter_cannot_convert_is_held_not_only_reported(
    db: Database, sim: tuple[str, ChannelSim], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    url, state = sim
    # Given a Pinduoduo account (a 30-minute overlap, so a second pull reads the window again)
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client"},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        start_at=(NOW - timedelta(minutes=20)).isoformat(),
        overlap_seconds=1800,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )
    # And two orders on the platform: a good one, and one whose price is not a number and
    # whose count is Chinese text (an unknown shape: int() and Decimal() fail inside the adapter)
    state.pdd.add("261120-000000000000001", NOW - timedelta(minutes=12))
    state.pdd.add("261120-000000000000002", NOW - timedelta(minutes=10))
    bad = state.pdd.orders["261120-000000000000002"]
    bad["item_list"][0].update(goods_price="五十九块九", goods_count="两")
    # When the account is pulled over HTTP
    outcome = await sync.sync_account(db, "pdd_a")
    # Then the good order is created, the run completes (the cursor is not stuck on the bad
    # order) and the bad one is reported and held
    assert outcome.complete and outcome.result.created == 1
    assert outcome.unconverted == 1 and outcome.orders_read == 2
    assert [e for e, _ in outcome.result.errors] == ["261120-000000000000002"]
    assert [e for e, _, _ in await _orders(db)] == ["261120-000000000000001"]
    rows = await _held(db)
    assert len(rows) == 1
    receipt, case = rows[0]
    assert (receipt.topic, receipt.status) == ("held-raw:pull", "failed")
    assert receipt.webhook_id.startswith(held.RAW_PREFIX)
    # sealed: the platform's document is not readable in the inbox row
    assert "五十九块九" not in receipt.body and "261120-000000000000002" not in receipt.body
    assert (case.type, case.status, case.blocking, case.order_id) == (
        "order_not_created",
        "open",
        True,
        None,
    )
    assert case.detail["via"] == "pull" and case.detail["cause"] == "unmappable"
    assert case.detail["external_id"] == "261120-000000000000002"
    assert "InvalidOperation" in case.detail["error"] or "ValueError" in case.detail["error"]
    # When the same version is pulled again
    again = await sync.sync_account(db, "pdd_a")
    # Then it is reported again but not held twice (one row, one case)
    assert again.unconverted == 0 and again.result.duplicates == 1
    assert len(await _held(db)) == 1 and await _count(db, ExceptionCase) == 1
    # When it is replayed over HTTP while the adapter still cannot read it
    replayed = await _replay(client, keys)
    # Then it stays held: no order, no second case
    assert [(r["status"], r["webhook_id"]) for r in replayed] == [("failed", receipt.webhook_id)]
    assert len(await _orders(db)) == 1 and await _count(db, ExceptionCase) == 1
    assert (await _held(db))[0][1].status == "open"
    # When the platform sends a corrected version (a new update time), it is created as usual
    # and the held old version stays for an operator to close
    state.pdd.add("261120-000000000000002", NOW - timedelta(minutes=5))
    fixed = await sync.sync_account(db, "pdd_a")
    assert fixed.result.created == 1 and fixed.unconverted == 0
    assert [e for e, _, _ in await _orders(db)] == [
        "261120-000000000000001",
        "261120-000000000000002",
    ]


async def test_an_amazon_order_without_a_currency_is_held_then_applied_once_configured(
    db: Database,
    sim: tuple[str, ChannelSim],
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, state = sim
    # Given an Amazon account and a Pending order of a marketplace our table does not list:
    # SP-API documents Pending orders without OrderTotal and their items without ItemPrice
    await make_account(
        db,
        "amz_a",
        "amazon",
        config={"base_url": url, "marketplace_id": UNLISTED_MARKETPLACE},
        credentials={"access_token": "sim-amazon-token"},
        start_at=(NOW - timedelta(hours=1)).isoformat(),
        overlap_seconds=0,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )
    state.amazon.add("171-0000001-0000001", NOW - timedelta(minutes=30), status="Pending")
    order = state.amazon.orders["171-0000001-0000001"]
    order["MarketplaceId"] = UNLISTED_MARKETPLACE
    del order["OrderTotal"]
    del state.amazon.items["171-0000001-0000001"][0]["ItemPrice"]
    # When it is pulled
    outcome = await sync.sync_account(db, "amz_a")
    # Then nothing is created; it is held raw with the items the pull read
    assert outcome.complete and outcome.result.created == 0 and outcome.unconverted == 1
    receipt, case = (await _held(db))[0]
    assert receipt.topic == "held-raw:pull"
    assert case.detail["cause"] == "unmappable" and "no currency" in case.detail["error"]
    assert await _orders(db) == []
    # When the merchant sets the account's currency (and its rate) and replays with the CLI
    response = await client.patch(
        "/api/v1/channels/accounts/amz_a",
        json={"config": {"currency": "ZAR"}},
        headers=auth(keys["admin"]),
    )
    assert response.status_code == 200, response.text
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"ZAR": "0.3921"}')
    reset_settings()
    # The command runs its own event loop and database engine, as from a shell.
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli_app, ["channels", "replay"])
    )
    assert result.exit_code == 0, result.output
    # Then the order is created (Pending: unpaid, no amount yet) and the case resolved
    assert await _orders(db) == [("171-0000001-0000001", "ZAR", 0)]
    receipt, case = (await _held(db))[0]
    assert (receipt.status, case.status) == ("applied", "resolved")
    # And a second replay and a second pull change nothing (exactly once)
    assert await _replay(client, keys) == []
    await sync.sync_account(db, "amz_a")
    assert len(await _orders(db)) == 1 and len(await _held(db)) == 1
