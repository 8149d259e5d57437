"""A reservation's life follows its order: held at creation, committed on payment, released
on close or refund, consumed on shipment — each in the transaction of the order's change."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.exceptions.models import ExceptionCase
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Reservation, Stock, StockMovement
from ordertally.orders import creation, transitions
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind
from tests.factories import DRIVERS, add_warehouse, order_for, receive

pytestmark = pytest.mark.anyio


async def _create(db: Database, lines: list[tuple[str, int]], province: str = "上海市") -> str:
    async with db.transaction() as session:
        snap, _ = await creation.create_order(
            session,
            order_for(lines, province),
            Actor(ActorKind.API, "t"),
            check_fingerprint=False,
        )
        order = snap.order
    return order.order_no


async def _walk(db: Database, order_no: str, *names: str) -> None:
    for name in names:
        async with db.transaction() as session:
            await transitions.transition(
                session, order_no, name, Actor(DRIVERS[name], "t", evidence_ref="ev")
            )


async def _stock(db: Database, sku: str) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(func.sum(Stock.on_hand), func.sum(Stock.reserved)).where(Stock.sku == sku)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def _states(db: Database, sku: str) -> list[str]:
    async with db.transaction(write=False) as session:
        return list(
            (
                await session.scalars(
                    select(Reservation.state).where(Reservation.sku == sku).order_by(Reservation.id)
                )
            ).all()
        )


async def test_pay_then_ship_consumes_with_a_ledger_row(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K1", 10)
    order_no = await _create(db, [("K1", 3)])
    assert (await _stock(db, "K1"), await _states(db, "K1")) == ((10, 3), ["held"])
    await _walk(db, order_no, "payment_succeeded")
    assert (await _stock(db, "K1"), await _states(db, "K1")) == ((10, 3), ["committed"])
    await _walk(db, order_no, "allocate", "start_fulfillment", "ship")
    assert (await _stock(db, "K1"), await _states(db, "K1")) == ((7, 0), ["consumed"])
    async with db.transaction(write=False) as session:
        ledger = (
            await session.execute(
                select(StockMovement.kind, StockMovement.quantity).where(StockMovement.sku == "K1")
            )
        ).all()
    assert sorted(ledger) == [("receipt", 10), ("shipment", -3)]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["cancel"], "released"),
        (["payment_timeout"], "released"),
        (["payment_succeeded", "refund"], "released"),
        (["payment_succeeded", "allocate", "refund"], "released"),
    ],
)
async def test_close_and_refund_release_in_the_same_transaction(
    db: Database, path: list[str], expected: str
) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K2", 5)
    order_no = await _create(db, [("K2", 2)])
    await _walk(db, order_no, *path)
    assert await _states(db, "K2") == [expected]
    assert await _stock(db, "K2") == (5, 0)


async def test_shortage_rolls_the_whole_order_back(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K3", 5)
    await receive(db, "W1", "K4", 1)
    async with db.transaction() as session:
        before = await session.scalar(select(func.count()).select_from(SalesOrder))
    with pytest.raises(InsufficientStock) as err:
        await _create(db, [("K3", 2), ("K4", 2), ("NOWHERE", 1)])
    assert err.value.extra["skus"] == [
        {"sku": "K4", "requested": 2, "missing": 1},
        {"sku": "NOWHERE", "requested": 1, "missing": 1},
    ]
    assert await _stock(db, "K3") == (5, 0)
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == before
        assert await session.scalar(select(func.count()).select_from(Reservation)) == 0


async def test_hold_policy_creates_the_order_on_hold(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_STOCK_SHORTAGE_POLICY", "hold")
    reset_settings()
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K5", 1)
    order_no = await _create(db, [("K5", 2)])
    async with db.transaction(write=False) as session:
        case = (await session.scalars(select(ExceptionCase))).one()
    assert (case.type, case.blocking, case.detail["skus"][0]["missing"]) == (
        "stock_shortage",
        True,
        1,
    )
    assert await _stock(db, "K5") == (1, 0)
    # Paying it later reserves again if stock arrived
    await receive(db, "W1", "K5", 5)
    await _walk(db, order_no, "payment_succeeded")
    assert await _states(db, "K5") == ["committed"]
    assert await _stock(db, "K5") == (6, 2)


async def test_sweep_frees_expired_holds_and_payment_re_reserves(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K6", 3)
    with clock.frozen(clock.now() - timedelta(hours=1)):
        order_no = await _create(db, [("K6", 2)])
    async with db.transaction() as session:
        assert await inventory_service.sweep_expired(session, clock.now()) == 1
    assert (await _stock(db, "K6"), await _states(db, "K6")) == ((3, 0), ["released"])
    # A late payment takes the units again if they are still there
    await _walk(db, order_no, "payment_succeeded")
    assert await _states(db, "K6") == ["released", "committed"]
    assert await _stock(db, "K6") == (3, 2)


async def test_late_payment_without_stock_opens_a_shortage_hold(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K7", 1)
    with clock.frozen(clock.now() - timedelta(hours=1)):
        order_no = await _create(db, [("K7", 1)])
    async with db.transaction() as session:
        await inventory_service.sweep_expired(session, clock.now())
    await _create(db, [("K7", 1)])  # someone else buys the unit
    await _walk(db, order_no, "payment_succeeded")
    async with db.transaction(write=False) as session:
        case = (await session.scalars(select(ExceptionCase))).one()
        order = await orders_service.get_order(session, order_no)
    assert order.status == "paid"
    assert (case.type, case.detail["when"]) == ("stock_shortage", "payment")


async def test_buckets_spread_a_hot_sku_and_keep_totals(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "HOT", 10)
    async with db.transaction() as session:
        await inventory_service.configure_stock(
            session, warehouse_code="W1", sku="HOT", safety_stock=2, buckets=4
        )
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Stock).where(Stock.sku == "HOT"))).all()
    assert sorted(r.on_hand for r in rows) == [2, 2, 3, 3]
    assert sum(r.safety_stock for r in rows) == 2
    for _ in range(8):
        await _create(db, [("HOT", 1)])
    with pytest.raises(InsufficientStock):
        await _create(db, [("HOT", 1)])
    async with db.transaction(write=False) as session:
        view = await inventory_service.stock_view(session, "HOT")
    assert view["total"] == {"on_hand": 10, "reserved": 8, "safety_stock": 2, "available": 0}
    assert view["warehouses"][0]["buckets"] == 4


async def test_adjustments_and_counts_respect_reservations(db: Database) -> None:
    await add_warehouse(db, "W1")
    await receive(db, "W1", "K8", 5)
    await _create(db, [("K8", 4)])
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code="W1",
            sku="K8",
            kind="adjustment",
            quantity=-1,
            reason="damaged",
            actor="t",
        )
    from ordertally.inventory.errors import BelowReserved

    async with db.transaction() as session:
        with pytest.raises(BelowReserved):
            await inventory_service.record_movement(
                session,
                warehouse_code="W1",
                sku="K8",
                kind="count",
                quantity=3,
                reason="cycle count",
                actor="t",
            )
    async with db.transaction() as session:
        result = await inventory_service.record_movement(
            session,
            warehouse_code="W1",
            sku="K8",
            kind="count",
            quantity=9,
            reason="cycle count",
            actor="t",
        )
    assert result["delta"] == 5
    assert await _stock(db, "K8") == (9, 4)
