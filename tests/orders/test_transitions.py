"""The stock effect of every transition is a column of the table, and the one dispatcher runs
exactly that effect: commit, release, consume or nothing."""

from collections import Counter

import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import transitions
from ordertally.orders.state_machine import (
    TRANSITIONS,
    Actor,
    Event,
    StockEffect,
    Transition,
    as_rows,
)
from tests.factories import DRIVERS, make_order

pytestmark = pytest.mark.anyio

EXPECTED = {
    Event.PAYMENT_SUCCEEDED: StockEffect.COMMIT,
    Event.REOPEN_PAID: StockEffect.COMMIT,
    Event.PAYMENT_TIMEOUT: StockEffect.RELEASE,
    Event.CANCEL: StockEffect.RELEASE,
    Event.REFUND: StockEffect.RELEASE,
    Event.SHIP: StockEffect.CONSUME,
    Event.ALLOCATE: StockEffect.NONE,
    Event.START_FULFILLMENT: StockEffect.NONE,
    Event.DELIVER: StockEffect.NONE,
    Event.COMPLETE: StockEffect.NONE,
    # After-sales (issue 18): goods come back through inspection, not through the order's row.
    Event.CONFIRM_RECEIPT: StockEffect.NONE,
    Event.AFTERSALE_PARTIAL_REFUND: StockEffect.NONE,
    Event.AFTERSALE_REFUND: StockEffect.NONE,
    # Review decisions (issue 17): a warehouse edit moves the units itself (review.edit_review).
    Event.REVIEW_PASS: StockEffect.NONE,
    Event.REVIEW_HOLD: StockEffect.NONE,
    Event.REVIEW_EDIT: StockEffect.NONE,
}
# The factory order: TEA-LJ-250 x2 and CUP-CER-01 x1, reserved at creation (held).
UNITS = {"TEA-LJ-250": 2, "CUP-CER-01": 1}


def test_every_transition_declares_its_stock_effect() -> None:
    # Given the transition table; When each row is read; Then its effect is the expected one
    assert {t.name: t.stock_effect for t in TRANSITIONS} == EXPECTED
    assert {row["transition"]: row["stock_effect"] for row in as_rows()} == {
        name.value: effect.value for name, effect in EXPECTED.items()
    }
    # and every transition is named by an Event constant with the same string
    assert {t.name for t in TRANSITIONS} <= {e.value for e in Event}


async def _stock_state(
    db: Database, order_id: int
) -> tuple[Counter[str], dict[str, tuple[int, int]]]:
    """(units per reservation state of the order, {sku: (on hand, reserved)})."""
    async with db.transaction(write=False) as session:
        states: Counter[str] = Counter()
        for state, quantity in await session.execute(
            select(Reservation.state, Reservation.quantity).where(Reservation.order_id == order_id)
        ):
            states[state] += quantity
        stock = {
            sku: (int(on_hand), int(reserved))
            for sku, on_hand, reserved in await session.execute(
                select(Stock.sku, Stock.on_hand, Stock.reserved).where(Stock.sku.in_(UNITS))
            )
        }
    return states, stock


@pytest.mark.parametrize("spec", TRANSITIONS, ids=lambda t: t.name)
async def test_each_transition_runs_its_stock_effect(db: Database, spec: Transition) -> None:
    # Given an order reserved at creation and walked to the transition's first source status
    source = sorted(spec.sources)[0]
    order = await make_order(db, source.value)
    states, stock = await _stock_state(db, order.id)
    total = sum(UNITS.values())
    # When the transition is applied
    async with db.transaction() as session:
        result = await transitions.transition(
            session,
            order.order_no,
            spec.name,
            Actor(DRIVERS[spec.name], "tester", evidence_ref="E"),
        )
    assert result.applied is True
    after, stock_after = await _stock_state(db, order.id)
    # Then the reservations and the stock rows changed exactly as the row's effect says
    if spec.stock_effect is StockEffect.COMMIT:
        assert after["committed"] == total
        assert after["held"] == 0
        assert after["released"] == states["released"]  # reopen_paid reserves again
        assert stock_after == {
            sku: (on_hand, reserved + (UNITS[sku] if states["released"] else 0))
            for sku, (on_hand, reserved) in stock.items()
        }
    elif spec.stock_effect is StockEffect.RELEASE:
        assert after == Counter({"released": total})
        assert stock_after == {
            sku: (on_hand, reserved - UNITS[sku]) for sku, (on_hand, reserved) in stock.items()
        }
    elif spec.stock_effect is StockEffect.CONSUME:
        assert after == Counter({"consumed": total})
        assert stock_after == {
            sku: (on_hand - UNITS[sku], reserved - UNITS[sku])
            for sku, (on_hand, reserved) in stock.items()
        }
    else:
        assert after == states
        assert stock_after == stock


class _RolledBack(Exception):
    pass


async def test_a_transition_is_counted_only_once_its_transaction_commits(db: Database) -> None:
    # Given an unpaid order and the transitions counter for pending_payment -> closed
    order = await make_order(db)
    counter = transitions.TRANSITIONS_TOTAL.labels("pending_payment", "closed")
    start = counter._value.get()
    actor = Actor(DRIVERS["cancel"], "tester")
    # When the cancel runs in a transaction that then rolls back
    with pytest.raises(_RolledBack):
        async with db.transaction() as session:
            await transitions.transition(session, order.order_no, Event.CANCEL, actor)
            # Then nothing is counted while the transaction is open
            assert counter._value.get() == start
            raise _RolledBack
    # Then nothing is counted after the rollback either
    assert counter._value.get() == start
    # When it runs again and commits
    async with db.transaction() as session:
        await transitions.transition(session, order.order_no, Event.CANCEL, actor)
    # Then it is counted exactly once
    assert counter._value.get() == start + 1
