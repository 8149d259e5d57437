"""200 concurrent buyers of a bundle and of one of its components, over real connections: the
components are never oversold and each order got all of its units or none."""

import asyncio

import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import creation
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import Actor, ActorKind
from tests.factories import add_bundle, add_warehouse, order_for, receive

pytestmark = pytest.mark.anyio

BUYER = Actor(ActorKind.API, "buyer")


async def _buy(db: Database, cmd: OrderCreate) -> str | None:
    try:
        async with db.transaction() as session:
            snap, _ = await creation.create_order(session, cmd, BUYER, check_fingerprint=False)
        return snap.order.order_no
    except InsufficientStock:
        return None


async def test_200_buyers_of_a_bundle_and_its_component(db: Database) -> None:
    # Given a box of one tea and two cups, 40 teas and 60 cups (cups spread over 4 buckets)
    await add_warehouse(db, "HOT")
    await add_bundle(db, "RACE-BOX", {"RACE-TEA": 1, "RACE-CUP": 2})
    await receive(db, "HOT", "RACE-TEA", 40)
    await receive(db, "HOT", "RACE-CUP", 60)
    from ordertally.inventory import service as inventory_service

    async with db.transaction() as session:
        await inventory_service.configure_stock(
            session, warehouse_code="HOT", sku="RACE-CUP", safety_stock=None, buckets=4
        )
    pool = [db] if not db.is_sqlite else [db, Database(db.url), Database(db.url)]
    try:
        # When 100 buyers want a box and 100 want one cup, all at once
        wants = ["RACE-BOX" if i % 2 == 0 else "RACE-CUP" for i in range(200)]
        results = await asyncio.gather(
            *(_buy(pool[i % len(pool)], order_for([(sku, 1)])) for i, sku in enumerate(wants))
        )
    finally:
        for extra in pool[1:]:
            await extra.dispose()
    boxes = sum(1 for r, w in zip(results, wants, strict=True) if r and w == "RACE-BOX")
    cups = sum(1 for r, w in zip(results, wants, strict=True) if r and w == "RACE-CUP")
    async with db.transaction(write=False) as session:
        stock = dict(
            (
                await session.execute(
                    select(Stock.sku, func.sum(Stock.reserved))
                    .where(Stock.sku.in_(("RACE-TEA", "RACE-CUP", "RACE-BOX")))
                    .group_by(Stock.sku)
                )
            ).all()
        )
        live = dict(
            (
                await session.execute(
                    select(Reservation.sku, func.sum(Reservation.quantity))
                    .where(Reservation.state == "held")
                    .group_by(Reservation.sku)
                )
            ).all()
        )
    # Then every cup is taken (a refused cup buyer saw none left), none twice: each box holds
    # one tea and two cups, each cup order one cup, and the books agree with the rows
    assert stock == {"RACE-TEA": boxes, "RACE-CUP": 2 * boxes + cups}
    assert 2 * boxes + cups == 60 and boxes <= 40
    assert live == stock
    assert boxes + cups == sum(1 for r in results if r)
