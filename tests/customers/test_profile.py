"""The 90-day profile: figures after payments and refunds, ageing out of the windows, the two
built-in risk flags, and replays that change nothing."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.customers import consumers
from ordertally.customers.models import CustomerOrder
from ordertally.events.models import OutboxEvent
from ordertally.events.registry import CONSUMERS, Envelope
from ordertally.exceptions.models import ExceptionCase
from ordertally.jobs.scheduler import JOBS, run_tick
from ordertally.orders.state_machine import ActorKind
from tests.customers.helpers import (
    customer_of,
    ingested,
    order,
    profile,
    run,
    snapshot,
    transition,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
PHONE = "13812345678"
# The factory's default lines: 2 x 59.90 + 1 x 39.90 = 159.70 CNY.
TOTAL = 15970


def lines(sku: str, price: str = "100.00") -> list[dict[str, object]]:
    return [{"sku": sku, "quantity": 1, "unit_price": price}]


async def _risk_cases(db: Database) -> list[tuple[int | None, str, bool]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(ExceptionCase).where(ExceptionCase.category == "risk").order_by(ExceptionCase.id)
        )
        return [(c.order_id, c.type, c.blocking) for c in rows]


async def test_figures_after_payments_and_a_refund(db: Database) -> None:
    with clock.frozen(T0):
        # Given three paid orders on two channels and one unpaid order of the same buyer
        a = await order(db, PHONE, channel="wechat_mini")
        b = await order(db, PHONE, channel="taobao", external_id="TB-1")
        c = await order(db, PHONE, channel="taobao", external_id="TB-2", lines=lines("A", "30.00"))
        await order(db, PHONE, status="pending_payment", channel="wechat_mini")
        await ingested(db, b, "taobao", "", ["茶叶", "茶具"])
        await ingested(db, c, "taobao", "", ["茶叶"])
        await run(db)
        cid = await customer_of(db, a.order_no)
        p = await profile(db, cid)
        assert (p.orders_90d, p.spend_90d_minor, p.returns_30d) == (3, 2 * TOTAL + 3000, 0)
        assert p.aov_90d_minor == (2 * TOTAL + 3000 + 1) // 3  # 11646.67 rounded -> 11647
        assert p.aov_90d_minor == 11647
        assert (p.channels, p.favourite_categories) == (["taobao", "wechat_mini"], ["茶叶", "茶具"])
        # When one order is refunded
        await transition(db, b.order_no, "refund", ActorKind.PAYMENT_CALLBACK)
        await run(db)
        # Then it still counts as an order, no longer as spend, and as a return
        p = await profile(db, cid)
        assert (p.orders_90d, p.spend_90d_minor, p.aov_90d_minor, p.returns_30d) == (
            3,
            TOTAL + 3000,
            (TOTAL + 3000) // 2,
            1,
        )
        assert p.favourite_categories == ["茶叶"]


async def test_orders_and_returns_age_out_of_their_windows(db: Database) -> None:
    # Given a paid order and a refunded one, placed at T0
    with clock.frozen(T0):
        kept = await order(db, PHONE)
        refunded = await order(db, PHONE, status="refunded", lines=lines("A"))
        await run(db)
        cid = await customer_of(db, kept.order_no)
        p = await profile(db, cid)
        assert (p.orders_90d, p.spend_90d_minor, p.returns_30d) == (2, TOTAL, 1)
        assert clock.as_utc(p.next_ageing_at) == T0 + timedelta(days=30)  # type: ignore[arg-type]
        assert refunded.order_no
        job = JOBS["customers_age_profiles"]
        # When 29 days pass, the ageing job has nothing to do
        clock.advance(timedelta(days=29))
        assert await run_tick(db, job, "w1") == {"recomputed": 0}
        # When 31 days have passed, the return ages out
        clock.advance(timedelta(days=2))
        assert await run_tick(db, job, "w1") == {"recomputed": 1}
        p = await profile(db, cid)
        assert (p.orders_90d, p.spend_90d_minor, p.returns_30d) == (2, TOTAL, 0)
        # When 91 days have passed, the orders age out too
        clock.advance(timedelta(days=60))
        assert await run_tick(db, job, "w1") == {"recomputed": 1}
        p = await profile(db, cid)
        assert (p.orders_90d, p.spend_90d_minor, p.aov_90d_minor, p.returns_30d) == (0, 0, 0, 0)
        assert p.channels == [] and p.next_ageing_at is None
        assert clock.as_utc(p.last_order_at) == T0  # type: ignore[arg-type]
        # and nothing is due any more
        clock.advance(timedelta(hours=1))
        assert await run_tick(db, job, "w1") == {"recomputed": 0}


async def test_a_discount_over_80_percent_is_flagged_once_without_holding(db: Database) -> None:
    with clock.frozen(T0):
        # Given an order at exactly 80% off and one at 80.01% off
        at_limit = await order(db, PHONE, lines=lines("A"), discount="80.00")
        over = await order(db, PHONE, lines=lines("CUP-CER-01"), discount="80.01")
        # When the events are delivered
        await run(db)
        # Then only the second is flagged, on the profile and as a non-blocking risk case
        p = await profile(db, await customer_of(db, over.order_no))
        assert p.risk_flags == ["discount_over_limit"]
        assert await _risk_cases(db) == [(over.id, "customer.discount_over_limit", False)]
        assert at_limit.id != over.id


async def test_the_flag_holds_the_order_when_the_setting_says_so(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.core.settings import reset_settings

    monkeypatch.setenv("ORDERTALLY_CUSTOMERS_FLAGS_BLOCKING", "true")
    reset_settings()
    with clock.frozen(T0):
        over = await order(db, PHONE, lines=lines("A"), discount="99.00")
        await run(db)
    assert await _risk_cases(db) == [(over.id, "customer.discount_over_limit", True)]


async def test_more_than_three_orders_of_one_sku_in_five_minutes_are_flagged(
    db: Database,
) -> None:
    with clock.frozen(T0):
        # Given three orders of SKU A within five minutes, and one of another SKU
        placed = []
        for _ in range(3):
            placed.append(await order(db, PHONE, lines=lines("A")))
            clock.advance(timedelta(seconds=90))
        await order(db, PHONE, lines=lines("CUP-CER-01"))
        await run(db)
        # Then nothing is flagged yet
        assert await _risk_cases(db) == []
        # When a fourth order of A arrives 4m30s after the first
        fourth = await order(db, PHONE, lines=lines("A"))
        await run(db)
        # Then that order is flagged
        assert await _risk_cases(db) == [(fourth.id, "customer.same_sku_burst", False)]
        p = await profile(db, await customer_of(db, fourth.order_no))
        assert p.risk_flags == ["same_sku_burst"]
        # When a fifth order of A comes after the first left the window (4 in 5 minutes again)
        clock.advance(timedelta(seconds=60))
        fifth = await order(db, PHONE, lines=lines("A"))
        await run(db)
        assert [case[0] for case in await _risk_cases(db)] == [fourth.id, fifth.id]
    # And another buyer's orders of A never count towards this buyer's burst
    with clock.frozen(T0 + timedelta(days=1)):
        for _ in range(3):
            await order(db, PHONE, lines=lines("A"))
        await order(db, "13900001111", lines=lines("A"))
        await run(db)
        assert len(await _risk_cases(db)) == 2


def _by_kind(snap: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """A snapshot with each customer order's status replaced by its kind (bought, ...)."""
    at = list(CustomerOrder.__table__.columns.keys()).index("status")
    rows = [(*r[:at], consumers._kind(r[at]), *r[at + 1 :]) for r in snap["customer_order"]]
    return {**snap, "customer_order": rows}


async def test_replaying_every_event_changes_nothing(db: Database) -> None:
    with clock.frozen(T0):
        # Given orders, a refund, a merge and a flag, all delivered
        a = await order(db, PHONE, channel="taobao", external_id="TB-1", discount="150.00")
        await ingested(db, a, "taobao", "B1", ["茶叶"])
        b = await order(db, "13900001111", channel="wechat_mini")
        bridge = await order(db, "13900001111", channel="taobao", external_id="TB-2")
        await ingested(db, bridge, "taobao", "B1", ["茶具"])
        await transition(db, b.order_no, "refund", ActorKind.PAYMENT_CALLBACK)
        await run(db)
        before = await snapshot(db)
        assert len(before["customer_flag"]) == 1 and len(before["customer_order"]) == 3
        # When every event is handed to the customers consumers again, in order
        async with db.transaction(write=False) as session:
            events = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
        for event in events:
            envelope = Envelope(
                id=event.event_id,
                type=event.event_type,
                version=event.event_version,
                occurred_at=event.occurred_at,
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                payload=event.payload,
            )
            for name in ("customers.link_order", "customers.link_channel_buyer"):
                if event.event_type in CONSUMERS[name].event_types:
                    async with db.transaction() as session:
                        await CONSUMERS[name].handler(session, envelope)
        # Then no row changed, but for a status within "bought" (paid -> allocated): the
        # consumers do not follow those moves (STATUS_EVENTS), so a replay may refresh it
        assert _by_kind(await snapshot(db)) == _by_kind(before)
    assert consumers.STATUS_EVENTS
