"""Status changes of existing orders: one row of the transition table at a time (or for many
orders at once), each with its audit row, its outbox event and its stock effect.

The stock effect of a transition is a column of `state_machine.TRANSITIONS`; `_EFFECTS` is the
one dispatcher that runs it. Services receive a session and never commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import at_end, count_after_commit
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.orders import repository, review
from ordertally.orders.errors import (
    ActorNotAllowed,
    EvidenceRequired,
    IllegalTransition,
    OrderNotFound,
    OrderOnHold,
    TransitionConflict,
)
from ordertally.orders.events import OrderStatusChanged
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, Status, StockEffect, Transition, find

TRANSITIONS_TOTAL = Counter(
    "ordertally_order_transitions_total", "Order status changes", ["from", "to"]
)


@dataclass(frozen=True, slots=True)
class TransitionResult:
    order: SalesOrder
    applied: bool  # False: the order was already where this transition leads (a duplicate)


def audit_row(
    order_id: int,
    version: int,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: Actor,
    at: datetime,
) -> dict[str, Any]:
    """The audit row of one status change (creation or transition)."""
    return {
        "order_id": order_id,
        "version": version,
        "event": str(event),
        "from_status": from_status,
        "to_status": to_status,
        "actor_kind": actor.kind.value,
        "actor_id": actor.id,
        "source_ip": actor.source_ip,
        "evidence_ref": actor.evidence_ref,
        "note": actor.note,
        "occurred_at": at,
    }


def _status_event(
    spec: Transition, order: SalesOrder, from_status: str, version: int, actor: Actor, at: datetime
) -> dict[str, Any]:
    """The outbox row announcing one transition of an order."""
    return outbox.build_row(
        spec.event_type,
        OrderStatusChanged(
            order_id=order.id,
            order_no=order.order_no,
            transition=spec.name,
            from_status=from_status,
            to_status=spec.target.value,
            version=version,
            actor_kind=actor.kind.value,
            actor_id=actor.id,
            evidence_ref=actor.evidence_ref,
            occurred_at=at,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )


# --- stock effects ------------------------------------------------------------------------------


async def _commit(session: AsyncSession, orders: list[SalesOrder], actors: list[Actor]) -> None:
    """Held reservations become committed; units no longer held (swept, never reserved) are
    reserved again, and what cannot be is a blocking `stock_shortage` hold."""
    if len(orders) == 1:
        order = orders[0]
        lines = [
            inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
            for line in await repository.lines_of(session, order.id)
        ]
        missing = await inventory_service.commit_order(
            session, order.id, lines, order.ship_province
        )
        short = {order.id: missing} if missing else {}
    else:
        by_order: dict[int, list[inventory_service.LineDemand]] = {o.id: [] for o in orders}
        for line in await repository.lines_of_many(session, list(by_order)):
            by_order[line.order_id].append(
                inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
            )
        short = await inventory_service.commit_orders(
            session, {o.id: (by_order[o.id], o.ship_province) for o in orders}
        )
    for order_id, skus in sorted(short.items()):
        await exceptions_service.open_case(
            session,
            order_id=order_id,
            category="inventory",
            type="stock_shortage",
            blocking=True,
            detail={
                "skus": [{"sku": s, "missing": q} for s, q in sorted(skus.items())],
                "when": "payment",
            },
        )
    # The review step (审单): orders the auto-review strategy does not pass wait in review.
    await review.review_paid(session, orders)


async def _release(session: AsyncSession, orders: list[SalesOrder], actors: list[Actor]) -> None:
    """Live reservations go back to available (one stock lock order over all the orders, in
    two statements however many orders)."""
    await inventory_service.release_orders(session, [o.id for o in orders])


async def _consume(session: AsyncSession, orders: list[SalesOrder], actors: list[Actor]) -> None:
    """Committed reservations leave the warehouse, recorded under the actor (one stock lock
    order over all the orders), as the transaction's last statements: nothing after a shipment
    reads them, and the hot SKU's stock row is then held only for its UPDATE and the COMMIT."""
    shipped = [(o.id, a.id) for o, a in zip(orders, actors, strict=True)]
    await at_end(session, lambda: inventory_service.consume_orders(session, shipped))


async def _no_effect(session: AsyncSession, orders: list[SalesOrder], actors: list[Actor]) -> None:
    """The transition leaves stock as it is."""


Effect = Callable[[AsyncSession, list[SalesOrder], list[Actor]], Awaitable[None]]
_EFFECTS: dict[StockEffect, Effect] = {
    StockEffect.NONE: _no_effect,
    StockEffect.COMMIT: _commit,
    StockEffect.RELEASE: _release,
    StockEffect.CONSUME: _consume,
}
# Effects `transition_many` runs for many orders in a fixed number of statements (a release:
# one statement moves every order's reservations, one executemany gives the units back; a
# consumption the same, as the transaction's last statements).
BATCHED_EFFECTS = frozenset(
    {StockEffect.NONE, StockEffect.COMMIT, StockEffect.RELEASE, StockEffect.CONSUME}
)


async def lock_orders_and_stock(
    session: AsyncSession, order_ids: list[int], *, extra_skus: set[str] | None = None
) -> None:
    """Lock the orders in id order, then every stock row their SKUs (and `extra_skus`, e.g.
    those of orders about to be created; bundles: their components) sit on, in stock id
    order, before a transaction moves several orders one by one whose stock effects are not
    known in advance: one lock set per transaction, orders before stock like every other path
    (issue 21)."""
    skus = set(extra_skus or ())
    if order_ids:
        ids = sorted(set(order_ids))
        await repository.lock_many(session, ids)
        skus |= {line.sku for line in await repository.lines_of_many(session, ids)}
    await inventory_service.lock_stock(session, skus)


async def apply_stock_effect(
    session: AsyncSession, effect: StockEffect, orders: list[SalesOrder], actors: list[Actor]
) -> None:
    """Run a transition's stock effect for orders that just took it (actors in order)."""
    await _EFFECTS[effect](session, orders, actors)


# --- transitions --------------------------------------------------------------------------------


async def transition(
    session: AsyncSession, order_no: str, name: str, actor: Actor
) -> TransitionResult:
    """Apply one row of the transition table as a compare-and-set, with its audit row and event.

    A transition that finds the order already in its target status because the same
    transition happened before is a duplicate: nothing is written and `applied` is False.
    """
    spec = find(name)
    if spec is None:
        raise IllegalTransition(f"{name!r} is not a transition")
    if actor.kind not in spec.actors:
        raise ActorNotAllowed(f"{actor.kind} may not trigger {name}", transition=name)
    if actor.kind in spec.evidence_required_for and not actor.evidence_ref:
        raise EvidenceRequired(f"{actor.kind} must give evidence for {name}", transition=name)

    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    for _ in range(3):
        status = Status(order.status)
        if status not in spec.sources:
            if await _already_applied(session, order, spec):
                return TransitionResult(order, applied=False)
            raise IllegalTransition(
                f"cannot {name} an order that is {status}",
                order_status=status.value,
                transition=name,
            )
        if spec.blocked_by_holds and await exceptions_service.has_hold(session, order.id):
            raise OrderOnHold(f"order {order_no} has an open hold", transition=name)
        now = clock.now()
        # Read before the UPDATE: the ORM synchronises the loaded order with the new version.
        seen_version = order.version
        if await repository.compare_and_set_status(
            session,
            order.id,
            from_status=status.value,
            version=seen_version,
            to_status=spec.target.value,
            at=now,
        ):
            version = seen_version + 1
            await apply_stock_effect(session, spec.stock_effect, [order], [actor])
            await repository.insert_event(
                session,
                audit_row(order.id, version, name, status.value, spec.target.value, actor, now),
            )
            await outbox.publish_rows(
                session, [_status_event(spec, order, status.value, version, actor, now)]
            )
            count_after_commit(
                session, TRANSITIONS_TOTAL.labels(status.value, spec.target.value).inc
            )
            refreshed = await repository.get_by_id(session, order.id)
            assert refreshed is not None
            return TransitionResult(refreshed, applied=True)
        # Someone else moved the order first: re-read and decide again.
        fresh = await repository.get_by_id(session, order.id)
        assert fresh is not None
        order = fresh
    raise TransitionConflict(f"order {order_no} kept changing; try again", transition=name)


async def transition_many(
    session: AsyncSession,
    order_ids: list[int],
    name: str,
    actors: dict[int, Actor],
    *,
    holds_checked: bool = False,
) -> set[int]:
    """`transition` for many orders at once, in a fixed number of statements: the orders are
    locked, those in a source status move together (compare-and-set, stock effects, audit rows,
    events). Returns the ids moved; the caller decides about the others (typically by calling
    `transition` for each, which explains why). Only transitions without holds or evidence
    rules and with a batched stock effect are supported; a transition that holds block only when
    the caller has locked the orders and found them free of holds (`holds_checked`)."""
    spec = find(name)
    blocked = spec is not None and spec.blocked_by_holds and not holds_checked
    if spec is None or blocked or spec.stock_effect not in BATCHED_EFFECTS:
        raise ValueError(f"{name!r} cannot be applied in a batch")
    for actor in actors.values():
        if actor.kind not in spec.actors:
            raise ActorNotAllowed(f"{actor.kind} may not trigger {name}", transition=name)
        if actor.kind in spec.evidence_required_for and not actor.evidence_ref:
            raise EvidenceRequired(f"{actor.kind} must give evidence for {name}", transition=name)
    orders = [
        o
        for o in await repository.lock_many(session, sorted(set(order_ids)))
        if o.status in spec.sources and o.id in actors
    ]
    if not orders:
        return set()
    now = clock.now()
    by_source: dict[str, list[SalesOrder]] = {}
    for order in orders:
        by_source.setdefault(order.status, []).append(order)
    for source, group in by_source.items():
        await repository.set_status_many(
            session,
            [{"oid": o.id, "seen": o.version, "at": now} for o in group],
            from_status=source,
            to_status=spec.target.value,
        )
    await apply_stock_effect(session, spec.stock_effect, orders, [actors[o.id] for o in orders])
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for order in orders:
        actor = actors[order.id]
        version = order.version + 1
        audit.append(
            audit_row(order.id, version, name, order.status, spec.target.value, actor, now)
        )
        events.append(_status_event(spec, order, order.status, version, actor, now))
        count_after_commit(session, TRANSITIONS_TOTAL.labels(order.status, spec.target.value).inc)
    await repository.insert_events(session, audit)
    await outbox.publish_rows(session, events)
    moved = {o.id for o in orders}
    # The ORM objects still show the old status: expire them so later reads see the new one.
    for order in orders:
        session.expire(order)
    return moved


async def _already_applied(session: AsyncSession, order: SalesOrder, spec: Transition) -> bool:
    if order.status != spec.target.value:
        return False
    events = await repository.events_of(session, order.id)
    return bool(events) and events[-1].event == spec.name
