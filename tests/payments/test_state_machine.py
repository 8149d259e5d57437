"""The payment attempt's state table: its rows exactly, every state reachable from the opening
state, and every (state, transition) pair tried against the database: the compare-and-set moves
an attempt only from the table's source states and leaves it untouched otherwise. The same for
the manual payment request's table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.payments import repository, state_machine
from ordertally.payments.models import ManualPayment, Payment
from ordertally.payments.state_machine import (
    ManualState,
    ManualTransition,
    PaymentState,
    PaymentTransition,
)
from tests.factories import make_order
from tests.payments.helpers import make_attempt, payment_row

pytestmark = pytest.mark.anyio


def test_the_table_reads_as_documented() -> None:
    assert state_machine.as_rows() == [
        {"transition": "open_refused", "from": ["pending"], "to": "failed"},
        {"transition": "queried_closed", "from": ["pending"], "to": "closed"},
        {"transition": "received", "from": ["closed", "failed", "pending"], "to": "paid"},
        {
            "transition": "received_wrong_amount",
            "from": ["closed", "failed", "pending"],
            "to": "mismatch",
        },
    ]
    assert state_machine.PAYMENT_STATES == ("pending", "paid", "closed", "failed", "mismatch")
    assert state_machine.OPENED == "pending"
    assert {"paid", "mismatch"} == state_machine.MONEY_RECEIVED
    assert (state_machine.receipt(True).name, state_machine.receipt(False).name) == (
        "received",
        "received_wrong_amount",
    )


def test_every_state_is_reachable_and_money_received_is_final() -> None:
    reached = {state_machine.OPENED}
    frontier = [state_machine.OPENED]
    while frontier:
        state = frontier.pop()
        for move in state_machine.allowed_from(state):
            if move.target not in reached:
                reached.add(move.target)
                frontier.append(move.target)
    assert reached == set(PaymentState)
    for state in state_machine.MONEY_RECEIVED:
        assert state_machine.allowed_from(state) == []


Apply = Callable[[AsyncSession, int], Awaitable[object]]


def _applier(move: PaymentTransition) -> Apply:
    """The repository call that performs a transition."""
    now = clock.now()
    if move is state_machine.OPEN_REFUSED:
        return lambda s, pid: repository.set_provider_params(s, pid, None, "refused", now)
    if move is state_machine.QUERIED_CLOSED:
        return lambda s, pid: repository.mark_closed(s, pid, "CLOSED", now)
    return lambda s, pid: repository.mark_received(
        s, pid, move=move, txn_id=f"T{pid}", amount_minor=1, paid_at=now, at=now
    )


@pytest.mark.parametrize("move", state_machine.TRANSITIONS, ids=lambda t: t.name)
async def test_each_transition_moves_only_from_its_sources(
    db: Database, move: PaymentTransition
) -> None:
    order = await make_order(db)
    for state in PaymentState:
        # Given an attempt in this state
        attempt = await make_attempt(db, order)
        async with db.transaction() as session:
            await session.execute(
                update(Payment).where(Payment.id == attempt.id).values(state=state.value)
            )
        # When the transition is applied to it
        async with db.transaction() as session:
            await _applier(move)(session, attempt.id)
        # Then it moved exactly when the table allows it, and stayed put otherwise
        after = await payment_row(db, attempt.id)
        expected = move.target if state in move.sources else state
        assert (state, after.state) == (state, expected)


async def test_a_late_answer_schedules_no_query_for_an_attempt_that_got_its_result(
    db: Database,
) -> None:
    # Given an attempt paid (by a callback) while the provider was being asked about it
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    now = clock.now()
    async with db.transaction() as session:
        assert await repository.mark_received(
            session,
            attempt.id,
            move=state_machine.RECEIVED,
            txn_id="4200000001",
            amount_minor=attempt.amount_minor,
            paid_at=now,
            at=now,
        )
    # When the stale NOTPAY answer is recorded with a next query
    async with db.transaction() as session:
        await repository.record_query(
            session,
            attempt.id,
            at=now,
            trade_state="NOTPAY",
            next_query_at=now + timedelta(minutes=15),
            error=None,
        )
    # Then the query is noted but none is scheduled, and the attempt stays paid
    after = await payment_row(db, attempt.id)
    assert (after.state, after.query_count, after.last_query_state, after.next_query_at) == (
        "paid",
        1,
        "NOTPAY",
        None,
    )
    # While a pending attempt gets its next query, at the exact moment given
    pending = await make_attempt(db, order, "alipay")
    async with db.transaction() as session:
        await repository.record_query(
            session,
            pending.id,
            at=now,
            trade_state="WAIT_BUYER_PAY",
            next_query_at=now + timedelta(minutes=15),
            error=None,
        )
    assert (await payment_row(db, pending.id)).next_query_at == now + timedelta(minutes=15)


def test_a_manual_request_is_decided_once_from_pending_approval() -> None:
    assert [(t.name, t.source.value, t.target.value) for t in state_machine.MANUAL_TRANSITIONS] == [
        ("approve", "pending_approval", "approved"),
        ("reject", "pending_approval", "rejected"),
        ("supersede", "pending_approval", "superseded"),
    ]
    assert state_machine.MANUAL_STATES == ("pending_approval", "approved", "rejected", "superseded")


@pytest.mark.parametrize("move", state_machine.MANUAL_TRANSITIONS, ids=lambda t: t.name)
async def test_each_manual_decision_moves_only_a_pending_request(
    db: Database, move: ManualTransition
) -> None:
    order = await make_order(db)
    now = clock.now()
    for state in ManualState:
        # Given a request in this state
        async with db.transaction() as session:
            manual_id = await repository.insert_manual(
                session,
                {
                    "order_id": order.id,
                    "order_no": order.order_no,
                    "amount_minor": order.total_minor,
                    "currency": order.currency,
                    "reference": f"ref-{state.value}",
                    "paid_at": now,
                    "reason": "test",
                    "state": state.value,
                    "requested_by": "finance-a",
                    "requested_at": now,
                },
            )
        # When the decision is applied to it
        async with db.transaction() as session:
            decided = await repository.decide_manual(
                session, manual_id, move=move, by="finance-b", at=now, note=None, query_outcome=None
            )
        # Then it moved (and names its decider) exactly when it was pending approval
        async with db.transaction(write=False) as session:
            row = await session.get(ManualPayment, manual_id)
        assert row is not None
        moved = state is ManualState.PENDING_APPROVAL
        assert (state, decided, row.state, row.decided_by) == (
            state,
            moved,
            move.target if moved else state,
            "finance-b" if moved else None,
        )
