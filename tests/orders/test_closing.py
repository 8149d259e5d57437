"""Closing unpaid orders: the pre-close checks get the claimed orders with no transaction open
(they may write in transactions of their own), the orders they keep stay open, and an order
paid while the checks ran is not closed (the close is a compare-and-set from pending_payment)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders import closing
from ordertally.orders import service as orders_service
from ordertally.orders.closing import DueOrder
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.state_machine import ActorKind
from tests.factories import make_order

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=1800)


async def _states(db: Database) -> dict[str, tuple[str, int]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(SalesOrder))).all()
    return {o.order_no: (o.status, o.version) for o in rows}


async def _cases(db: Database, type_: str) -> int:
    async with db.transaction(write=False) as session:
        return int(
            await session.scalar(select(func.count()).where(ExceptionCase.type == type_)) or 0
        )


async def _trail(db: Database, order_id: int) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(OrderEvent.event, OrderEvent.actor_kind)
                .where(OrderEvent.order_id == order_id)
                .order_by(OrderEvent.id)
            )
        ).all()
    return [(event, actor) for event, actor in rows]


async def test_checks_run_outside_any_transaction_and_keep_what_they_return(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two orders past their deadline, one within it, and a paid one
    with clock.frozen(T0):
        first = await make_order(db)
        clock.advance(timedelta(seconds=10))
        second = await make_order(db)
        clock.advance(timedelta(minutes=5))
        fresh = await make_order(db)
        paid = await make_order(db, "paid")
        clock.advance(TIMEOUT - timedelta(minutes=1))
        seen: list[list[DueOrder]] = []

        # And a check that writes in its own transaction (which would wait forever for a
        # writer held by the caller on SQLite) and keeps the second order open
        async def keep_second(db_: Database, orders: Sequence[DueOrder]) -> set[int]:
            seen.append(list(orders))

            async def write() -> None:
                async with db_.transaction() as session:
                    await exceptions_service.open_case(
                        session,
                        order_id=second.id,
                        category="test",
                        type="pre_close_seen",
                        blocking=False,
                        detail={"orders": [o.order_no for o in orders]},
                    )

            await asyncio.wait_for(write(), timeout=5)
            return {second.id}

        monkeypatch.setattr(closing, "PRE_CLOSE_CHECKS", [])
        closing.register_pre_close_check(keep_second)
        closing.register_pre_close_check(keep_second)  # registering twice runs it once
        # When the close runs
        closed = await closing.close_unpaid(db, clock.now())
    # Then the check saw exactly the overdue orders, oldest deadline first, once
    assert seen == [
        [
            DueOrder(first.id, first.order_no, T0 + TIMEOUT),
            DueOrder(second.id, second.order_no, T0 + timedelta(seconds=10) + TIMEOUT),
        ]
    ]
    # And only the order it did not keep was closed
    assert closed == 1
    assert await _states(db) == {
        first.order_no: ("closed", 2),
        second.order_no: ("pending_payment", 1),
        fresh.order_no: ("pending_payment", 1),
        paid.order_no: ("paid", 2),
    }
    # And the check's own write committed
    assert await _cases(db, "pre_close_seen") == 1


async def test_an_order_paid_while_the_checks_run_is_not_closed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two orders past their deadline
    with clock.frozen(T0):
        late_payer = await make_order(db)
        idler = await make_order(db)
        clock.advance(TIMEOUT + timedelta(seconds=1))

        # And a check during which the first buyer's payment is applied (as a callback would
        # be, in its own transaction), but which keeps nothing open
        async def payment_arrives(db_: Database, orders: Sequence[DueOrder]) -> set[int]:
            async with db_.transaction() as session:
                result = await orders_service.transition(
                    session,
                    late_payer.order_no,
                    "payment_succeeded",
                    orders_service.Actor(
                        ActorKind.PAYMENT_CALLBACK, "wechatpay:notify", evidence_ref="4200000009"
                    ),
                )
            assert result.applied
            return set()

        monkeypatch.setattr(closing, "PRE_CLOSE_CHECKS", [payment_arrives])
        # When the close runs
        closed = await closing.close_unpaid(db, clock.now())
    # Then the paid order stays paid; only the other is closed
    assert closed == 1
    assert await _states(db) == {
        late_payer.order_no: ("paid", 2),
        idler.order_no: ("closed", 2),
    }
    # And the paid order got no timeout audit row and no OrderClosed event
    assert await _trail(db, late_payer.id) == [
        ("create", "api"),
        ("payment_succeeded", "payment_callback"),
    ]
    assert await _trail(db, idler.id) == [("create", "api"), ("payment_timeout", "scheduler")]
    async with db.transaction(write=False) as session:
        closed_events = (
            await session.scalars(
                select(OutboxEvent.aggregate_id).where(OutboxEvent.event_type == "OrderClosed")
            )
        ).all()
    assert list(closed_events) == [idler.order_no]


async def test_no_due_order_calls_no_check(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an order within its deadline and a check that records its calls
    calls: list[Sequence[DueOrder]] = []

    async def record(db_: Database, orders: Sequence[DueOrder]) -> set[int]:
        calls.append(orders)
        return set()

    monkeypatch.setattr(closing, "PRE_CLOSE_CHECKS", [record])
    order = await make_order(db)
    # When the close runs
    closed = await closing.close_unpaid(db, clock.now())
    # Then nothing is asked and nothing is closed
    assert (closed, calls) == (0, [])
    assert await _states(db) == {order.order_no: ("pending_payment", 1)}
