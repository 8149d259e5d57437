"""Closing orders left unpaid past their payment deadline (actor: scheduler).

The close job's boundary, in three steps, none holding a transaction while another system is
asked: claim the due orders in a short transaction; run the registered pre-close checks with no
transaction open (payments asks the providers one last time, and records what it learns in
transactions of its own); close each remaining order with the compare-and-set transition in its
own short transaction. An order paid meanwhile is not closed: the transition only moves an order
that is still pending payment.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.orders import repository
from ordertally.orders import service as orders_service
from ordertally.orders.errors import IllegalTransition, PaymentReceived
from ordertally.orders.state_machine import ActorKind, Event, Status

log = logging.getLogger(__name__)

CLOSE_BATCH = 500


@dataclass(frozen=True, slots=True)
class DueOrder:
    """An order pending payment past its deadline, as the close job claimed it."""

    id: int
    order_no: str
    payment_deadline_at: datetime


# A check gets the claimed orders and the database (no transaction is open when it is called:
# it may ask another system, then open its own short transactions to record what it learned);
# it returns the ids of the orders that must stay open.
PreCloseCheck = Callable[[Database, Sequence[DueOrder]], Awaitable[set[int]]]
PRE_CLOSE_CHECKS: list[PreCloseCheck] = []


def register_pre_close_check(check: PreCloseCheck) -> PreCloseCheck:
    """Run `check` before closing orders for payment timeout; the ids it returns stay open."""
    if check not in PRE_CLOSE_CHECKS:
        PRE_CLOSE_CHECKS.append(check)
    return check


async def claim_due(db: Database, now: datetime, limit: int = CLOSE_BATCH) -> list[DueOrder]:
    """Pending-payment orders past their deadline, oldest deadline first (a short transaction;
    on PostgreSQL orders locked by someone else right now are left for the next tick)."""
    async with db.transaction() as session:
        due = await repository.due_for_timeout(session, now, limit, skip_locked=not db.is_sqlite)
        return [DueOrder(o.id, o.order_no, clock.as_utc(o.payment_deadline_at or now)) for o in due]


async def kept_open(db: Database, due: Sequence[DueOrder]) -> set[int]:
    """Ask every registered pre-close check, with no transaction open; ids to keep open."""
    keep: set[int] = set()
    if not due:
        return keep
    for check in PRE_CLOSE_CHECKS:
        keep |= await check(db, due)
    return keep


async def kept_open_ids(db: Database, order_ids: list[int]) -> set[int]:
    """Of these orders, the unpaid ones that the pre-close checks keep open (a short read, then
    the checks with no transaction open)."""
    async with db.transaction(write=False) as session:
        orders = await orders_service.get_orders_by_id(session, order_ids)
    now = clock.now()
    due = [
        DueOrder(o.id, o.order_no, clock.as_utc(o.payment_deadline_at or now))
        for o in orders
        if o.status == Status.PENDING_PAYMENT
    ]
    return await kept_open(db, due)


async def close_one(db: Database, order: DueOrder) -> bool:
    """Close one order for payment timeout in its own transaction; False when it is no longer
    pending payment (paid or cancelled meanwhile) or was closed by another worker."""
    actor = orders_service.Actor(ActorKind.SCHEDULER, Event.PAYMENT_TIMEOUT)
    try:
        async with db.transaction() as session:
            result = await orders_service.transition(
                session, order.order_no, Event.PAYMENT_TIMEOUT, actor
            )
    except IllegalTransition as exc:
        log.info("order %s not closed: %s", order.order_no, exc)
        return False
    return result.applied


async def close_unpaid(db: Database, now: datetime, limit: int = CLOSE_BATCH) -> int:
    """Close pending-payment orders past their deadline; returns how many were closed."""
    due = await claim_due(db, now, limit)
    keep = await kept_open(db, due)
    closed = 0
    for order in due:
        if order.id not in keep:
            closed += int(await close_one(db, order))
    return closed


async def refuse_if_paid(db: Database, order_no: str) -> None:
    """Before a person cancels an unpaid order: the same pre-close checks as the timeout, with
    no transaction open (payments asks the providers); raise PaymentReceived if they keep it
    open (money received on an attempt, paid or in a wrong amount, or a provider that cannot
    say). Orders not pending payment are left to the transition's own refusal."""
    async with db.transaction(write=False) as session:
        order = await orders_service.get_order(session, order_no)
    if order.status != Status.PENDING_PAYMENT:
        return
    now = clock.now()
    deadline = clock.as_utc(order.payment_deadline_at) if order.payment_deadline_at else now
    if order.id in await kept_open(db, [DueOrder(order.id, order.order_no, deadline)]):
        raise PaymentReceived(
            f"order {order_no} has money received or a payment its provider could not rule "
            "out; refund or resolve the payment first",
            order_no=order_no,
        )
