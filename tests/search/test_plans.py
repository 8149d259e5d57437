"""The database's plan of every shape of search (the doctor's `search_plan` check), on both
databases: the index is read, and on PostgreSQL no search starts parallel workers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.ops import doctor
from ordertally.search import service

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


async def test_the_app_never_lets_postgresql_start_parallel_workers(
    db: Database, backend: str
) -> None:
    if backend != "pg":
        pytest.skip("parallel workers are PostgreSQL's")
    # Given a connection of the app (API, worker and commands open theirs the same way)
    async with db.reads() as session:
        # Then PostgreSQL may plan no Gather for it: each would fork processes per statement
        setting = await session.scalar(text("SHOW max_parallel_workers_per_gather"))
    assert setting == "0"


async def test_the_doctor_fails_a_plan_that_gathers_from_parallel_workers(
    db: Database, backend: str
) -> None:
    if backend != "pg":
        pytest.skip("parallel workers are PostgreSQL's")
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
