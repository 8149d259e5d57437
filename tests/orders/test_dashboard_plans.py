"""The dashboard's count of the last day's orders per status is an index range, without the
table, on both databases (issue 20): without it PostgreSQL walked the whole of
(status, created_at), 78 ms at a million orders, on every dashboard load and refresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text

from ordertally.core import clock
from ordertally.core.db import Database, dialect_of
from ordertally.orders import repository
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import STATUSES
from tests.factories import make_order

pytestmark = pytest.mark.anyio
INDEX = "ix_sales_order_created_at_status"
CLONES = 400  # a month of orders, two an hour: enough statistics to plan with


async def clone_a_month(db: Database) -> None:
    """One order through the services, then clones of its row two an hour over 30 days in
    every status, and fresh statistics."""
    template = await make_order(db)
    async with db.transaction() as session:
        row = (
            (
                await session.execute(
                    select(SalesOrder.__table__).where(SalesOrder.id == template.id)
                )
            )
            .mappings()
            .one()
        )
        base = {k: v for k, v in row.items() if k != "id"}
        await session.execute(
            insert(SalesOrder.__table__),
            [
                base
                | {
                    "order_no": f"{template.order_no}-{i}",
                    "external_id": f"CLONE-{i}",
                    "status": STATUSES[i % len(STATUSES)],
                    "created_at": clock.now() - timedelta(minutes=30 * (i + 1)),
                }
                for i in range(CLONES)
            ],
        )
    if db.is_sqlite:
        async with db.transaction() as session:
            await session.execute(text("ANALYZE sales_order"))
        return
    # VACUUM too: the tests' cleanup deletes rows (it does not truncate), so the table's pages
    # are not all-visible until a vacuum marks them, and an index-only scan would not be chosen.
    async with db.write_engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE sales_order"))


async def test_the_last_days_counts_per_status_read_the_created_at_status_index(
    db: Database,
) -> None:
    # Given a month of orders and the statement the dashboard runs for the last 24 hours
    await clone_a_month(db)
    stmt = repository.status_counts_since_statement(clock.now() - timedelta(hours=24))
    async with db.transaction(write=False) as session:
        dialect = dialect_of(session)
        sql = stmt.compile(
            dialect=session.bind.dialect,  # type: ignore[union-attr]
            compile_kwargs={"literal_binds": True},
        )
        if dialect == "postgresql":
            # An empty table is read sequentially; take that choice away to see the index's.
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL enable_bitmapscan = off"))
        prefix = "EXPLAIN " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
        # When the database plans it
        rows = (await session.execute(text(prefix + str(sql)))).all()
    plan = "\n".join(" ".join(str(c) for c in row) for row in rows)
    # Then it is a range of the (created_at, status) index, without the table
    if dialect == "postgresql":
        assert f"Index Only Scan using {INDEX}" in plan, plan
    else:
        # SQLite may skip-scan (status, created_at) over the few statuses instead: a search of
        # an index all the same, never a scan of the table or of a whole index.
        assert "SEARCH sales_order USING COVERING INDEX" in plan, plan
        assert "created_at>" in plan, plan


async def test_orders_per_minute_are_counted_in_the_database_per_utc_minute(db: Database) -> None:
    # Given orders created at 10:00:05, two at 10:01:35 and 10:01:59, one at 10:04:00
    with clock.frozen(clock.now().replace(hour=10, minute=0, second=5, microsecond=0)):
        start = clock.now().replace(second=0)
        await make_order(db)
        clock.advance(timedelta(seconds=90))
        await make_order(db)
        clock.advance(timedelta(seconds=24))
        await make_order(db)
        clock.advance(timedelta(seconds=121))
        await make_order(db)
        # When the dashboard counts them per minute since 10:00
        async with db.transaction(write=False) as session:
            counts = await repository.created_per_minute(session, start)
    # Then each minute holds its orders, as UTC minutes
    assert counts == {
        start: 1,
        start + timedelta(minutes=1): 2,
        start + timedelta(minutes=4): 1,
    }
    assert all(m.tzinfo is not None and m.utcoffset() == timedelta(0) for m in counts)
