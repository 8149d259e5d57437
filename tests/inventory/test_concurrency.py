"""Races over real concurrent connections: buyers for the last units, split orders, and
reservations expiring while payments arrive."""

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import creation, transitions
from ordertally.orders.models import SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import Actor, ActorKind
from tests.factories import add_warehouse, order_for, receive

pytestmark = pytest.mark.anyio

BUYER = Actor(ActorKind.API, "buyer")
PROVINCES = ["北京市", "广东省"]


def _databases(db: Database) -> list[Database]:
    # On SQLite, extra Database objects mean extra connections that contend through
    # BEGIN IMMEDIATE and the busy timeout, not just through the in-process lock.
    return [db] if not db.is_sqlite else [db, Database(db.url), Database(db.url)]


async def _buy(db: Database, cmd: OrderCreate) -> str:
    try:
        async with db.transaction() as session:
            snap, _ = await creation.create_order(session, cmd, BUYER, check_fingerprint=False)
            order = snap.order
        return order.order_no
    except InsufficientStock:
        return "insufficient"


async def _stock_totals(db: Database, sku: str) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(func.sum(Stock.on_hand), func.sum(Stock.reserved)).where(Stock.sku == sku)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def _live_reserved(db: Database, sku: str) -> int:
    async with db.transaction(write=False) as session:
        value = await session.scalar(
            select(func.sum(Reservation.quantity)).where(
                Reservation.sku == sku, Reservation.state.in_(("held", "committed"))
            )
        )
    return int(value or 0)


async def test_200_buyers_for_50_units_twenty_times(db: Database) -> None:
    await add_warehouse(db, "HOT")
    pool = _databases(db)
    try:
        for round_no in range(20):
            sku = f"LAST-{round_no}"
            await receive(db, "HOT", sku, 50)
            # When 200 buyers each want one of the 50 units at once
            results = await asyncio.gather(
                *(_buy(pool[i % len(pool)], order_for([(sku, 1)])) for i in range(200))
            )
            # Then exactly 50 orders exist, 150 were refused, and nothing is oversold
            assert results.count("insufficient") == 150, round_no
            assert len({r for r in results if r != "insufficient"}) == 50
            assert await _stock_totals(db, sku) == (50, 50)
            assert await _live_reserved(db, sku) == 50
    finally:
        for extra in pool[1:]:
            await extra.dispose()


async def test_three_warehouses_20_20_10_never_oversell_and_splits_add_up(db: Database) -> None:
    for code, province, units in (("W1", "上海市", 20), ("W2", "广东省", 20), ("W3", "四川省", 10)):
        await add_warehouse(db, code, province)
        await receive(db, code, "SPLIT", units)
    rng = random.Random(42)
    wants = [rng.randint(1, 3) for _ in range(200)]
    pool = _databases(db)
    try:
        results = await asyncio.gather(
            *(
                _buy(
                    pool[i % len(pool)], order_for([("SPLIT", q)], rng.choice(["北京市", "广东省"]))
                )
                for i, q in enumerate(wants)
            )
        )
    finally:
        for extra in pool[1:]:
            await extra.dispose()
    sold = [q for q, r in zip(wants, results, strict=True) if r != "insufficient"]
    assert 48 <= sum(sold) <= 50  # the last buyers may want more than the remainder
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Stock).where(Stock.sku == "SPLIT"))).all()
        assert all(0 <= r.reserved <= r.on_hand for r in rows)
        assert sum(r.reserved for r in rows) == sum(sold)
        # every accepted order's reservations add up to its line quantity
        per_order = (
            await session.execute(
                select(Reservation.order_id, func.sum(Reservation.quantity)).group_by(
                    Reservation.order_id
                )
            )
        ).all()
        orders = {o.order_no: o.id for o in (await session.scalars(select(SalesOrder))).all()}
    reserved_by_id = dict(per_order)
    for q, r in zip(wants, results, strict=True):
        if r != "insufficient":
            assert reserved_by_id[orders[r]] == q


async def test_two_lines_of_one_sku_against_stock_of_one_are_refused(db: Database) -> None:
    await add_warehouse(db, "ONE")
    await receive(db, "ONE", "SOLO", 1)
    assert await _buy(db, order_for([("SOLO", 1), ("SOLO", 1)])) == "insufficient"
    assert await _stock_totals(db, "SOLO") == (1, 0)
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 0


async def test_expiring_reservations_race_payments(db: Database) -> None:
    # Given 1,000 unpaid orders whose reservations expire now
    await add_warehouse(db, "EXP")
    await receive(db, "EXP", "RACE", 1000)
    past = clock.now() - timedelta(hours=2)
    order_nos: list[str] = []
    with clock.frozen(past):
        for chunk in range(10):
            async with db.transaction() as session:
                for _ in range(100):
                    snap, _ = await creation.create_order(
                        session,
                        order_for([("RACE", 1)], channel=f"c{chunk}"),
                        BUYER,
                        check_fingerprint=False,
                    )
                    order = snap.order
                    order_nos.append(order.order_no)
    # When payments for half of them race the sweep
    paid = set(random.Random(7).sample(order_nos, 500))

    async def pay(order_no: str) -> None:
        async with db.transaction() as session:
            await transitions.transition(
                session, order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "wx")
            )

    async def sweep() -> None:
        for _ in range(20):
            async with db.transaction() as session:
                await inventory_service.sweep_expired(session, clock.now(), limit=100)
            await asyncio.sleep(0)

    await asyncio.gather(sweep(), *(pay(no) for no in sorted(paid)))
    async with db.transaction() as session:
        await inventory_service.sweep_expired(session, clock.now(), limit=10_000)
    # Then every reservation is either committed (paid) or released (unpaid), never both
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(SalesOrder.order_no, Reservation.state, Reservation.quantity).join(
                    Reservation, Reservation.order_id == SalesOrder.id
                )
            )
        ).all()
    states: dict[str, list[str]] = {}
    for order_no, state, _ in rows:
        states.setdefault(order_no, []).append(state)
    for order_no in order_nos:
        live = [s for s in states[order_no] if s == "committed"]
        if order_no in paid:
            assert len(live) == 1, states[order_no]
        else:
            assert states[order_no] == ["released"]
    assert await _stock_totals(db, "RACE") == (1000, 500)
    assert await _live_reserved(db, "RACE") == 500
