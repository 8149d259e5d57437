"""The stock-row lock order across several orders in one transaction (issue 21's drill
deadlock): a payment batch that reserves again for orders whose reservations were swept takes
one sorted lock set, so a ship holding a low stock row and then wanting a high one cannot close
a cycle with it.

On PostgreSQL the interleaving is driven step by step over two connections: the ship's
transaction holds the low row, the batch starts and is seen waiting (pg_stat_activity), then the
ship asks for the high row. Taken order by order, the batch would hold the high row while
waiting for the low one: PostgreSQL reports a deadlock. SQLite has one writer at a time; there
the same two transactions run one after the other and the end state is checked.
"""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.fulfillment import consumers as fulfillment_consumers  # noqa: F401
from ordertally.fulfillment import shipping as fulfillment_shipping
from ordertally.fulfillment.shiplist import ShipRow
from ordertally.inventory import service as inventory_service
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import creation, transitions
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind
from tests.factories import add_warehouse, order_for, receive

pytestmark = pytest.mark.anyio

BUYER = Actor(ActorKind.API, "buyer")
CALLBACK = Actor(ActorKind.PAYMENT_CALLBACK, "wx")


async def _swept_orders(db: Database) -> tuple[dict[str, int], list[int]]:
    """Stock of LOW (lower stock id) and HIGH; order A buys HIGH, then order B buys LOW, both
    unpaid long ago and swept. Returns ({sku: stock id}, [A id, B id])."""
    await add_warehouse(db, "DL")
    await receive(db, "DL", "LOCK-LOW", 10)
    await receive(db, "DL", "LOCK-HIGH", 10)
    ids: list[int] = []
    with clock.frozen(clock.now() - timedelta(hours=3)):
        for sku in ("LOCK-HIGH", "LOCK-LOW"):
            async with db.transaction() as session:
                snap, _ = await creation.create_order(
                    session, order_for([(sku, 1)]), BUYER, check_fingerprint=False
                )
                ids.append(snap.order.id)
    async with db.transaction() as session:
        assert await inventory_service.sweep_expired(session, clock.now()) == 2
        stock = dict(
            (
                await session.execute(
                    select(Stock.sku, Stock.id).where(Stock.sku.in_(("LOCK-LOW", "LOCK-HIGH")))
                )
            ).all()
        )
    assert stock["LOCK-LOW"] < stock["LOCK-HIGH"]
    return stock, ids


async def _pay_batch(db: Database, order_ids: list[int], started: asyncio.Future[int]) -> None:
    """The payment worker's batch: both orders paid in one transaction (order id order)."""
    async with db.transaction() as session:
        pid = 0 if db.is_sqlite else int(await session.scalar(text("SELECT pg_backend_pid()")))
        started.set_result(pid)
        moved = await transitions.transition_many(
            session, order_ids, "payment_succeeded", {i: CALLBACK for i in order_ids}
        )
    assert moved == set(order_ids)


async def _waiting_for_a_lock(db: Database, pid: int) -> None:
    for _ in range(200):
        async with db.transaction(write=False) as session:
            event = await session.scalar(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            )
        if event == "Lock":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the payment batch never waited for the ship's stock row")


def _touch(stock_id: int):  # type: ignore[no-untyped-def]
    """The row lock a ship's consume takes (the same UPDATE, changing nothing)."""
    return update(Stock).where(Stock.id == stock_id).values(on_hand=Stock.on_hand)


async def test_a_payment_batch_reserving_again_and_a_ship_do_not_deadlock(db: Database) -> None:
    stock, order_ids = await _swept_orders(db)
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    if db.is_sqlite:
        await _pay_batch(db, order_ids, started)
        async with db.transaction() as session:
            await session.execute(_touch(stock["LOCK-LOW"]))
            await session.execute(_touch(stock["LOCK-HIGH"]))
    else:
        # Given a ship holding the LOW row
        async with db.transaction() as ship:
            await ship.execute(_touch(stock["LOCK-LOW"]))
            # When the payment batch (A: HIGH, then B: LOW) runs and waits for a row
            batch = asyncio.ensure_future(_pay_batch(db, order_ids, started))
            await _waiting_for_a_lock(db, await asyncio.wait_for(started, 10))
            # And the ship then takes the HIGH row and commits
            await ship.execute(_touch(stock["LOCK-HIGH"]))
        # Then the batch completes too: no deadlock on either side
        await asyncio.wait_for(batch, 30)
    async with db.transaction(write=False) as session:
        statuses = set(
            await session.scalars(select(SalesOrder.status).where(SalesOrder.id.in_(order_ids)))
        )
        committed = await session.scalar(
            select(func.count()).where(
                Reservation.order_id.in_(order_ids), Reservation.state == "committed"
            )
        )
        reserved = dict(
            (
                await session.execute(
                    select(Stock.sku, Stock.reserved).where(Stock.id.in_(list(stock.values())))
                )
            ).all()
        )
    assert statuses == {"paid"}
    assert committed == 2
    assert reserved == {"LOCK-LOW": 1, "LOCK-HIGH": 1}


async def _paid_orders(db: Database) -> tuple[dict[str, int], list[str]]:
    """Paid and allocated: order A buys HIGH, then order B buys LOW (one shipment each)."""
    await add_warehouse(db, "DL")
    await receive(db, "DL", "LOCK-LOW", 10)
    await receive(db, "DL", "LOCK-HIGH", 10)
    order_nos: list[str] = []
    for sku in ("LOCK-HIGH", "LOCK-LOW"):
        async with db.transaction() as session:
            snap, _ = await creation.create_order(
                session, order_for([(sku, 1)]), BUYER, check_fingerprint=False
            )
            await transitions.transition(
                session, snap.order.order_no, "payment_succeeded", CALLBACK
            )
            order_nos.append(snap.order.order_no)
    await drain(db, get_settings())
    async with db.transaction(write=False) as session:
        stock = dict(
            (
                await session.execute(
                    select(Stock.sku, Stock.id).where(Stock.sku.in_(("LOCK-LOW", "LOCK-HIGH")))
                )
            ).all()
        )
    return stock, order_nos


async def _ship_list(db: Database, order_nos: list[str], started: asyncio.Future[int]) -> None:
    """The warehouse's shipped list: both orders in one upload (one transaction), A first."""
    rows = [
        ShipRow(line, no, None, "zhongtong", f"ZT71000000000{line}")
        for line, no in enumerate(order_nos, start=2)
    ]
    async with db.transaction() as session:
        pid = 0 if db.is_sqlite else int(await session.scalar(text("SELECT pg_backend_pid()")))
        started.set_result(pid)
        results = await fulfillment_shipping.ship_rows(
            session, rows, Actor(ActorKind.WAREHOUSE, "wh")
        )
    assert [r["result"] for r in results] == ["shipped", "shipped"], results


async def test_a_shipped_list_and_another_ship_do_not_deadlock(db: Database) -> None:
    stock, order_nos = await _paid_orders(db)
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    if db.is_sqlite:
        await _ship_list(db, order_nos, started)
    else:
        # Given another ship holding the LOW row
        async with db.transaction() as ship:
            await ship.execute(_touch(stock["LOCK-LOW"]))
            # When the shipped list (A: HIGH, then B: LOW) is applied and waits for a row
            upload = asyncio.ensure_future(_ship_list(db, order_nos, started))
            await _waiting_for_a_lock(db, await asyncio.wait_for(started, 10))
            # And the other ship then takes the HIGH row and commits
            await ship.execute(_touch(stock["LOCK-HIGH"]))
        # Then the list is applied too: no deadlock on either side
        await asyncio.wait_for(upload, 30)
    async with db.transaction(write=False) as session:
        on_hand = dict(
            (
                await session.execute(
                    select(Stock.sku, Stock.on_hand).where(Stock.id.in_(list(stock.values())))
                )
            ).all()
        )
        statuses = set(
            await session.scalars(
                select(SalesOrder.status).where(SalesOrder.order_no.in_(order_nos))
            )
        )
    assert on_hand == {"LOCK-LOW": 9, "LOCK-HIGH": 9}
    assert statuses == {"shipped"}
