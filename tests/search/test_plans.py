"""What a search costs the database, on both: the plan of every shape of search (the doctor's
`search_plan` check: the index is read, and on PostgreSQL no search starts parallel workers),
and the statements of a search request (one of its own; the catalogue's word revision read
shared by concurrent searches)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.ops import doctor
from ordertally.search import service
from tests.conftest import ONLY_PG
from tests.factories import auth

pytestmark = pytest.mark.anyio


async def test_every_search_shape_reads_the_index_and_starts_no_parallel_worker(
    db: Database, backend: str
) -> None:
    # Given the app's own connection, on PostgreSQL with the planner told that nothing is
    # cheaper than the index (an empty test table would otherwise rightly be read whole) and
    # to put a Gather over every plan it may run in parallel (a search that looks large would
    # get one, at a million orders)
    async with db.transaction(write=False) as session:
        if backend == "pg":
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL force_parallel_mode = on"))
        # When the doctor asks for the plan of each shape of search
        plans = await service.plans(session)
    # Then every one reads the index, and none gathers from parallel workers
    assert [p.query for p in plans] == list(service.PLAN_QUERIES)
    assert [p.query for p in plans if not p.uses_index] == []
    assert [p.query for p in plans if p.parallel] == []


@ONLY_PG  # parallel workers are PostgreSQL's
async def test_the_app_never_lets_postgresql_start_parallel_workers(db: Database) -> None:
    # Given a connection of the app (API, worker and commands open theirs the same way)
    async with db.reads() as session:
        # Then PostgreSQL may plan no Gather for it: each would fork processes per statement
        setting = await session.scalar(text("SHOW max_parallel_workers_per_gather"))
        # nor compile a statement with LLVM (JIT: ~110 ms for a search estimated large at 10M)
        jit = await session.scalar(text("SHOW jit"))
    assert (setting, jit) == ("0", "off")


@ONLY_PG  # parallel workers are PostgreSQL's
async def test_the_doctor_fails_a_plan_that_gathers_from_parallel_workers(db: Database) -> None:
    # Given a connection that allows parallel workers (the server's default, not the app's),
    # made to put a Gather over every plan it can (as a search that looks large would get)
    async with db.transaction(write=False) as session:
        await session.execute(text("SET LOCAL max_parallel_workers_per_gather = 2"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL force_parallel_mode = on"))
        # When the doctor checks the search plans
        checks = {c.name: c for c in await doctor._search_checks(session, get_settings())}
    # Then the check fails, naming the searches that would start workers
    check = checks["search_plan"]
    assert check.ok is False
    assert check.data["parallel"] == list(service.PLAN_QUERIES)
    assert "parallel workers" in check.detail


def statements_on(db: Database) -> list[str]:
    """Every statement the app sends from now on (both engines), in order: those SQLAlchemy
    executes, and on PostgreSQL those read straight through the driver (`Database.fetch`: the
    driver's query log of each connection the pool hands out; SQLAlchemy's own statements run as
    prepared statements, which the driver does not log, so none is counted twice)."""
    sent: list[str] = []
    logged: set[int] = set()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    def log_driver(_dbapi: Any, _record: Any, proxy: Any) -> None:
        driver = proxy.driver_connection
        if not db.is_sqlite and id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(lambda query: sent.append(query.query))

    for engine in {db.write_engine, db.read_engine}:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        event.listen(engine.sync_engine, "checkout", log_driver)
    return sent


async def test_a_search_request_sends_one_statement_and_shares_the_word_revision_read(
    client: httpx.AsyncClient, db: Database, keys: dict[str, str]
) -> None:
    async def search(q: str) -> None:
        r = await client.get("/api/v1/search", params={"q": q}, headers=auth(keys["cs"]))
        assert r.status_code == 200, r.text
        # asyncpg calls its query loggers with `loop.call_soon`: let them run (a request that
        # ends in its own task leaves them queued when the answer is back)
        await asyncio.sleep(0)

    await search("张三")  # warm: the synonyms are read at most every few seconds
    sent = statements_on(db)

    def reading(table: str) -> int:
        return sum(f"FROM {table}" in s for s in sent)

    # When one search request is answered
    await search("张三 5678 20260125")
    # Then it sent one statement for the search itself, and one read of the word revision
    assert (reading("search_doc"), reading("catalog_revision")) == (1, 1)
    # When ten searchers ask at once
    sent.clear()
    await asyncio.gather(*(search(f"张三 {n:04d}") for n in range(10)))
    # Then each search is one statement, and the word revision reads were shared
    assert reading("search_doc") == 10
    assert reading("catalog_revision") < 10
