"""Refunds after shipment through WeChat Pay (the payment simulator on a real port): sent
outside any transaction, confirmed exactly once by query or notification, never more than was
paid even when requested concurrently, never sent twice when the provider's answer is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from ordertally.aftersales import refunds
from ordertally.aftersales.errors import InvalidCase, RefundExceedsPaid
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from tests.aftersales.helpers import (
    approve,
    case_status,
    open_case,
    order_status,
    paid_order,
    provider_refunds,
    refund_rows,
    request_refund,
)
from tests.factories import auth

pytestmark = pytest.mark.anyio


async def _status(platform: httpx.AsyncClient) -> dict[str, int]:
    doc = (await platform.get("/sim/status")).json()
    return {"refund_requests": doc["refund_requests"], "refunds": doc["refunds"]}


async def test_partial_then_full_refund_after_shipment_moves_the_order_and_tallies(
    db: Database, platform: httpx.AsyncClient
) -> None:
    # Given a shipped order paid through WeChat Pay (total 159.70)
    order, _ = await paid_order(db, platform)
    assert order.total_minor == 15970
    # When cs refunds 39.90 of it (refund only, buyer kept the goods) and the job runs twice
    first = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="damaged", refund_goods="39.90"
    )
    assert await approve(db, first) == "approved"
    await request_refund(db, first)
    sent = await refunds.send_due(db, clock.now())
    confirmed = await refunds.send_due(db, clock.now())
    # Then the provider got one request, the query confirmed it, and everything moved once
    assert sent == {"claimed": 1, "sent": 1}
    assert confirmed == {"claimed": 1, "succeeded": 1}
    assert await _status(platform) == {"refund_requests": 1, "refunds": 1}
    rows = await refund_rows(db)
    assert [(r.state, r.amount_minor, r.attempts) for r in rows] == [("succeeded", 3990, 2)]
    assert await provider_refunds(db) == [(rows[0].out_refund_no, 3990)]
    assert await case_status(db, first) == "refunded"
    assert await order_status(db, order.order_no) == "partially_refunded"
    # When the rest is refunded on a second case
    second = await open_case(
        db,
        order_no=order.order_no,
        type="refund_only",
        reason_code="not_as_described",
        refund_goods="119.80",
    )
    await approve(db, second)
    await request_refund(db, second)
    await refunds.send_due(db, clock.now())
    await refunds.send_due(db, clock.now())
    # Then the order is refunded and nothing more can be refunded
    assert await order_status(db, order.order_no) == "refunded"
    assert sum(a for _, a in await provider_refunds(db)) == 15970
    with pytest.raises(InvalidCase):
        await open_case(
            db, order_no=order.order_no, type="refund_only", reason_code="x", refund_goods="0.01"
        )
    # And a further run of the job has nothing to do
    assert await refunds.send_due(db, clock.now()) == {"claimed": 0}


async def test_finance_sees_refunds_per_order_and_per_day_equal_to_the_records(
    db: Database, platform: httpx.AsyncClient, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given two orders, each partly refunded and confirmed
    amounts = {}
    for goods in ("10.00", "25.50"):
        order, _ = await paid_order(db, platform)
        case_no = await open_case(
            db, order_no=order.order_no, type="refund_only", reason_code="late", refund_goods=goods
        )
        await approve(db, case_no)
        await request_refund(db, case_no)
        amounts[order.order_no] = goods
    await refunds.send_due(db, clock.now())
    await refunds.send_due(db, clock.now())
    # When finance asks per order and for today
    for order_no, goods in amounts.items():
        r = await client.get(
            f"/api/v1/aftersales/orders/{order_no}/money", headers=auth(keys["finance"])
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        # Then the ledger row and the refund records agree
        assert (doc["paid"], doc["committed"], doc["refunded"], doc["refund_records"]) == (
            "159.70",
            goods,
            goods,
            goods,
        )
    today = clock.now().date().isoformat()
    r = await client.get(
        f"/api/v1/aftersales/refunds/daily?start={today}&end={today}",
        headers=auth(keys["finance"]),
    )
    assert r.json() == {
        "items": [{"day": today, "currency": "CNY", "refunds": 2, "amount": "35.50"}]
    }


async def test_concurrent_refund_requests_never_refund_more_than_paid(
    db: Database, platform: httpx.AsyncClient
) -> None:
    # Given a shipped order of 159.70 and six approved cases of 40.00 each (240.00 in all)
    order, _ = await paid_order(db, platform)
    cases = []
    for i in range(6):
        case_no = await open_case(
            db,
            order_no=order.order_no,
            type="refund_only",
            reason_code=f"r{i}",
            refund_goods="40.00",
        )
        await approve(db, case_no)
        cases.append(case_no)

    async def attempt(case_no: str) -> str:
        try:
            await request_refund(db, case_no)
            return "ok"
        except RefundExceedsPaid:
            return "refused"

    # When all six are requested at once (separate connections)
    outcomes = await asyncio.gather(*(attempt(c) for c in cases))
    # Then exactly three fit (120.00 ≤ 159.70 < 160.00) and the rest are refused
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 3
    await refunds.send_due(db, clock.now())
    await refunds.send_due(db, clock.now())
    assert sum(a for _, a in await provider_refunds(db)) == 12000
    assert await _status(platform) == {"refund_requests": 3, "refunds": 3}
    assert await order_status(db, order.order_no) == "partially_refunded"


async def test_a_refund_whose_answer_is_lost_is_confirmed_by_query_and_never_sent_twice(
    db: Database, platform: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a provider that makes the refund but answers after our 1 s timeout
    monkeypatch.setenv("ORDERTALLY_PAYMENT_HTTP_TIMEOUT_SECONDS", "1")
    reset_settings()
    await platform.post("/sim/behaviour", json={"refund_answer_delay_seconds": 2.5})
    order, _ = await paid_order(db, platform)
    case_no = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="lost", refund_goods="59.90"
    )
    await approve(db, case_no)
    await request_refund(db, case_no)
    # When the job sends it (and times out), then runs again once the retry is due
    first = await refunds.send_due(db, clock.now())
    assert first == {"claimed": 1, "error": 1}
    assert [(r.state, r.attempts) for r in await refund_rows(db)] == [("pending", 1)]
    clock.advance(refunds.RETRY_AFTER + timedelta(seconds=1))
    second = await refunds.send_due(db, clock.now())
    # Then the second run asked instead of sending: one request, one refund, confirmed once
    assert second == {"claimed": 1, "succeeded": 1}
    assert await _status(platform) == {"refund_requests": 1, "refunds": 1}
    assert [(r.state, r.amount_minor) for r in await refund_rows(db)] == [("succeeded", 5990)]
    assert len(await provider_refunds(db)) == 1
    assert await case_status(db, case_no) == "refunded"
    assert await order_status(db, order.order_no) == "partially_refunded"
