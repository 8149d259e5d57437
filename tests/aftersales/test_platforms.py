"""Platform after-sale records: Shopify's refunds/create webhook through the signed channel
inbox (body: the Refund resource of Shopify/shopify_python_api test/fixtures/refund.json,
line items trimmed to the fields used, unwrapped from "refund" as the webhook sends it), and
Pinduoduo refund list items; each platform refund id applied once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from ordertally.aftersales import jobs, platforms
from ordertally.aftersales.models import AftersaleCase, AftersalePlatformRecord, AftersaleRefund
from ordertally.channels import callbacks
from ordertally.channels.adapters import shopify
from ordertally.channels.models import ChannelWebhook
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from tests.aftersales.helpers import order_status, walk
from tests.channels.helpers import make_account
from tests.conftest import TEST_WAREHOUSE, seed_catalog
from tests.factories import make_order, receive

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).parent / "fixtures" / "shopify_refund.json"
SECRET = "hush-aftersales"


async def _shopify_order(db: Database, monkeypatch: pytest.MonkeyPatch) -> str:
    """Shopify order 450789469 (two iPods at 199.00 USD), shipped."""
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    await seed_catalog(db, ("IPOD2008BLACK", "IPOD2008GREEN"))
    for sku in ("IPOD2008BLACK", "IPOD2008GREEN"):
        await receive(db, TEST_WAREHOUSE, sku, 10)
    order = await make_order(
        db,
        "paid",
        channel="shop_a",
        external_id="450789469",
        currency="USD",
        lines=[
            {"sku": "IPOD2008BLACK", "quantity": 1, "unit_price": "199.00"},
            {"sku": "IPOD2008GREEN", "quantity": 1, "unit_price": "199.00"},
        ],
    )
    await walk(db, order.order_no, "shipped")
    return order.order_no


async def test_shopify_refunds_create_is_verified_stored_and_applied_once(
    db: Database, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Shopify account and its shipped order 450789469
    await make_account(db, "shop_a", credentials={"webhook_secret": SECRET})
    order_no = await _shopify_order(db, monkeypatch)
    body = orjson.dumps(json.loads(FIXTURE.read_text()))
    headers = {
        "X-Shopify-Topic": "refunds/create",
        "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "Content-Type": "application/json",
    }
    # When Shopify delivers it, retries it, and a forged copy arrives
    for _ in range(2):
        r = await client.post("/callbacks/channels/shopify/shop_a", content=body, headers=headers)
        assert r.status_code == 200
    forged = await client.post(
        "/callbacks/channels/shopify/shop_a",
        content=body,
        headers={**headers, "X-Shopify-Hmac-Sha256": shopify.sign("wrong", body)},
    )
    assert forged.status_code == 401
    async with db.transaction() as session:
        receipts = (await session.scalars(select(ChannelWebhook))).all()
        assert [(w.topic, w.status) for w in receipts] == [("refunds/create", "pending")]
        # And the worker applies the stored receipt (twice: the second is a no-op)
        assert await callbacks.apply_receipt(session, receipts[0].id) == "applied"
        assert await callbacks.apply_receipt(session, receipts[0].id) == "applied"
    # Then one return case waits for both iPods, the 209.00 refund recorded once
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase))).all()
        refunds = (await session.scalars(select(AftersaleRefund))).all()
    assert [(c.type, c.status, c.platform_refund_id, c.refund_minor) for c in cases] == [
        ("return_refund", "awaiting_return", "509562969", 20900)
    ]
    assert [(r.source, r.state, r.amount_minor, r.currency) for r in refunds] == [
        ("platform", "succeeded", 20900, "USD")
    ]
    assert await order_status(db, order_no) == "partially_refunded"


async def test_pinduoduo_records_with_duplicates_are_ingested_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two Pinduoduo orders
    nos = []
    for sn in ("261204-001", "261204-002"):
        order = await make_order(db, "paid", channel="pinduoduo", external_id=sn)
        await walk(db, order.order_no, "delivered")
        nos.append(order.order_no)
    # pdd.refund.list.increment.get items (field names and yuan strings as in the platform's
    # response example, tests/aftersales/fixtures/SOURCES.md)
    items = [
        {"id": 7001, "order_sn": "261204-001", "after_sales_type": 2, "refund_amount": "10.00"},
        {
            "id": 7002,
            "order_sn": "261204-002",
            "after_sales_type": 3,
            "refund_amount": "119.80",
            "outer_id": "TEA-LJ-250",
            "goods_number": 2,
        },
        {"id": 7001, "order_sn": "261204-001", "after_sales_type": 2, "refund_amount": "10.00"},
        {"id": 7003, "order_sn": "NOT-OURS", "after_sales_type": 2, "refund_amount": "1.00"},
    ]
    records = [platforms.from_pinduoduo(i) for i in items]
    # When the batch is ingested, then ingested again
    async with db.transaction() as session:
        first = await platforms.ingest(session, records, "pdd-sync")
    async with db.transaction() as session:
        again = await platforms.ingest(session, records, "pdd-sync")
    # Then two cases were opened once, the duplicate and the unknown order counted
    assert (first.created, first.duplicates, first.unknown_order) == (2, 1, 1)
    assert (again.created, again.duplicates, again.unknown_order) == (0, 3, 1)
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase).order_by(AftersaleCase.id))).all()
    assert [(c.platform_refund_id, c.type, c.status) for c in cases] == [
        ("7001", "refund_only", "refunded"),
        ("7002", "return_refund", "awaiting_return"),
    ]
    assert [await order_status(db, n) for n in nos] == ["partially_refunded", "partially_refunded"]


async def test_a_refund_pulled_before_its_order_is_applied_once_the_order_is_here(
    db: Database,
) -> None:
    # Given two Pinduoduo refund records received before their orders: one today, one
    # received 8 days ago (past the job's window)
    item = {"id": 7101, "order_sn": "261204-101", "after_sales_type": 2, "refund_amount": "5.00"}
    old = {"id": 7102, "order_sn": "261204-102", "after_sales_type": 2, "refund_amount": "5.00"}
    with clock.frozen(clock.now() - timedelta(days=8)):
        async with db.transaction() as session:
            first = await platforms.receive_pinduoduo(session, [old], "pdd-sync")
    async with db.transaction() as session:
        second = await platforms.receive_pinduoduo(session, [item], "pdd-sync")
    assert (first.unknown_order, second.unknown_order) == (1, 1)
    # When the retry job runs before the orders exist
    async with db.transaction() as session:
        early = await jobs.aftersales_record_retry(session, clock.now())
    # Then nothing changes
    assert early == {"created": 0, "still_unknown": 1}
    # When both orders arrive and the job runs again
    for sn in ("261204-101", "261204-102"):
        await make_order(db, "paid", channel="pinduoduo", external_id=sn)
    async with db.transaction() as session:
        later = await jobs.aftersales_record_retry(session, clock.now())
        again = await jobs.aftersales_record_retry(session, clock.now())
    # Then the recent record became its case, once; the old one waits for an operator
    assert later == {"created": 1, "still_unknown": 0}
    assert again == {"created": 0, "still_unknown": 0}
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(AftersalePlatformRecord).order_by(AftersalePlatformRecord.id)
            )
        ).all()
        cases = (await session.scalars(select(AftersaleCase))).all()
    assert [(r.platform_refund_id, r.status) for r in rows] == [
        ("7102", "unknown_order"),
        ("7101", "applied"),
    ]
    assert [(c.platform_refund_id, c.refund_minor) for c in cases] == [("7101", 500)]
