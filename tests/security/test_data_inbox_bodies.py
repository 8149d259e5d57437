"""Issue 14 (Medium): personal data is not kept in clear in the inboxes that store raw platform
bodies (channel webhooks, payment notifications): bodies are sealed with AES-GCM bound to their
table and row, opened where the apply step reads them, and emptied after the retention period
once applied (dedupe keys and metadata stay)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import select, text

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
from tests.factories import auth

pytestmark = pytest.mark.anyio

SECRET = "shpss_data_secret"
NAME, PHONE, ADDRESS = "欧阳娜娜", "13955501234", "解放西路188号"
INBOX_TABLES = ("channel_webhook", "payment_notification")


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
