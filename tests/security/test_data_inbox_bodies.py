"""Issue 14 (Medium): personal data is not kept in clear in the inboxes that store raw platform
bodies (channel webhooks, payment notifications, after-sales platform records): bodies are
sealed with AES-GCM bound to their table and row, opened where the apply step reads them, and
emptied after the retention period once applied (dedupe keys and metadata stay)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import select, text

from ordertally.aftersales import platforms
from ordertally.aftersales.models import AftersaleCase, AftersalePlatformRecord
from ordertally.channels import callbacks
from ordertally.channels.adapters import shopify
from ordertally.channels.models import ChannelWebhook
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.orders.models import SalesOrder
from ordertally.payments import inbox
from ordertally.payments.models import PaymentNotification
from ordertally.payments.providers import Notice
from tests.aftersales.helpers import walk
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio

SECRET = "shpss_data_secret"
NAME, PHONE, ADDRESS = "欧阳娜娜", "13955501234", "解放西路188号"
INBOX_TABLES = ("channel_webhook", "payment_notification", "aftersale_platform_record")


def _shopify_order(order_id: int) -> dict[str, Any]:
    now = clock.now().isoformat()
    return {
        "id": order_id,
        "name": "#1001",
        "email": "buyer@example.com",
        "created_at": now,
        "updated_at": now,
        "processed_at": now,
        "currency": "CNY",
        "financial_status": "paid",
        "fulfillment_status": None,
        "cancelled_at": None,
        "total_discounts": "0.00",
        "total_price": "59.90",
        "line_items": [
            {"id": 1, "sku": "TEA-LJ-250", "title": "西湖龙井", "quantity": 1, "price": "59.90"}
        ],
        "shipping_lines": [],
        "shipping_address": {
            "first_name": "娜娜",
            "last_name": "欧阳",
            "name": NAME,
            "phone": f"+86{PHONE}",
            "address1": ADDRESS,
            "address2": "",
            "city": "长沙市",
            "province": "湖南省",
            "zip": "410000",
            "country_code": "CN",
        },
        "customer": {"id": 207119551, "first_name": "娜娜", "last_name": "欧阳"},
    }


async def _raw_dump(db: Database) -> str:
    """Every column of every row of every inbox table, as the database returns it."""
    dump = []
    async with db.transaction(write=False) as session:
        for table in INBOX_TABLES:
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            dump.extend(repr(tuple(row)) for row in rows)
    return "\n".join(dump)


async def _webhook(client: AsyncClient, keys: dict[str, str], webhook_id: str) -> None:
    created = await client.post(
        "/api/v1/channels/accounts",
        json={
            "code": "shop_pii",
            "platform": "shopify",
            "name": "Shopify 店",
            "credentials": {"webhook_secret": SECRET},
        },
        headers=auth(keys["admin"]),
    )
    assert created.status_code == 201, created.text
    body = orjson.dumps(_shopify_order(820982911946154999))
    response = await client.post(
        "/callbacks/channels/shopify/shop_pii",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": webhook_id,
        },
    )
    assert (response.status_code, response.json()) == (200, {"status": "accepted"})


def _alipay_notice(dedupe_key: str) -> Notice:
    body = f"buyer_logon_id={PHONE}&receiver_name={NAME}&receiver_address={ADDRESS}"
    return Notice(
        provider="alipay",
        dedupe_key=dedupe_key,
        event_type="TRADE_SUCCESS",
        kind="payment",
        out_trade_no="OT-NOBODY-1",
        provider_txn_id="2026112222001",
        trade_state="TRADE_SUCCESS",
        facts={"status": "paid", "amount_minor": 100, "currency": "CNY", "paid_at": None},
        headers={},
        body=body,
    )


async def test_no_inbox_keeps_personal_data_in_clear_after_apply(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a Shopify webhook and a payment notification carrying a name, phone and address
    await _webhook(client, keys, "wh-pii-1")
    async with db.transaction() as session:
        notification_id = await inbox.store_notice(
            session, _alipay_notice("pii-1"), source="callback", received_at=clock.now()
        )
    assert notification_id is not None
    # When the worker applies them
    await drain(db, get_settings())
    # Then the order exists (the apply step read the body)
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
        receipt = await session.scalar(select(ChannelWebhook))
        stored = await session.get(PaymentNotification, notification_id)
    assert order is not None and order.external_id == "820982911946154999"
    assert receipt is not None and receipt.status == "applied"
    # And no inbox table holds the name, phone or address in clear
    dump = await _raw_dump(db)
    assert "wh-pii-1" in dump and "pii-1" in dump  # the rows are there
    for value in (NAME, PHONE, ADDRESS):
        assert value not in dump
        assert orjson.dumps(value).decode().strip('"') not in dump  # nor JSON-escaped
    # And the bodies open with the key, bound to their rows
    assert stored is not None
    assert inbox.read_body(stored) == _alipay_notice("pii-1").body


async def test_bodies_are_emptied_after_the_retention_period_once_applied(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an applied webhook, a finished notification and one still pending
    await _webhook(client, keys, "wh-pii-2")
    async with db.transaction() as session:
        await inbox.store_notice(
            session, _alipay_notice("pii-2"), source="callback", received_at=clock.now()
        )
    await drain(db, get_settings())
    async with db.transaction() as session:
        await inbox.store_notice(
            session,
            _alipay_notice("pii-3"),
            source="callback",
            received_at=clock.now(),
            publish=False,
        )
    days = get_settings().inbox_retention_days
    # When the purge runs a day before the period ends, nothing is emptied
    async with db.transaction() as session:
        early = clock.now() + timedelta(days=days - 1)
        assert await callbacks.purge_bodies(session, early) == 0
        assert await inbox.purge_bodies(session, early) == 0
    # When it runs after the period
    async with db.transaction() as session:
        late = clock.now() + timedelta(days=days, hours=1)
        assert await callbacks.purge_bodies(session, late) == 1
        assert await inbox.purge_bodies(session, late) == 1
    # Then the finished bodies are empty, their dedupe keys and outcomes kept
    async with db.transaction(write=False) as session:
        hooks = (
            await session.execute(select(ChannelWebhook.webhook_id, ChannelWebhook.body))
        ).all()
        notes = (
            await session.execute(
                select(PaymentNotification.dedupe_key, PaymentNotification.outcome)
                .where(PaymentNotification.body == "")
                .order_by(PaymentNotification.dedupe_key)
            )
        ).all()
        pending = await session.scalar(
            select(PaymentNotification).where(PaymentNotification.dedupe_key == "pii-3")
        )
    assert [tuple(h) for h in hooks] == [("wh-pii-2", "")]
    assert [n[0] for n in notes] == ["pii-2"] and notes[0][1] != "pending"
    # And the one not applied yet keeps its (sealed) body
    assert pending is not None and pending.outcome == "pending"
    assert inbox.read_body(pending) == _alipay_notice("pii-3").body


def test_a_sealed_body_opens_only_on_its_own_row() -> None:
    from cryptography.exceptions import InvalidTag

    from ordertally.core.crypto import body_context, open_body, seal_body

    sealed = seal_body(NAME, body_context("channel_webhook", "1", "wh-1"))
    assert sealed.startswith("aesgcm:") and NAME not in sealed
    assert open_body(sealed, body_context("channel_webhook", "1", "wh-1")) == NAME
    for elsewhere in (
        body_context("channel_webhook", "1", "wh-2"),
        body_context("payment_notification", "1", "wh-1"),
    ):
        with pytest.raises(InvalidTag):
            open_body(sealed, elsewhere)
    # A row written before bodies were sealed, and a purged one, read as they are
    assert open_body('{"id": 1}', "any") == '{"id": 1}'
    assert open_body("", "any") == ""


# pdd.refund.list.increment.get refund_list items: field names and meanings from the type
# definitions of an independent SDK, lywzx/pdd-node-sdk
# packages/pdd-origin-api/src/shouHou/PddRefundListIncrementGet.ts (tracking_number 快递运单号:
# the waybill the buyer sends the goods back under; after_sale_reason 售后原因). refund_amount is
# a string in yuan, as the platform's own page documents it (tests/aftersales/fixtures/SOURCES.md).
RETURN_WAYBILL = "YT7788990011223"
REASON = "尺码不合适，联系13955501234"


def _pdd_item(refund_id: int, order_sn: str) -> dict[str, Any]:
    return {
        "id": refund_id,
        "order_sn": order_sn,
        "after_sales_type": 3,
        "after_sales_status": 10,
        "after_sale_reason": REASON,
        "refund_amount": "59.90",
        "goods_name": "西湖龙井 250g",
        "goods_number": "1",
        "outer_id": "TEA-LJ-250",
        "tracking_number": RETURN_WAYBILL,
        "created_time": "2026-12-04 10:00:00",
        "updated_time": "2026-12-04 10:05:00",
    }


async def test_pinduoduo_refund_records_are_sealed_applied_once_and_purged(db: Database) -> None:
    # Given a delivered Pinduoduo order and its refund item, received twice
    order = await make_order(db, "paid", channel="pinduoduo", external_id="261205-777")
    await walk(db, order.order_no, "delivered")
    items = [_pdd_item(9001, "261205-777"), _pdd_item(9001, "261205-777")]
    items.append(_pdd_item(9002, "NOT-OURS"))
    # When the items are received
    async with db.transaction() as session:
        result = await platforms.receive_pinduoduo(session, items, "pdd-sync")
    # Then one case was opened from the stored item, the duplicate and the stranger counted
    assert (result.created, result.duplicates, result.unknown_order) == (1, 1, 1)
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase))).all()
        rows = (
            await session.scalars(
                select(AftersalePlatformRecord).order_by(AftersalePlatformRecord.id)
            )
        ).all()
    assert [(c.platform_refund_id, c.type) for c in cases] == [("9001", "return_refund")]
    assert [(r.platform_refund_id, r.status) for r in rows] == [
        ("9001", "applied"),
        ("9002", "unknown_order"),
    ]
    # And no inbox table holds the waybill, the buyer's words or the phone in them in clear
    dump = await _raw_dump(db)
    assert "9001" in dump and "9002" in dump  # the rows are there
    for value in (RETURN_WAYBILL, REASON, PHONE, "西湖龙井 250g"):
        assert value not in dump
        assert orjson.dumps(value).decode().strip('"') not in dump
    # And each body opens only on its own row
    from ordertally.core.crypto import body_context, open_body

    context = body_context("aftersale_platform_record", "pinduoduo", "9001")
    assert orjson.loads(open_body(rows[0].body, context)) == items[0]
    # When the purge runs before, then after the retention period
    days = get_settings().inbox_retention_days
    async with db.transaction() as session:
        early = await platforms.purge_record_bodies(session, clock.now() + timedelta(days=days - 1))
        late = await platforms.purge_record_bodies(
            session, clock.now() + timedelta(days=days, hours=1)
        )
    # Then only the applied record's body is emptied; the unmatched one waits, still sealed
    assert (early, late) == (0, 1)
    async with db.transaction(write=False) as session:
        after = (
            await session.execute(
                select(
                    AftersalePlatformRecord.platform_refund_id, AftersalePlatformRecord.body
                ).order_by(AftersalePlatformRecord.id)
            )
        ).all()
    assert after[0] == ("9001", "")
    assert after[1][1].startswith("aesgcm:")
    # And receiving the item again after the purge still changes nothing
    async with db.transaction() as session:
        again = await platforms.receive_pinduoduo(session, items[:1], "pdd-sync")
    assert (again.created, again.duplicates) == (0, 1)
