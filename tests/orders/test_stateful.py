"""Hypothesis drives random creations, transitions (legal or not, by any actor, with or without
evidence) and holds against the real database; after every step each order must stand where
the model says, having moved only along the transition table, with one audit row and one
outbox event per change and audit versions 1..version without gaps."""

import asyncio
import itertools
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.events.models import OutboxEvent
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders import creation, errors, transitions
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import (
    CREATION,
    TERMINAL,
    TRANSITIONS,
    Actor,
    ActorKind,
    Status,
    allowed_from,
    find,
)
from tests.conftest import empty_tables, seed_stock
from tests.factories import order_body

NAMES = [t.name for t in TRANSITIONS] + ["teleport", "reopen"]
EXTERNAL_IDS = [None, "EXT-1", "EXT-2", "EXT-3"]
BY_EVENT = {t.name: t.event_type for t in TRANSITIONS}


@dataclass
class Expected:
    """What the model knows of one order."""

    order_no: str
    id: int
    status: Status
    history: list[str]  # audit event names, creation first
    hold: int | None = None  # id of its open blocking case

    @property
    def version(self) -> int:
        return len(self.history)


def expected_outcome(order: Expected | None, name: str, kind: ActorKind, evidence: bool) -> Any:
    """The error a transition must raise, or True (applied) / False (duplicate)."""
    spec = find(name)
    if spec is None:
        return errors.IllegalTransition
    if kind not in spec.actors:
        return errors.ActorNotAllowed
    if kind in spec.evidence_required_for and not evidence:
        return errors.EvidenceRequired
    if order is None:
        return errors.OrderNotFound
    if order.status not in spec.sources:
        if order.status == spec.target and order.history[-1] == name:
            return False
        return errors.IllegalTransition
    if spec.blocked_by_holds and order.hold is not None:
        return errors.OrderOnHold
    return True


class OrderMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url)
        self.orders: list[Expected] = []
        self.by_external: dict[str, str] = {}
        self.created = 0
        self.applied = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize(
        first=st.lists(
            st.tuples(st.sampled_from(sorted(CREATION)), st.integers(1, 3)), min_size=1, max_size=3
        )
    )
    def setup(self, first: list[tuple[str, int]]) -> None:
        # The tables are empty: emptied before the run and by each example's teardown.
        self.run(seed_stock(self.db))
        # Given a few orders to start from, made by a creator allowed to make them
        for initial, quantity in first:
            self.create(initial, ActorKind.CHANNEL_SYNC, None, quantity)

    def teardown(self) -> None:
        self.run(empty_tables(self.db))
        self.run(self.db.dispose())
        self.loop.close()
        clock.reset()

    # --- rules ---------------------------------------------------------------------------------

    @rule(
        initial=st.sampled_from(sorted(CREATION)),
        kind=st.sampled_from(list(ActorKind)),
        external=st.sampled_from(EXTERNAL_IDS),
        quantity=st.integers(1, 3),
    )
    def create(self, initial: str, kind: ActorKind, external: str | None, quantity: int) -> None:
        target, creators = CREATION[initial]
        if kind not in creators:
            external = None  # a refused creator never learns about an existing order
        cmd = OrderCreate.model_validate(
            order_body(
                external_id=external,
                lines=[{"sku": "A", "quantity": quantity, "unit_price": "12.50"}],
            )
        )

        async def go() -> tuple[str, int, str, int, bool]:
            async with self.db.transaction() as session:
                snap, created = await creation.create_order(
                    session,
                    cmd,
                    Actor(kind, "hypothesis"),
                    check_fingerprint=False,
                    initial=initial,
                )
            o = snap.order
            return o.order_no, o.id, o.status, o.version, created

        if external is not None and external in self.by_external:
            # Given an external id the channel already sent: the stored order, nothing new
            existing = self._get(self.by_external[external])
            assert self.run(go()) == (
                existing.order_no,
                existing.id,
                existing.status.value,
                existing.version,
                False,
            )
        elif kind not in creators:
            self._refused(errors.ActorNotAllowed, go())
        else:
            order_no, order_id, status, version, created = self.run(go())
            assert (status, version, created) == (target.value, 1, True)
            self.orders.append(Expected(order_no, order_id, target, [initial]))
            self.created += 1
            if external is not None:
                self.by_external[external] = order_no

    @rule(
        index=st.integers(-40, 1_000),
        name=st.sampled_from(NAMES),
        kind=st.sampled_from(list(ActorKind)),
        evidence=st.booleans(),
        toggle_hold=st.booleans(),
    )
    def any_transition(
        self, index: int, name: str, kind: ActorKind, evidence: bool, toggle_hold: bool
    ) -> None:
        if index < 0 or not self.orders:
            # An order number nobody issued
            actor = Actor(kind, "hypothesis", evidence_ref="EV-1" if evidence else None)
            self._refused(
                expected_outcome(None, name, kind, evidence),
                self._apply("OT000000000000000000", name, actor),
            )
            return
        order = self.orders[index % len(self.orders)]
        if toggle_hold:
            self._toggle_hold(order)
        self._transition(order, name, kind, evidence)

    @precondition(lambda self: any(o.status not in TERMINAL for o in self.orders))
    @rule(data=st.data(), moves=st.integers(1, 3), toggle_hold=st.booleans())
    def walk(self, data: st.DataObject, moves: int, toggle_hold: bool) -> None:
        # Moves the table allows from where the order stands, each by one of its actors: the
        # random rule alone rarely takes an order far.
        order = data.draw(st.sampled_from([o for o in self.orders if o.status not in TERMINAL]))
        if toggle_hold:
            self._toggle_hold(order)
        for _ in range(moves):
            if order.status in TERMINAL:
                break
            spec = data.draw(st.sampled_from(allowed_from(order.status)))
            kind = data.draw(st.sampled_from(sorted(spec.actors)))
            self._transition(order, spec.name, kind, data.draw(st.booleans()))

    def _toggle_hold(self, order: Expected) -> None:
        """Open a blocking case on the order, or resolve the one it has."""
        case_id = order.hold

        async def go() -> int | None:
            async with self.db.transaction() as session:
                if case_id is not None:
                    await exceptions_service.resolve(session, case_id, "ops", "checked")
                    return None
                return await exceptions_service.open_case(
                    session,
                    order_id=order.id,
                    category="risk",
                    type="risk_review",
                    blocking=True,
                    detail={},
                )

        order.hold = self.run(go())

    def _transition(self, order: Expected, name: str, kind: ActorKind, evidence: bool) -> None:
        expected = expected_outcome(order, name, kind, evidence)
        actor = Actor(kind, "hypothesis", evidence_ref="EV-1" if evidence else None)
        if expected is True or expected is False:
            status, version, applied = self.run(self._apply(order.order_no, name, actor))
            assert applied is expected
            if applied:
                spec = find(name)
                assert spec is not None
                order.status = spec.target
                order.history.append(name)
                self.applied += 1
            assert (status, version) == (order.status.value, order.version)
        else:
            self._refused(expected, self._apply(order.order_no, name, actor))

    async def _apply(self, order_no: str, name: str, actor: Actor) -> tuple[str, int, bool]:
        async with self.db.transaction() as session:
            result = await transitions.transition(session, order_no, name, actor)
        return result.order.status, result.order.version, result.applied

    def _refused(self, expected: type[Exception], coro: Any) -> None:
        """The step raises exactly `expected` (its transaction rolls back)."""
        with pytest.raises(errors.OrderError) as refused:
            self.run(coro)
        assert type(refused.value) is expected, refused.value

    def _get(self, order_no: str) -> Expected:
        return next(o for o in self.orders if o.order_no == order_no)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def database_matches_the_model(self) -> None:
        async def read() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
            async with self.db.transaction(write=False) as session:
                orders = (
                    await session.execute(
                        select(SalesOrder.id, SalesOrder.status, SalesOrder.version)
                    )
                ).all()
                audit = (
                    await session.scalars(
                        select(OrderEvent).order_by(OrderEvent.order_id, OrderEvent.id)
                    )
                ).all()
                # the orders' events (a hold's case announces itself as an exception_case
                # event: ADR 0043)
                events = (
                    await session.scalars(
                        select(OutboxEvent)
                        .where(OutboxEvent.aggregate_type == "order")
                        .order_by(OutboxEvent.id)
                    )
                ).all()
                holds = (
                    await session.execute(
                        select(ExceptionCase.order_id, ExceptionCase.id).where(
                            ExceptionCase.status == "open", ExceptionCase.blocking.is_(True)
                        )
                    )
                ).all()
            return [tuple(r) for r in orders], list(audit), list(events), list(holds)

        rows, audit, events, holds = self.run(read())
        # Each order stands where the model says, with its version
        assert sorted(rows) == sorted((o.id, o.status.value, o.version) for o in self.orders)
        assert sorted(holds) == sorted((o.id, o.hold) for o in self.orders if o.hold is not None)
        # One audit row per creation and per applied transition; one outbox event per audit row
        assert len(audit) == self.created + self.applied
        assert len(events) == len(audit)
        for order in self.orders:
            trail = [e for e in audit if e.order_id == order.id]
            # Versions 1..version without gaps, in the model's order
            assert [e.version for e in trail] == list(range(1, order.version + 1))
            assert [e.event for e in trail] == order.history
            # Created by a creator, then moved only along rows of the table by their actors
            first = trail[0]
            target, creators = CREATION[first.event]
            assert (first.from_status, first.to_status) == (None, target.value)
            assert ActorKind(first.actor_kind) in creators
            for before, row in itertools.pairwise(trail):
                spec = find(row.event)
                assert spec is not None
                assert row.from_status == before.to_status
                assert Status(row.from_status) in spec.sources
                assert row.to_status == spec.target.value
                assert ActorKind(row.actor_kind) in spec.actors
                if ActorKind(row.actor_kind) in spec.evidence_required_for:
                    assert row.evidence_ref == "EV-1"
            assert trail[-1].to_status == order.status.value
            # Its outbox events mirror the audit trail, type by type and version by version
            mine = [e for e in events if e.aggregate_id == order.order_no]
            assert [e.event_type for e in mine] == ["OrderCreated"] + [
                BY_EVENT[name] for name in order.history[1:]
            ]
            assert mine[0].payload["order_no"] == order.order_no
            assert [e.payload["version"] for e in mine[1:]] == list(range(2, order.version + 1))


async def _empty(url: str) -> None:
    db = Database(url)
    try:
        await empty_tables(db)
    finally:
        await db.dispose()


def test_orders_move_only_along_the_table(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_DATABASE_URL", database_url)
    reset_settings()
    OrderMachine.url = database_url
    asyncio.run(_empty(database_url))
    examples = int(os.environ.get("ORDERTALLY_STATEFUL_EXAMPLES", "25"))
    run_state_machine_as_test(
        OrderMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )
