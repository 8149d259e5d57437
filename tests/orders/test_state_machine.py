"""Every legal transition applies with its audit row and event; every illegal one is refused
and writes nothing."""

import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.orders import errors, transitions
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderEvent
from ordertally.orders.state_machine import STATUSES, TRANSITIONS, Actor, ActorKind, Status
from tests.factories import DRIVERS, make_order

pytestmark = pytest.mark.anyio

CASES = [(t.name, s) for t in TRANSITIONS for s in STATUSES]


async def _counts(db: Database) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        audit = await session.scalar(select(func.count()).select_from(OrderEvent))
        events = await session.scalar(select(func.count()).select_from(OutboxEvent))
    return int(audit or 0), int(events or 0)


@pytest.mark.parametrize(("name", "status"), CASES)
async def test_transition_from_every_status(db: Database, name: str, status: str) -> None:
    # Given an order in `status`
    order = await make_order(db, status)
    spec = next(t for t in TRANSITIONS if t.name == name)
    before = await _counts(db)
    actor = Actor(DRIVERS[name], "tester", evidence_ref="EV-1")
    # When the transition's own actor triggers it
    if Status(status) in spec.sources:
        async with db.transaction() as session:
            result = await transitions.transition(session, order.order_no, name, actor)
        # Then it moved, with exactly one audit row and one event
        assert result.applied is True
        assert result.order.status == spec.target.value
        assert result.order.version == order.version + 1
        assert await _counts(db) == (before[0] + 1, before[1] + 1)
        async with db.transaction(write=False) as session:
            trail = await orders_service.events_of(session, order.order_no)
        assert [e.version for e in trail] == list(range(1, result.order.version + 1))
    else:
        async with db.transaction() as session:
            outcome = None
            try:
                result = await transitions.transition(session, order.order_no, name, actor)
                outcome = result.applied
            except errors.IllegalTransition:
                outcome = "refused"
        # Then it is refused, or a no-op when the same transition already led here
        already_there = status == spec.target.value and name in _last_event_names(status)
        assert outcome == (False if already_there else "refused")
        assert await _counts(db) == before
        async with db.transaction(write=False) as session:
            again = await orders_service.get_order(session, order.order_no)
        assert again.status == status and again.version == order.version


def _last_event_names(status: str) -> set[str]:
    from tests.factories import PATHS

    path = PATHS[status]
    return {path[-1]} if path else set()


@pytest.mark.parametrize("spec", TRANSITIONS, ids=lambda t: t.name)
async def test_actors_not_in_the_table_are_refused(db: Database, spec: object) -> None:
    from ordertally.orders.state_machine import Transition

    assert isinstance(spec, Transition)
    source = sorted(spec.sources)[0]
    order = await make_order(db, source.value)
    before = await _counts(db)
    for kind in ActorKind:
        if kind in spec.actors:
            continue
        async with db.transaction() as session:
            with pytest.raises(errors.ActorNotAllowed):
                await transitions.transition(
                    session, order.order_no, spec.name, Actor(kind, "intruder", evidence_ref="x")
                )
    assert await _counts(db) == before


async def test_finance_needs_evidence_to_mark_paid(db: Database) -> None:
    order = await make_order(db)
    async with db.transaction() as session:
        with pytest.raises(errors.EvidenceRequired):
            await transitions.transition(
                session, order.order_no, "payment_succeeded", Actor(ActorKind.FINANCE, "fin")
            )
    async with db.transaction() as session:
        result = await transitions.transition(
            session,
            order.order_no,
            "payment_succeeded",
            Actor(ActorKind.FINANCE, "fin", evidence_ref="BANK-2026-001"),
        )
    assert result.order.status == "paid"
    async with db.transaction(write=False) as session:
        trail = await orders_service.events_of(session, order.order_no)
    assert [(e.event, e.actor_kind, e.evidence_ref) for e in trail] == [
        ("create", "api", None),
        ("payment_succeeded", "finance", "BANK-2026-001"),
    ]


async def test_a_hold_blocks_fulfilment_but_not_refund(db: Database) -> None:
    from ordertally.exceptions import service as exceptions_service

    order = await make_order(db, "paid")
    async with db.transaction() as session:
        case_id = await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="risk",
            type="risk_review",
            blocking=True,
            detail={},
        )
    async with db.transaction() as session:
        with pytest.raises(errors.OrderOnHold):
            await transitions.transition(
                session, order.order_no, "allocate", Actor(ActorKind.ALLOCATOR, "a")
            )
    async with db.transaction() as session:
        await exceptions_service.resolve(session, case_id, "ops", "checked")
    async with db.transaction() as session:
        result = await transitions.transition(
            session, order.order_no, "allocate", Actor(ActorKind.ALLOCATOR, "a")
        )
    assert result.order.status == "allocated"


async def test_unknown_order_and_unknown_transition(db: Database) -> None:
    async with db.transaction() as session:
        with pytest.raises(errors.OrderNotFound):
            await transitions.transition(
                session, "OT000000000000000000", "cancel", Actor(ActorKind.OPERATOR, "o")
            )
        with pytest.raises(errors.IllegalTransition):
            await transitions.transition(
                session, "OT000000000000000000", "teleport", Actor(ActorKind.OPERATOR, "o")
            )
