"""Hypothesis drives random reserve / pay / cancel / ship / refund / receipt / expire sequences
against the real database; every inventory invariant must hold after every step."""

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

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.inventory import repository as inventory_repository
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Reservation, Stock, StockMovement
from ordertally.orders import creation, transitions
from ordertally.orders import errors as order_errors
from ordertally.orders.state_machine import Actor, ActorKind
from tests.conftest import empty_tables
from tests.factories import DRIVERS, order_for

SKUS = ("P", "Q")
WAREHOUSES = (("WA", "上海市"), ("WB", "广东省"))


class InventoryMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url)
        self.orders: list[str] = []
        self.received = dict.fromkeys(SKUS, 0)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize()
    def setup(self) -> None:
        async def go() -> None:
            await empty_tables(self.db)
            async with self.db.transaction() as session:
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

    @rule(
        warehouse=st.sampled_from([w for w, _ in WAREHOUSES]),
        sku=st.sampled_from(SKUS),
        quantity=st.integers(1, 4),
    )
    def receipt(self, warehouse: str, sku: str, quantity: int) -> None:
        async def go() -> None:
            async with self.db.transaction() as session:
                await inventory_service.record_movement(
                    session,
                    warehouse_code=warehouse,
                    sku=sku,
                    kind="receipt",
                    quantity=quantity,
                    reason="h",
                    actor="h",
                )

        self.run(go())
        self.received[sku] += quantity

    @rule(
        lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=3),
        province=st.sampled_from(["上海市", "广东省", "北京市"]),
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
                    order = snap.order
                self.orders.append(order.order_no)
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
                assert await inventory_repository.reserved_mismatches(session) == []
                assert await inventory_repository.on_hand_mismatches(session) == []
                rows = (await session.scalars(select(Stock))).all()
                assert all(0 <= r.reserved <= r.on_hand for r in rows)
                for sku in SKUS:
                    shipped = -int(
                        await session.scalar(
                            select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
                                StockMovement.sku == sku, StockMovement.kind == "shipment"
                            )
                        )
                        or 0
                    )
                    live = int(
                        await session.scalar(
                            select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                                Reservation.sku == sku,
                                Reservation.state.in_(("held", "committed")),
                            )
                        )
                        or 0
                    )
                    # never more promised or shipped than ever received
                    assert shipped + live <= self.received[sku]

        self.run(go())


def test_inventory_invariants_hold(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERTALLY_DATABASE_URL", database_url)
    reset_settings()
    InventoryMachine.url = database_url
    examples = int(os.environ.get("ORDERTALLY_STATEFUL_EXAMPLES", "20"))
    run_state_machine_as_test(
        InventoryMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
