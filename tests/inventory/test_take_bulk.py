"""`inventory.service.take_bulk`: a batch's units per stock row, taken last before COMMIT. On
PostgreSQL several rows go in two statements (ADR 0022 addendum): it must take every row or say
it could not, and it must lock the rows in stock id order as the row-by-row loop did, so two
batches (or a batch and a ship) cannot close a lock cycle."""

import asyncio

import pytest
from sqlalchemy import select, text, update

from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from ordertally.inventory.models import Stock
from tests.conftest import ONLY_PG
from tests.factories import add_warehouse, receive

pytestmark = pytest.mark.anyio


async def _stock(db: Database, units: dict[str, int]) -> dict[str, int]:
    """One warehouse with these SKUs on hand; {sku: stock id}."""
    await add_warehouse(db, "TB")
    for sku, quantity in units.items():
        await receive(db, "TB", sku, quantity)
    async with db.transaction(write=False) as session:
        rows = await session.execute(select(Stock.sku, Stock.id).where(Stock.sku.in_(units)))
        return dict(rows.all())  # type: ignore[arg-type]


async def _reserved(db: Database, ids: list[int]) -> dict[int, int]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(select(Stock.id, Stock.reserved).where(Stock.id.in_(ids)))
        return dict(rows.all())  # type: ignore[arg-type]


async def test_every_row_is_taken_or_none(db: Database) -> None:
    ids = await _stock(db, {"TB-A": 5, "TB-B": 5, "TB-C": 2})
    a, b, c = ids["TB-A"], ids["TB-B"], ids["TB-C"]

    async with db.transaction() as session:
        assert await inventory_service.take_bulk(session, {c: 1, a: 2, b: 3})
    assert await _reserved(db, [a, b, c]) == {a: 2, b: 3, c: 1}

    # One row short (C has 1 left): refused, and the caller's rollback leaves every row as it was
    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with db.transaction() as session:
            if not await inventory_service.take_bulk(session, {a: 1, b: 1, c: 2}):
                raise Refused
    assert await _reserved(db, [a, b, c]) == {a: 2, b: 3, c: 1}

    # Rows with nothing to take are skipped
    async with db.transaction() as session:
        assert await inventory_service.take_bulk(session, {a: 0, b: 2, c: 1})
    assert await _reserved(db, [a, b, c]) == {a: 2, b: 5, c: 2}


@ONLY_PG  # SQLite has one writer at a time: no lock order between transactions
async def test_rows_are_locked_in_stock_id_order(db: Database) -> None:
    ids = await _stock(db, {"TB-LOW": 10, "TB-HIGH": 10})
    low, high = ids["TB-LOW"], ids["TB-HIGH"]
    assert low < high
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def batch() -> bool:
        async with db.transaction() as session:
            started.set_result(int(await session.scalar(text("SELECT pg_backend_pid()"))))
            return await inventory_service.take_bulk(session, {high: 1, low: 1})

    touch = update(Stock).values(on_hand=Stock.on_hand)
    # Given another transaction holding the LOW row
    async with db.transaction() as other:
        await other.execute(touch.where(Stock.id == low))
        # When the batch runs, it waits for LOW before it has locked HIGH
        running = asyncio.ensure_future(batch())
        pid = await asyncio.wait_for(started, 10)
        for _ in range(200):
            async with db.transaction(write=False) as session:
                event = await session.scalar(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid},
                )
            if event == "Lock":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the batch never waited for the LOW row")
        # So the other transaction can still take HIGH (a batch locking HIGH first would make
        # this a deadlock, and PostgreSQL would abort one side)
        await asyncio.wait_for(other.execute(touch.where(Stock.id == high)), 10)
    assert await asyncio.wait_for(running, 30)
    assert await _reserved(db, [low, high]) == {low: 1, high: 1}


@ONLY_PG  # SQLite has one writer at a time: no row locks
async def test_a_reservation_written_on_a_row_does_not_block_taking_it(db: Database) -> None:
    """Another batch that has inserted reservations on a row holds a FOR KEY SHARE lock on it
    (the foreign key's check) until it commits. Taking the row's units must not wait for that:
    an UPDATE takes FOR NO KEY UPDATE, which does not conflict with it, and the rows must be
    locked the same way (FOR UPDATE would wait, and two batches would deadlock)."""
    ids = await _stock(db, {"TB-KS-A": 10, "TB-KS-B": 10})
    a, b = ids["TB-KS-A"], ids["TB-KS-B"]
    async with db.transaction() as other:
        # Given another transaction holding the key-share lock a new reservation's FK takes
        await other.execute(
            text("SELECT id FROM stock WHERE id = ANY(CAST(:ids AS bigint[])) FOR KEY SHARE"),
            {"ids": [a, b]},
        )
        # When a batch takes units of both rows, it does not wait for that transaction
        async with db.transaction() as session:
            assert await asyncio.wait_for(inventory_service.take_bulk(session, {a: 1, b: 2}), 5)
    assert await _reserved(db, [a, b]) == {a: 1, b: 2}
