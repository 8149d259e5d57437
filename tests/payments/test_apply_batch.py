"""The worker's batch path: a whole batch of notifications applied in a few statements, with
exactly the outcomes the one-by-one path gives, including every unusual case mixed in."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import event, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events import dispatcher
from ordertally.inventory.models import Reservation
from ordertally.orders.models import OrderEvent
from ordertally.payments import (
    consumers,  # noqa: F401  (registers the apply consumer)
    inbox,
)
from ordertally.payments.models import PaymentNotification
from ordertally.payments.providers import Notice
from tests.factories import make_order
from tests.payments.helpers import count, make_attempt, order_state, paid_notice, payment_row

pytestmark = pytest.mark.anyio


async def _store(db: Database, notices: list[Notice]) -> list[int]:
    ids: list[int] = []
    for notice in notices:
        async with db.transaction() as session:
            stored = await inbox.store_notice(
                session, notice, source="callback", received_at=clock.now(), publish=True
            )
        assert stored is not None
        ids.append(stored)
    return ids


async def test_a_mixed_batch_has_the_outcomes_of_one_by_one_in_few_statements(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 12 pending orders with an attempt each, one closed order, one order with two
    # attempts, and their notifications stored (the outbox announces each)
    plain = [await make_order(db) for _ in range(12)]
    attempts = [await make_attempt(db, order) for order in plain]
    closed = await make_order(db, "closed")
    closed_attempt = await make_attempt(db, closed)
    twice = await make_order(db)
    first, second = await make_attempt(db, twice), await make_attempt(db, twice, "alipay")
    await dispatcher.drain(db, get_settings())  # the orders' own events
    notices = [paid_notice(a, txn=f"42{i:08d}") for i, a in enumerate(attempts[:10])]
    notices += [
        paid_notice(attempts[0], txn="4200000000"),  # same payment, another notification id
        paid_notice(attempts[10], amount_minor=attempts[10].amount_minor - 1),  # one fen short
        paid_notice(closed_attempt),  # paid after the order closed
        paid_notice(attempts[11], out_trade_no="NOT-OURS-9"),  # not our trade
        paid_notice(first, txn="4200000101"),
        paid_notice(second, txn="2026000102"),  # a second attempt paid the same order
    ]
    ids = await _store(db, notices)
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_a: object) -> None:
        statements.append(statement)

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    caplog.set_level(logging.INFO, logger="ordertally.events.dispatcher")
    # When one worker batch takes them all
    try:
        batch = await dispatcher.dispatch_batch(db, get_settings())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # Then it ran without falling back to savepoints, in far fewer statements than one per
    # notification would need (one-by-one costs ~13 each)
    assert batch.claimed == len(ids) and batch.done == len(ids)
    assert "savepoints" not in caplog.text
    assert len(statements) < 6 * len(ids)
    async with db.transaction(write=False) as session:
        outcome = dict(
            (
                await session.execute(
                    select(PaymentNotification.id, PaymentNotification.outcome).where(
                        PaymentNotification.id.in_(ids)
                    )
                )
            ).all()
        )
        committed = await session.scalar(
            select(Reservation.state).where(Reservation.order_id == plain[0].id)
        )
    assert [outcome[i] for i in ids] == ["paid"] * 10 + [
        "duplicate",
        "amount_mismatch",
        "paid_after_close",
        "unknown_trade",
        "paid",
        "double_payment",
    ]
    for order in plain[:10]:
        assert await order_state(db, order.order_no) == ("paid", 2)
        assert await count(db, OrderEvent, OrderEvent.order_id == order.id) == 2
    assert committed == "committed"
    assert await order_state(db, plain[10].order_no) == ("pending_payment", 1)
    assert await order_state(db, closed.order_no) == ("closed", 2)
    assert await order_state(db, twice.order_no) == ("paid", 2)
    assert (await payment_row(db, attempts[0].id)).provider_txn_id == "4200000000"
    assert (await payment_row(db, attempts[0].id)).settles_order is True
    assert (await payment_row(db, first.id)).settles_order is True
    assert (await payment_row(db, second.id)).settles_order is False
    # And a second pass finds nothing left and changes nothing
    # (11 OrderPaid, and the ExceptionCaseOpened of the amount mismatch, the payment after the
    # close and the double payment: ADR 0043)
    assert (await dispatcher.dispatch_batch(db, get_settings())).claimed == 14
    assert await count(db, OrderEvent, OrderEvent.event == "payment_succeeded") == 11
