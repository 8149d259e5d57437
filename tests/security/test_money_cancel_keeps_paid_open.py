"""Issue 14 (Low): a person's cancel follows the timeout's "keep open if paid" rule: an order
whose payment attempt already received money (state `mismatch`, or paid) is refused with a
409 problem and nothing changes; an order with no money in sight still cancels."""

from __future__ import annotations

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.orders.models import OrderEvent
from tests.conftest import LiveServer
from tests.factories import auth, make_order
from tests.payments import test_compensation
from tests.payments.helpers import (
    make_attempt,
    order_state,
    paid_notice,
    payment_row,
    store_and_apply,
)
from tests.payments.test_compensation import _open_payments

pytestmark = pytest.mark.anyio

# The payments suite's simulator fixtures (the payment simulator over real HTTP, ordertally
# configured with its keys), used here by name.
simulator = test_compensation.simulator
wired = test_compensation.wired


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_cs_cannot_cancel_an_order_whose_attempt_received_money(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an unpaid order whose attempt received money in a wrong amount (state mismatch)
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    _, outcome = await store_and_apply(db, paid_notice(attempt, amount_minor=1))
    assert outcome == "amount_mismatch"
    assert (await payment_row(db, attempt.id)).state == "mismatch"
    before = (await _count(db, OrderEvent), await _count(db, OutboxEvent))
    # When customer service cancels it
    response = await client.post(
        f"/api/v1/orders/{order.order_no}/cancel",
        json={"reason": "buyer asked"},
        headers=auth(keys["cs"]),
    )
    # Then it is refused with a stable code and nothing changed
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "order.payment_received"
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    assert (await _count(db, OrderEvent), await _count(db, OutboxEvent)) == before
    assert (await payment_row(db, attempt.id)).state == "mismatch"


async def test_cs_cancels_an_order_with_no_payment_attempt(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    order = await make_order(db)
    response = await client.post(
        f"/api/v1/orders/{order.order_no}/cancel", headers=auth(keys["cs"])
    )
    assert response.status_code == 200, response.text
    assert await order_state(db, order.order_no) == ("closed", 2)


async def test_cancel_asks_the_provider_first_outside_any_transaction(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    base, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        # Given two open attempts: the buyer paid one (its notification was lost), not the other
        unpaid, paid = await _open_payments(http, server, keys["cs"], 2)
        await http.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        await http.post(
            f"{base}/sim/pay",
            json={"provider": paid["provider"], "out_trade_no": paid["out_trade_no"]},
        )
        # When customer service cancels both
        refused = await http.post(
            f"{server.url}/api/v1/orders/{paid['order_no']}/cancel", headers=auth(keys["cs"])
        )
        cancelled = await http.post(
            f"{server.url}/api/v1/orders/{unpaid['order_no']}/cancel", headers=auth(keys["cs"])
        )
    # Then the paid one is refused and now paid on the provider's answer; the other is closed
    assert (refused.status_code, refused.json()["code"]) == (409, "order.payment_received")
    assert (await order_state(db, paid["order_no"]))[0] == "paid"
    assert cancelled.status_code == 200, cancelled.text
    assert (await order_state(db, unpaid["order_no"]))[0] == "closed"
