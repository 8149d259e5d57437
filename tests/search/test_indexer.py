"""The indexer on both databases: a lane batch indexes each of its orders once, from the
newest state, and leaves alone the rows that already say the same."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

import ordertally.search.consumers  # noqa: F401  (registers the hook that queues orders)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind
from ordertally.search import lane, repository, service
from ordertally.search.models import SearchDoc
from ordertally.search.repository import Filters
from tests.factories import make_order
from tests.search.helpers import index

pytestmark = pytest.mark.anyio

CREATED = datetime(2026, 1, 25, 2, 0, tzinfo=UTC)
PAID = datetime(2026, 1, 25, 2, 5, tzinfo=UTC)
INDEXED = datetime(2026, 1, 25, 2, 6, tzinfo=UTC)
LATER = datetime(2026, 1, 25, 3, 0, tzinfo=UTC)


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every index row the indexer hands to the database (the real upsert still runs)."""
    rows: list[dict[str, Any]] = []
    upsert = repository.upsert_docs

    async def recording(session: Any, batch: Sequence[dict[str, Any]]) -> None:
        rows.extend(batch)
        await upsert(session, batch)

    monkeypatch.setattr(repository, "upsert_docs", recording)
    return rows


async def doc(db: Database, order_id: int) -> SearchDoc | None:
    async with db.transaction() as session:
        return (
            await session.scalars(select(SearchDoc).where(SearchDoc.order_id == order_id))
        ).first()


async def found(db: Database, q: str, **filters: Any) -> list[str]:
    async with db.transaction() as session:
        page = await service.search(session, q, Filters(**filters))
    return [h.doc.order_no for h in page.hits]


async def test_several_events_of_one_order_in_one_batch_index_its_newest_state_once(
    db: Database, written: list[dict[str, Any]]
) -> None:
    # Given an order created, then paid five minutes later: two events, nothing indexed yet
    with clock.frozen(CREATED):
        order = await make_order(db, customer={"name": "韩梅梅", "phone": "13655554321"})
    with clock.frozen(PAID):
        async with db.transaction() as session:
            await orders_service.transition(
                session,
                order.order_no,
                "payment_succeeded",
                Actor(ActorKind.PAYMENT_CALLBACK, "test"),
            )
    # When one lane batch takes both
    with clock.frozen(INDEXED):
        batch = await lane.run_batch(db, 100)
    # Then the order's row was written once, with the newest status, its lag counted from the
    # older event
    assert batch.claimed == 2
    mine = [r for r in written if r["order_id"] == order.id]
    assert [(r["status"], r["source_at"], r["indexed_at"]) for r in mine] == [
        ("paid", CREATED, INDEXED)
    ]
    row = await doc(db, order.id)
    assert row is not None
    assert (row.status, clock.as_utc(row.source_at)) == ("paid", CREATED)
    assert await found(db, "韩梅梅 4321", status="paid") == [order.order_no]
    assert await found(db, "hanmeimei", status="pending_payment") == []


async def test_the_events_of_many_orders_in_one_batch_all_land(
    db: Database, written: list[dict[str, Any]]
) -> None:
    # Given 30 orders of 30 buyers, none indexed
    buyers = [(f"李{'一二三四五六七八九十'[n % 10]}{n:02d}", f"1390000{n:04d}") for n in range(30)]
    orders: list[SalesOrder] = []
    with clock.frozen(CREATED):
        for name, phone in buyers:
            orders.append(await make_order(db, customer={"name": name, "phone": phone}))
    # When one lane batch takes the 30 orders their creations queued
    with clock.frozen(INDEXED):
        batch = await lane.run_batch(db, 100)
    # Then 30 rows were written in one upsert, and each order is found by its buyer's phone
    assert batch.claimed == 30
    assert sorted(r["order_id"] for r in written) == sorted(o.id for o in orders)
    for order, (_, phone) in zip(orders, buyers, strict=True):
        assert await found(db, phone) == [order.order_no]
        assert await found(db, phone[-4:]) == [order.order_no]


async def test_a_row_that_says_the_same_is_not_written_again(
    db: Database, written: list[dict[str, Any]]
) -> None:
    # Given an indexed order
    with clock.frozen(CREATED):
        order = await make_order(db, customer={"name": "王芳", "phone": "13711112222"})
    with clock.frozen(INDEXED):
        await index(db)
    first = await doc(db, order.id)
    assert first is not None
    # When it is indexed again with nothing changed (a rebuild, a replayed event)
    with clock.frozen(LATER):
        async with db.transaction() as session:
            last_id, rows = await service.rebuild_chunk(session, order.id - 1, 1)
    # Then the indexer offered the same row and the database kept the one it had
    assert (last_id, rows) == (order.id, 1)
    assert written[-1]["tokens"] == first.tokens
    again = await doc(db, order.id)
    assert again is not None
    assert clock.as_utc(again.indexed_at) == INDEXED
    # When the order changes (cancelled) and is indexed again
    with clock.frozen(LATER):
        async with db.transaction() as session:
            await orders_service.transition(
                session, order.order_no, "cancel", Actor(ActorKind.OPERATOR, "test")
            )
        await index(db)
    # Then the row is rewritten: the new status, its token, the time it was written
    moved = await doc(db, order.id)
    assert moved is not None
    assert (moved.status, clock.as_utc(moved.indexed_at)) == ("closed", LATER)
    assert moved.tokens != first.tokens
    assert await found(db, "王芳", status="closed") == [order.order_no]
