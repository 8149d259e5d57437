"""Issue 14 (High): a hand-written trade bill must not mark an unpaid order paid. A statement
row pays an order only on the platform's own signed query answer; anything else becomes a
manual-payment request by the uploader. Against the payment simulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.payments.models import ManualPayment, PaymentNotification
from tests.conftest import LiveServer
from tests.factories import auth
from tests.payments import test_compensation
from tests.payments.test_compensation import _open_payments, _sim_idle
from tests.payments.test_reconcile import wechat_bill, wechat_row

pytestmark = pytest.mark.anyio

# The payments suite's simulator fixtures (the payment simulator over real HTTP, ordertally
# configured with its keys), used here by name.
simulator = test_compensation.simulator
wired = test_compensation.wired


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    reset_settings()
    yield
    reset_settings()


async def _order(db: Database, order_no: str) -> tuple[str, list[tuple[str, str, str]]]:
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))
        assert order is not None
        events = (
            await session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
            )
        ).all()
    return order.status, [(e.event, e.actor_kind, e.actor_id) for e in events[1:]]


async def _manuals(db: Database) -> list[tuple[str, str, str, str]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(ManualPayment).order_by(ManualPayment.id))).all()
    return [(m.order_no, m.state, m.requested_by, m.reference) for m in rows]


async def _upload(client: httpx.AsyncClient, server: LiveServer, key: str, bill: str) -> Any:
    response = await client.post(
        f"{server.url}/api/v1/payments/reconciliations",
        params={"provider": "wechatpay"},
        content=bill.encode("utf-8"),
        headers=auth(key, **{"Content-Type": "text/csv"}),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_forged_bill_opens_a_manual_request_and_pays_nothing(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    _, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        # Given an open WeChat Pay attempt the buyer never paid (the platform says NOTPAY)
        [_, attempt] = await _open_payments(client, server, keys["cs"], 2)
        assert attempt["provider"] == "wechatpay"
        # When finance uploads a hand-written bill whose row says SUCCESS for it
        forged = wechat_bill(
            [wechat_row(attempt["out_trade_no"], "4200FORGED", "SUCCESS", "159.70")]
        )
        report = await _upload(client, server, keys["finance"], forged)
    # Then the order stays unpaid, with no payment_succeeded audit row
    assert await _order(db, attempt["order_no"]) == ("pending_payment", [])
    # And a manual-payment request names the uploader, for a second person to decide
    assert await _manuals(db) == [
        (attempt["order_no"], "pending_approval", "finance-tester", "statement:4200FORGED")
    ]
    [row] = report["discrepancies"]
    assert (row["category"], row["applied"][:17]) == ("platform_only", "manual_requested:")
    # And nothing was stored in the payment inbox on the bill's word
    async with db.transaction(write=False) as session:
        sources = (await session.scalars(select(PaymentNotification.source))).all()
    assert "statement" not in sources


async def test_a_genuine_row_pays_the_order_on_the_platforms_query(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    base, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        # Given a WeChat Pay attempt the buyer paid while its notification was lost
        [_, attempt] = await _open_payments(client, server, keys["cs"], 2)
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        await client.post(
            f"{base}/sim/pay",
            json={"provider": "wechatpay", "out_trade_no": attempt["out_trade_no"]},
        )
        await _sim_idle(client, base)
        # When finance uploads the platform's bill
        bill = (await client.get(f"{base}/sim/bills/wechatpay")).content.decode("utf-8-sig")
        report = await _upload(client, server, keys["finance"], bill)
    # Then the order is paid with the platform's signed query answer as evidence
    [row] = report["discrepancies"]
    assert (row["category"], row["applied"]) == ("platform_only", "paid")
    assert await _order(db, attempt["order_no"]) == (
        "paid",
        [("payment_succeeded", "compensation_query", "wechatpay:query")],
    )
    assert await _manuals(db) == []
