"""Hypothesis drives random receipt / order (bundles and their components) / pay / cancel /
ship / return / expire sequences against the real database: per component, on hand = Σ
movements and reserved = Σ live reservations at every step, and a bundle never holds stock."""

import asyncio
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.inventory import repository as inventory_repository
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Reservation, Stock, StockMovement
from ordertally.orders import creation, transitions
from ordertally.orders import errors as order_errors
from ordertally.orders import repository as orders_repository
from ordertally.orders.state_machine import Actor, ActorKind
from tests.conftest import empty_tables, seed_catalog
from tests.factories import DRIVERS, order_for

COMPONENTS = ("P", "Q")
BUNDLE = "BOX"
BOM = {"P": 1, "Q": 2}
WAREHOUSES = (("WA", "上海市"), ("WB", "广东省"))


class BundleMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url)
        self.orders: list[str] = []
        self.received = dict.fromkeys(COMPONENTS, 0)
        self.returned: set[str] = set()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize()
    def setup(self) -> None:
        async def go() -> None:
            await empty_tables(self.db)
            await seed_catalog(self.db, COMPONENTS)
            async with self.db.transaction() as session:
                await catalog_service.create_sku(
                    session,
                    {"code": BUNDLE, "name": "礼盒", "name_en": "Gift box"},
                    "h",
                    [{"sku": c, "quantity": q} for c, q in BOM.items()],
                )
                for code, province in WAREHOUSES:
                    await inventory_service.create_warehouse(
                        session,
                        {
                            "code": code,
                            "name": code,
                            "province": province,
                            "city": province,
                            "latitude": None,
                            "longitude": None,
                            "priority": 1,
                            "cost_factor": 1.0,
                            "active": True,
                        },
                    )
                await inventory_service.configure_stock(
                    session, warehouse_code="WB", sku="Q", safety_stock=None, buckets=3
                )

        self.run(go())

    def teardown(self) -> None:
        self.run(empty_tables(self.db))
        self.run(self.db.dispose())
        self.loop.close()
        clock.reset()

    async def _receive(self, warehouse: str, sku: str, quantity: int, reason: str) -> None:
        async with self.db.transaction() as session:
            await inventory_service.record_movement(
                session,
                warehouse_code=warehouse,
                sku=sku,
                kind="receipt",
                quantity=quantity,
                reason=reason,
                actor="h",
            )
        self.received[sku] += quantity

    @rule(
        warehouse=st.sampled_from([w for w, _ in WAREHOUSES]),
        sku=st.sampled_from(COMPONENTS),
        quantity=st.integers(1, 5),
    )
    def receipt(self, warehouse: str, sku: str, quantity: int) -> None:
        self.run(self._receive(warehouse, sku, quantity, "h"))

    @rule(
        lines=st.lists(
            st.tuples(st.sampled_from((*COMPONENTS, BUNDLE)), st.integers(1, 3)),
            min_size=1,
            max_size=3,
        ),
        province=st.sampled_from(["上海市", "广东省"]),
    )
    def reserve(self, lines: list[tuple[str, int]], province: str) -> None:
        async def go() -> None:
            try:
                async with self.db.transaction() as session:
                    snap, _ = await creation.create_order(
                        session,
                        order_for(lines, province),
                        Actor(ActorKind.API, "h"),
                        check_fingerprint=False,
                    )
                self.orders.append(snap.order.order_no)
            except InsufficientStock:
                pass

        self.run(go())

    @precondition(lambda self: self.orders)
    @rule(
        index=st.integers(0, 10_000),
        name=st.sampled_from(
            [
                "payment_succeeded",
                "cancel",
                "payment_timeout",
                "allocate",
                "start_fulfillment",
                "ship",
                "refund",
            ]
        ),
    )
    def transition(self, index: int, name: str) -> None:
        order_no = self.orders[index % len(self.orders)]

        async def go() -> None:
            try:
                async with self.db.transaction() as session:
                    await transitions.transition(
                        session, order_no, name, Actor(DRIVERS[name], "h", evidence_ref="e")
                    )
            except (order_errors.IllegalTransition, order_errors.OrderOnHold):
                pass

        self.run(go())

    @precondition(lambda self: self.orders)
    @rule(index=st.integers(0, 10_000))
    def give_back(self, index: int) -> None:
        """A return (no return flow yet): the shipped components are received back."""
        order_no = self.orders[index % len(self.orders)]
        if order_no in self.returned:
            return

        async def shipped() -> list[tuple[str, str, int]]:
            async with self.db.transaction(write=False) as session:
                order = await orders_repository.get_by_no(session, order_no)
                assert order is not None
                rows = await inventory_repository.reservations_of(session, order.id)
            return [(code, r.sku, r.quantity) for r, code in rows if r.state == "consumed"]

        pieces = self.run(shipped())
        if not pieces:
            return
        self.returned.add(order_no)
        for warehouse, sku, quantity in pieces:
            self.run(self._receive(warehouse, sku, quantity, f"return of {order_no}"))

    @rule(hours=st.integers(0, 3))
    def expire(self, hours: int) -> None:
        async def go() -> None:
            async with self.db.transaction() as session:
                await inventory_service.sweep_expired(session, clock.now() + timedelta(hours=hours))

        self.run(go())

    @invariant()
    def books_balance(self) -> None:
        async def go() -> None:
            async with self.db.transaction(write=False) as session:
                # per stock row: on hand = Σ movements, reserved = Σ live reservations
                assert await inventory_repository.reserved_mismatches(session) == []
                assert await inventory_repository.on_hand_mismatches(session) == []
                rows = (await session.scalars(select(Stock))).all()
                assert all(0 <= r.reserved <= r.on_hand for r in rows)
                assert {r.sku for r in rows} <= set(COMPONENTS)  # a bundle has no stock
                bundle_rows = await session.scalar(
                    select(func.count()).select_from(Reservation).where(Reservation.sku == BUNDLE)
                )
                assert bundle_rows == 0
                for sku in COMPONENTS:
                    on_hand = sum(r.on_hand for r in rows if r.sku == sku)
                    moved = int(
                        await session.scalar(
                            select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
                                StockMovement.sku == sku
                            )
                        )
                        or 0
                    )
                    assert on_hand == moved
                    live = int(
                        await session.scalar(
                            select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                                Reservation.sku == sku,
                                Reservation.state.in_(("held", "committed")),
                            )
                        )
                        or 0
                    )
                    assert sum(r.reserved for r in rows if r.sku == sku) == live
                    shipped = -int(
                        await session.scalar(
                            select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
                                StockMovement.sku == sku, StockMovement.kind == "shipment"
                            )
                        )
                        or 0
                    )
                    assert shipped + live <= self.received[sku]

        self.run(go())


def test_bundle_and_component_books_balance(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_DATABASE_URL", database_url)
    reset_settings()
    BundleMachine.url = database_url
    examples = int(os.environ.get("ORDERTALLY_STATEFUL_EXAMPLES", "15"))
    run_state_machine_as_test(
        BundleMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
