"""`Database.reads()`: read-only work without BEGIN and COMMIT round trips on PostgreSQL (each
statement on its own, in autocommit), and the pooled connection back in transactions after it;
a read transaction on SQLite. `Database.fetch`: one read through the driver on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from ordertally.core.db import Database
from tests.conftest import ONLY_PG, ONLY_SQLITE

pytestmark = pytest.mark.anyio

# The id of the transaction a statement runs in: two statements of one transaction share it.
XID = text("SELECT txid_current()")


@ONLY_PG  # autocommit reads are PostgreSQL's; SQLite keeps its read transaction
async def test_reads_run_each_statement_on_its_own_then_the_connection_is_transactional_again(
    db: Database,
) -> None:
    one = Database(db.url, pool_size=1)  # one connection, reused by every block below
    try:
        # Given the connection in a reads() block
        async with one.reads() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            # Then each statement runs in a transaction of its own
            assert await session.scalar(XID) != await session.scalar(XID)
        # When the same connection then serves a transaction
        async with one.transaction(write=False) as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) == pid
            # Then its statements share one transaction again
            assert await session.scalar(XID) == await session.scalar(XID)
        # And a write transaction still rolls back as a whole
        with pytest.raises(RuntimeError):
            async with one.transaction() as session:
                await session.execute(text("CREATE TEMP TABLE reads_probe (n int)"))
                raise RuntimeError("roll back")
        async with one.reads() as session:
            assert await session.scalar(text("SELECT to_regclass('reads_probe')")) is None
    finally:
        await one.dispose()


@ONLY_SQLITE  # SQLite's case
async def test_reads_on_sqlite_are_one_read_transaction(db: Database) -> None:
    count = text("SELECT count(*) FROM search_synonym")
    # Given a reads() block that has read
    async with db.reads() as session:
        before = await session.scalar(count)
        # When another connection commits a row meanwhile
        async with db.transaction() as writer:
            await writer.execute(
                text(
                    "INSERT INTO search_synonym (term, synonym, created_by, created_at) "
                    "VALUES ('iphone', '苹果手机', 'test', '2026-01-25 00:00:00')"
                )
            )
        # Then the block still reads its own snapshot (one read transaction)
        assert await session.scalar(count) == before
    # And a new block sees the row
    async with db.reads() as session:
        assert await session.scalar(count) == before + 1


async def test_fetch_reads_through_the_driver_and_does_not_reuse_a_connection_left_unsure(
    db: Database, backend: str
) -> None:
    if backend != "pg":
        # SQLite has no driver path: its callers read through a session
        with pytest.raises(NotImplementedError):
            await db.fetch("SELECT 1")
        return
    one = Database(db.url, pool_size=1)  # the pool hands the same idle connection back
    try:
        # Given a read through the driver, with $n parameters
        ((pid, answer),) = await one.fetch("SELECT pg_backend_pid(), $1::int + 1", 41)
        assert answer == 42
        # Then each statement runs on its own (autocommit), on the same pooled connection
        (first,), (second,) = [(await one.fetch("SELECT txid_current()"))[0] for _ in "ab"]
        assert first != second
        assert (await one.fetch("SELECT pg_backend_pid()"))[0][0] == pid
        # When PostgreSQL refuses a statement
        with pytest.raises(Exception) as refused:
            await one.fetch("SELECT 1 / $1::int", 0)
        assert getattr(refused.value, "sqlstate", None) == "22012"
        # Then the connection is as it was, and handed out again
        assert (await one.fetch("SELECT pg_backend_pid()"))[0][0] == pid
        # When a read is cancelled mid-statement (a request's deadline)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(one.fetch("SELECT pg_sleep(5)"), 0.3)
        # Then that connection is not handed out again: the next read gets a new one, and works
        assert (await one.fetch("SELECT pg_backend_pid()"))[0][0] != pid
        assert await one.read_one("SELECT 7") == 7
        async with one.transaction(write=False) as session:
            assert await session.scalar(text("SELECT 8")) == 8
    finally:
        await one.dispose()
