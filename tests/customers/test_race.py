"""Two workers linking orders of the same new phone at once through the batch path
(`service.link_orders`, what the `customers.link_order` batch consumer calls): on PostgreSQL
the second one's phone identity conflicts with the first one's, still uncommitted; on SQLite the
single writer runs them one after the other. Either way: one live customer, every order linked."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from ordertally.core.db import Database
from ordertally.customers import service
from ordertally.customers.models import Customer, CustomerIdentity, CustomerOrder
from tests.customers.helpers import customer_of, live_customers, order, profile

pytestmark = pytest.mark.anyio


async def _until_a_backend_waits_on_a_lock(db: Database) -> None:
    """Poll, on a connection of its own, until a backend of this database waits on a lock."""
    watcher = Database(db.url, pool_size=1)
    try:
        async with asyncio.timeout(20):
            while True:
                async with watcher.transaction(write=False) as session:
                    waiting = await session.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                if waiting:
                    return
                await asyncio.sleep(0.02)
    finally:
        await watcher.dispose()


async def test_two_workers_batch_linking_one_new_phone_make_one_customer(db: Database) -> None:
    # Given six orders of one buyer nobody knows yet, three in each worker's batch
    orders = [await order(db, "13812345678", channel="wechat_mini") for _ in range(6)]
    first = {o.order_no: None for o in orders[:3]}
    second = {o.order_no: None for o in orders[3:]}
    other = Database(db.url, pool_size=2)
    linked_first = asyncio.Event()
    try:

        async def worker_a() -> None:
            async with db.transaction() as session:
                await service.link_orders(session, first)
                linked_first.set()
                # Commit only once the other worker is linking: on PostgreSQL once it waits on
                # this transaction's phone identity (a fixed sleep let a slow machine commit
                # first, and the second worker then found the phone without a race); on
                # SQLite it waits for the writer.
                if db.url.startswith("postgresql"):
                    await _until_a_backend_waits_on_a_lock(db)
                else:
                    await asyncio.sleep(0.5)

        async def worker_b() -> None:
            await linked_first.wait()
            async with other.transaction() as session:
                await service.link_orders(session, second)

        # When both workers link their batch at the same time
        await asyncio.wait_for(asyncio.gather(worker_a(), worker_b()), timeout=30)
    finally:
        await other.dispose()
    # Then there is one live customer, owning the phone once
    (customer_id,) = await live_customers(db)
    async with db.transaction(write=False) as session:
        identities = (
            await session.execute(select(CustomerIdentity.customer_id, CustomerIdentity.kind))
        ).all()
        links = await session.scalar(select(func.count()).select_from(CustomerOrder))
        customers = await session.scalar(select(func.count()).select_from(Customer))
    assert [tuple(i) for i in identities] == [(customer_id, "phone_bidx")]
    # And every order is linked to it, none lost
    assert links == 6
    assert {await customer_of(db, o.order_no) for o in orders} == {customer_id}
    assert (await profile(db, customer_id)).orders_90d == 6
    # And on PostgreSQL the customer the second worker made before it lost the race for the
    # phone was merged into the first one's; on SQLite the second worker found the phone taken
    if db.url.startswith("postgresql"):
        async with db.transaction(write=False) as session:
            merged = (
                await session.scalars(
                    select(Customer.merged_into_id).where(Customer.id != customer_id)
                )
            ).all()
        assert (customers, list(merged)) == (2, [customer_id])
    else:
        assert customers == 1
