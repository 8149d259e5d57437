"""Issue 15: an order a file import or a channel pull cannot create (here: USD with no rate
configured) is held like a failed webhook: kept sealed in the inbox with an `order_not_created`
case, never twice for the same platform version, and replayable over HTTP once the cause is
fixed (the order is created and the case resolved)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ordertally.channels.import_cli import import_file
from ordertally.channels.ingest import ingest_orders
from ordertally.channels.models import ChannelWebhook
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from tests.channels.helpers import canonical, make_account
from tests.factories import auth

pytestmark = pytest.mark.anyio

HEADER = (
    "order_id,sku,title,quantity,unit_price,currency,status,placed_at,paid_at,buyer_name,"
    "buyer_phone,buyer_id,province,city,district,address,category"
)
ROWS = (
    "H-1,TEA-LJ-250,Longjing 250g,1,59.90,CNY,paid,2026-11-20T08:00:00+08:00,"
    "2026-11-20T08:05:00+08:00,陈一,13312345678,,上海市,上海市,静安区,南京西路1号,茶叶",
    "H-2,TEA-LJ-250,Longjing 250g,2,8.50,USD,paid,2026-11-20T09:00:00+08:00,"
    "2026-11-20T09:05:00+08:00,陈二,13212345678,,上海市,上海市,静安区,南京西路2号,茶叶",
)


async def _held(db: Database) -> list[tuple[ChannelWebhook, ExceptionCase]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(ChannelWebhook, ExceptionCase)
            .join(ExceptionCase, ExceptionCase.id == ChannelWebhook.held_case_id)
            .order_by(ChannelWebhook.id)
        )
        return [(w, c) for w, c in rows.all()]


async def _external_ids(db: Database) -> list[str | None]:
    async with db.transaction(write=False) as session:
        found = await session.scalars(select(SalesOrder.external_id).order_by(SalesOrder.id))
        return list(found)


async def _replay(client: httpx.AsyncClient, keys: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.post("/api/v1/channels/held-orders/replay", headers=auth(keys["admin"]))
    assert response.status_code == 200, response.text
    replayed: list[dict[str, Any]] = response.json()["replayed"]
    return replayed


async def test_a_file_order_without_its_rate_is_held_then_replayed(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a file of two orders, the second in USD while no USD rate is configured
    await make_account(db, "file_a", "file")
    source = tmp_path / "orders.csv"
    source.write_text("\n".join((HEADER, *ROWS)) + "\n", encoding="utf-8")
    # When it is imported (twice: the same file again)
    first = await import_file(db, "file_a", source)
    await import_file(db, "file_a", source)
    # Then the CNY order is created, the USD one is held once, sealed, with its case
    assert first.created == 1
    assert await _external_ids(db) == ["H-1"]
    held = await _held(db)
    assert len(held) == 1
    receipt, case = held[0]
    assert (receipt.topic, receipt.status) == ("held:file", "failed")
    assert "陈二" not in receipt.body and "13212345678" not in receipt.body
    assert (case.type, case.status, case.blocking) == ("order_not_created", "open", True)
    assert case.detail["via"] == "file" and case.detail["external_id"] == "H-2"
    assert case.detail["cause"] == "fx_rate_missing", case.detail
    # When the rate is configured and the held orders are replayed over HTTP
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    replayed = await _replay(client, keys)
    # Then the order is created and its case resolved
    assert [r["status"] for r in replayed] == ["applied"]
    assert await _external_ids(db) == ["H-1", "H-2"]
    receipt, case = (await _held(db))[0]
    assert (receipt.status, case.status) == ("applied", "resolved")


async def test_a_pulled_order_that_cannot_be_created_is_held_and_replayable(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Pinduoduo account whose pull brings an order in a currency without a rate
    await make_account(db, "pdd_a", "pinduoduo")
    order = canonical("PDD-9", platform="pinduoduo", currency="USD")
    result = await ingest_orders(db, "pdd_a", [order], via="pull")
    # Then it is reported and held, with its case naming the pull
    assert [e for e, _ in result.errors] == ["PDD-9"]
    receipt, case = (await _held(db))[0]
    assert receipt.topic == "held:pull" and case.detail["via"] == "pull"
    # And a replay while the rate is still missing keeps it held
    assert [r["status"] for r in await _replay(client, keys)] == ["failed"]
    assert (await _held(db))[0][1].status == "open"
    # When the rate is configured, the replay creates it
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    assert [r["status"] for r in await _replay(client, keys)] == ["applied"]
    assert await _external_ids(db) == ["PDD-9"]
    assert (await _held(db))[0][1].status == "resolved"
