"""Manual recovery (补单): finance vouches with evidence, a second finance user approves, and
both people and the evidence are in the audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from ordertally.auth import service as auth_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.payments.models import ManualPayment
from tests.factories import auth, make_order
from tests.payments.helpers import count, order_state, trail

pytestmark = pytest.mark.anyio


@pytest.fixture
async def second_finance(db: Database) -> str:
    async with db.transaction() as session:
        _, raw = await auth_service.create_api_key(session, "finance-second", "finance")
    return raw


def _evidence(**overrides: Any) -> dict[str, Any]:
    body = {
        "reference": "ICBC-20261122-0001",
        "amount": "159.70",
        "paid_at": (clock.now() - timedelta(hours=2)).isoformat(),
        "reason": "buyer paid by bank transfer; screenshot in ticket 4411",
    }
    body.update(overrides)
    return body


async def test_two_finance_users_mark_an_order_paid_on_evidence(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], second_finance: str
) -> None:
    # Given a pending order of 159.70 CNY
    order = await make_order(db)
    assert order.total_minor == 15970
    # When a finance user records the evidence
    response = await client.post(
        f"/api/v1/orders/{order.order_no}/manual-payment",
        json=_evidence(),
        headers=auth(keys["finance"]),
    )
    assert response.status_code == 201, response.text
    request = response.json()
    assert (request["state"], request["requested_by"], request["amount"]) == (
        "pending_approval",
        "finance-tester",
        "159.70",
    )
    # Then nothing changed on the order yet
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    # When the same person tries to approve it: refused
    same = await client.post(
        f"/api/v1/manual-payments/{request['id']}/approve", headers=auth(keys["finance"])
    )
    assert (same.status_code, same.json()["code"]) == (403, "payment.same_approver")
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    # When a second finance user approves it
    approved = await client.post(
        f"/api/v1/manual-payments/{request['id']}/approve", headers=auth(second_finance)
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["state"], approved.json()["decided_by"]) == (
        "approved",
        "finance-second",
    )
    # Then the order is paid by finance with the evidence, and the trail names both people
    assert await order_state(db, order.order_no) == ("paid", 2)
    events = (
        await client.get(f"/api/v1/orders/{order.order_no}/events", headers=auth(keys["finance"]))
    ).json()
    last = events[-1]
    assert (last["event"], last["actor_kind"], last["actor_id"], last["evidence_ref"]) == (
        "payment_succeeded",
        "finance",
        "finance-second",
        f"manual-payment:{request['id']}:ICBC-20261122-0001",
    )
    assert "requested by finance-tester" in last["note"]
    assert "approved by finance-second" in last["note"]
    # And a second approval is refused
    again = await client.post(
        f"/api/v1/manual-payments/{request['id']}/approve", headers=auth(keys["finance"])
    )
    assert (again.status_code, again.json()["code"]) == (409, "payment.manual_not_pending")


async def test_manual_payment_refusals_change_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], second_finance: str
) -> None:
    order = await make_order(db)
    url = f"/api/v1/orders/{order.order_no}/manual-payment"
    # Another role may not vouch for a payment
    for role in ("cs", "ops", "warehouse", "admin"):
        response = await client.post(url, json=_evidence(), headers=auth(keys[role]))
        assert response.status_code == 403, role
    # The amount must be the order total, to the fen
    wrong = await client.post(url, json=_evidence(amount="159.69"), headers=auth(keys["finance"]))
    assert (wrong.status_code, wrong.json()["code"]) == (422, "payment.manual_amount_mismatch")
    # Evidence needs a timezone, a reference and a reason
    naive = await client.post(
        url, json=_evidence(paid_at="2026-11-22T10:05:00"), headers=auth(keys["finance"])
    )
    assert naive.status_code == 422
    empty = await client.post(url, json=_evidence(reference=" "), headers=auth(keys["finance"]))
    assert empty.status_code == 422
    assert await count(db, ManualPayment) == 0
    # One pending request per order
    first = await client.post(url, json=_evidence(), headers=auth(keys["finance"]))
    dup = await client.post(url, json=_evidence(), headers=auth(second_finance))
    assert (first.status_code, dup.status_code) == (201, 409)
    # A second person may reject it; the order stays unpaid
    rejected = await client.post(
        f"/api/v1/manual-payments/{first.json()['id']}/reject",
        json={"note": "reference not found on the bank statement"},
        headers=auth(second_finance),
    )
    assert rejected.status_code == 200
    assert rejected.json()["state"] == "rejected"
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    assert await trail(db, order.id) == []
    # An order already paid cannot be vouched for
    paid = await make_order(db, "paid")
    late = await client.post(
        f"/api/v1/orders/{paid.order_no}/manual-payment",
        json=_evidence(),
        headers=auth(keys["finance"]),
    )
    assert (late.status_code, late.json()["code"]) == (409, "payment.order_not_payable")
