"""The workbench's facet counts come from a ledger the database's triggers keep (ADR 0033,
"Facet counts"). On both databases: after every kind of write a case can see (opened one by
one, transitions, hand-offs that move the owner, a bulk update of many rows, deletes that
cascade from an order), the ledger's counts equal a count of the cases themselves, before and
after the fold; on PostgreSQL a fold beside a writer that has not committed loses nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from ordertally.casework import repository
from ordertally.casework.filters import CaseFilter
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import CaseCountDelta, ExceptionCase
from ordertally.exceptions.service import Who
from ordertally.orders.models import SalesOrder
from tests.conftest import ONLY_PG
from tests.factories import make_order

pytestmark = pytest.mark.anyio

TYPES = ("double_payment", "tracking_stale", "sku_unmapped", "stock_shortage", "unknown_trade")
FILTERS = (
    CaseFilter(),
    CaseFilter(state="open"),
    CaseFilter(role="finance"),
    CaseFilter(type="tracking_stale", state="in_progress"),
    CaseFilter(category="supply_chain", role="warehouse"),
)
WHO = Who("小王", "203.0.113.9")


async def _assert_ledger_tallies(db: Database) -> dict[str, dict[str, int]]:
    async with db.transaction(write=False) as session:
        for f in FILTERS:
            ledger = await repository.facet_counts(session, f)
            scanned = await repository.scanned_facet_counts(session, f)
            assert ledger == scanned, f
        return await repository.facet_counts(session, CaseFilter())


async def _fold(db: Database) -> None:
    async with db.transaction() as session:
        await exceptions_service.fold_case_counts(session)
    async with db.transaction(write=False) as session:
        rows = await session.scalar(select(func.count()).select_from(CaseCountDelta))
        combos = await session.scalar(
            select(func.count()).select_from(
                select(
                    ExceptionCase.type,
                    ExceptionCase.side,
                    ExceptionCase.status,
                    ExceptionCase.owner_role,
                )
                .distinct()
                .subquery()
            )
        )
    # One row per combination that has a case, and no more.
    assert rows == combos


async def _open(db: Database, order_id: int | None, case_type: str) -> int:
    async with db.transaction() as session:
        return await exceptions_service.open_case(
            session, order_id=order_id, category="test", type=case_type, blocking=False, detail={}
        )


async def test_the_ledger_tallies_with_the_cases_after_every_kind_of_write(db: Database) -> None:
    rng = random.Random(20261205)
    orders = [await make_order(db, "paid") for _ in range(3)]
    # Given cases opened one by one over three orders and none
    ids = [
        await _open(db, rng.choice([*(o.id for o in orders), None]), rng.choice(TYPES))
        for _ in range(24)
    ]
    first = await _assert_ledger_tallies(db)
    assert sum(first["state"].values()) == 24
    # When they are worked: assigned, handed off (the owner role moves), resolved, cancelled,
    # reopened
    for case_id in rng.sample(ids, 12):
        action = rng.choice(("assign", "hand_off", "resolve", "cancel"))
        async with db.transaction() as session:
            if action == "assign":
                await exceptions_service.assign(session, case_id, "小王", WHO)
            elif action == "hand_off":
                await exceptions_service.hand_off(
                    session, case_id, "warehouse", {"return_receipt": "R-1"}, None, WHO
                )
            elif action == "resolve":
                await exceptions_service.resolve(session, case_id, "小王", "done", code="fixed")
            else:
                await exceptions_service.cancel(session, case_id, "by mistake", WHO)
    await _assert_ledger_tallies(db)
    await _fold(db)
    await _assert_ledger_tallies(db)
    async with db.transaction() as session:
        closed = await session.scalars(
            select(ExceptionCase.id).where(ExceptionCase.status.in_(("resolved", "cancelled")))
        )
        for case_id in list(closed.all())[:3]:
            await exceptions_service.reopen(session, case_id, "again", WHO)
    # And a bulk statement moves many rows at once, one touches no counted column
    async with db.transaction() as session:
        await session.execute(
            update(ExceptionCase)
            .where(ExceptionCase.status == "open")
            .values(owner_role="finance", severity="high")
        )
        await session.execute(update(ExceptionCase).values(severity="low"))
    await _assert_ledger_tallies(db)
    # And an order is deleted (its cases go with it), then a case directly
    async with db.transaction() as session:
        await session.execute(delete(SalesOrder).where(SalesOrder.id == orders[0].id))
        await session.execute(delete(ExceptionCase).where(ExceptionCase.id == ids[-1]))
    after: dict[str, Any] = await _assert_ledger_tallies(db)
    await _fold(db)
    assert await _assert_ledger_tallies(db) == after
    async with db.transaction(write=False) as session:
        left = await session.scalar(select(func.count()).select_from(ExceptionCase))
    assert sum(after["state"].values()) == left


@ONLY_PG  # SQLite has one writer: a fold cannot run beside an open writer
async def test_a_fold_beside_an_open_writer_loses_nothing(db: Database) -> None:
    order = await make_order(db, "paid")
    await _open(db, order.id, "double_payment")
    # Given a writer that opened a case and has not committed
    async with db.transaction() as writer:
        await exceptions_service.open_case(
            writer,
            order_id=order.id,
            category="test",
            type="tracking_stale",
            blocking=False,
            detail={},
        )
        await writer.flush()
        # When the fold runs and commits meanwhile
        async with db.transaction() as folder:
            await exceptions_service.fold_case_counts(folder)
    # Then once the writer commits, both cases are counted
    counts = await _assert_ledger_tallies(db)
    assert counts["type"] == {"double_payment": 1, "tracking_stale": 1}
    await _fold(db)
    assert await _assert_ledger_tallies(db) == counts
