"""Migration 0037 on both databases: the orders whose indexed events the outbox has not yet
delivered when the indexer leaves the chain are queued for the search lane (else the chain
would acknowledge their changes without the index seeing them)."""

from __future__ import annotations

import anyio
import pytest
from alembic import command
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.ops.migrations import alembic_config
from ordertally.search.models import SearchDirty
from tests.factories import make_order

pytestmark = pytest.mark.anyio


async def test_upgrading_queues_the_orders_whose_events_are_undelivered(
    db: Database, database_url: str
) -> None:
    # Given an order whose events were delivered, and one whose creation is still pending
    delivered = await make_order(db)
    await drain(db, get_settings())
    pending = await make_order(db)
    await db.dispose()  # no pooled connection holds the table the downgrade drops
    config = alembic_config(database_url)
    try:
        # When the database goes back to 0036 (no queue) and up to 0037
        await anyio.to_thread.run_sync(command.downgrade, config, "0036")
        await anyio.to_thread.run_sync(command.upgrade, config, "0037")
    finally:
        await anyio.to_thread.run_sync(command.upgrade, config, "head")
    # Then the queue holds the undelivered order only
    async with db.transaction(write=False) as session:
        queued = (await session.scalars(select(SearchDirty.order_id))).all()
    assert list(queued) == [pending.id]
    assert delivered.id != pending.id
