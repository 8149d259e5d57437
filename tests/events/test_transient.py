"""A deadlock PostgreSQL reports through SQLAlchemy is recognised as transient (the dispatcher
runs the batch again instead of counting a failure, `Database.run` runs a request's unit of work
again instead of answering 500); other errors are not. The deadlocks are real ones, made over two
connections."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ordertally.core.db import Database, is_transient
from ordertally.inventory.models import Stock
from tests.conftest import ONLY_PG

pytestmark = pytest.mark.anyio


def _touch(stock_id: int):  # type: ignore[no-untyped-def]
    return update(Stock).where(Stock.id == stock_id).values(on_hand=Stock.on_hand)


async def test_a_real_deadlock_is_transient_and_a_constraint_is_not(db: Database) -> None:
    async with db.transaction(write=False) as session:
        first, second = list(await session.scalars(select(Stock.id).order_by(Stock.id).limit(2)))
    if not db.is_sqlite:
        both_hold = asyncio.Barrier(2)

        async def cross(mine: int, theirs: int) -> None:
            async with db.transaction() as session:
                await session.execute(_touch(mine))
                await both_hold.wait()
                await session.execute(_touch(theirs))

        # When two transactions take the same two rows in opposite orders
        outcomes = await asyncio.gather(
            cross(first, second), cross(second, first), return_exceptions=True
        )
        # Then PostgreSQL aborts one of them, and that error is transient
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(errors) == 1, outcomes
        assert isinstance(errors[0], DBAPIError)
        assert is_transient(errors[0])
    # And an integrity error (a duplicate key) is not
    with pytest.raises(IntegrityError) as duplicate:
        async with db.transaction() as session:
            row = await session.get(Stock, first)
            assert row is not None
            session.add(
                Stock(
                    warehouse_id=row.warehouse_id,
                    sku=row.sku,
                    bucket=row.bucket,
                    on_hand=0,
                    reserved=0,
                    safety_stock=0,
                )
            )
            await session.flush()
    assert not is_transient(duplicate.value)
    assert not is_transient(ValueError("not a database error"))


@ONLY_PG  # SQLite has one writer: no deadlock between two transactions
async def test_a_unit_of_work_that_loses_a_deadlock_runs_again_and_commits(db: Database) -> None:
    async with db.transaction(write=False) as session:
        first, second = list(await session.scalars(select(Stock.id).order_by(Stock.id).limit(2)))
    first_held, worker_holds = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    async def request(session):  # type: ignore[no-untyped-def]
        # Given a request's unit of work that takes the first row, then the second
        runs.append(1)
        await session.execute(_touch(first))
        first_held.set()
        if len(runs) == 1:
            await worker_holds.wait()
        await session.execute(_touch(second))
        return "done"

    async def worker() -> None:
        # And a worker batch that takes the second row, then (after the request started waiting
        # on it, so the request is the one PostgreSQL aborts) the first
        async with db.transaction() as session:
            await first_held.wait()
            await session.execute(_touch(second))
            worker_holds.set()
            await asyncio.sleep(0.3)
            await session.execute(_touch(first))

    # When both run at once
    outcome, _ = await asyncio.gather(db.run(request), worker())
    # Then the request lost the deadlock, ran again from the start and committed
    assert outcome == "done"
    assert len(runs) == 2


async def test_a_unit_of_work_is_not_run_again_for_an_ordinary_error(db: Database) -> None:
    runs: list[int] = []

    async def request(session):  # type: ignore[no-untyped-def]
        runs.append(1)
        raise ValueError("a bug, not a race")

    with pytest.raises(ValueError):
        await db.run(request)
    assert runs == [1]
