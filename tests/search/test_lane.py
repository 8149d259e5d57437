"""The search lane on both databases: the transactions that change what an order is found by
queue it (in the same transaction), the lane indexes it outside the outbox chain, a change
committed while a lane batch runs is indexed by the next one, a crashed batch loses nothing,
and (PostgreSQL) two lanes never write one order's row at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

import ordertally.search.consumers  # noqa: F401  (registers the hook that queues orders)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.events.registry import CONSUMERS, PUBLISH_HOOKS
from ordertally.jobs.worker import run_worker
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind
from ordertally.search import lane, repository, service
from ordertally.search.models import SearchDirty, SearchDoc
from ordertally.search.repository import Filters
from tests.conftest import ONLY_PG
from tests.factories import make_order

pytestmark = pytest.mark.anyio

CREATED = datetime(2026, 1, 25, 2, 0, tzinfo=UTC)
INDEXED = datetime(2026, 1, 25, 2, 1, tzinfo=UTC)
OPERATOR = Actor(ActorKind.OPERATOR, "test")


async def queued(db: Database) -> list[tuple[int, datetime]]:
    """The lane's queue: (order id, since), oldest first."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(SearchDirty.order_id, SearchDirty.since).order_by(SearchDirty.id)
        )
        return [(int(i), clock.as_utc(at)) for i, at in rows.all()]


async def status_indexed(db: Database, order_id: int) -> str | None:
    async with db.transaction(write=False) as session:
        return await session.scalar(select(SearchDoc.status).where(SearchDoc.order_id == order_id))


async def found(db: Database, q: str, **filters: Any) -> list[str]:
    async with db.transaction(write=False) as session:
        page = await service.search(session, q, Filters(**filters))
    return [h.doc.order_no for h in page.hits]


async def cancel(db: Database, order: SalesOrder) -> None:
    async with db.transaction() as session:
        await orders_service.transition(session, order.order_no, "cancel", OPERATOR)


def pause_before_upsert(
    monkeypatch: pytest.MonkeyPatch, during: Any
) -> list[Sequence[dict[str, Any]]]:
    """Run `during()` once, inside the first lane batch, after it read the orders and built
    their rows and before it writes them and commits; returns the rows each upsert got."""
    upsert = repository.upsert_docs
    seen: list[Sequence[dict[str, Any]]] = []

    async def upsert_after(session: Any, rows: Sequence[dict[str, Any]]) -> None:
        seen.append(rows)
        if len(seen) == 1:
            await during()
        await upsert(session, rows)

    monkeypatch.setattr(repository, "upsert_docs", upsert_after)
    return seen


async def test_the_outbox_chain_no_longer_runs_the_indexer_the_lane_does(db: Database) -> None:
    # Given the search domain wired: a hook on the indexed events, no indexing consumer
    assert "search.index_order" not in CONSUMERS
    assert set(service.INDEXED_EVENTS) <= PUBLISH_HOOKS["search.dirty"].event_types
    # When an order is created
    with clock.frozen(CREATED):
        order = await make_order(db, customer={"name": "韩梅梅", "phone": "13655554321"})
    # Then its creation queued it, with the event's time
    assert await queued(db) == [(order.id, CREATED)]
    # When the worker delivers every event
    await drain(db, get_settings())
    # Then it is still not indexed and still queued
    assert await status_indexed(db, order.id) is None
    assert await queued(db) == [(order.id, CREATED)]
    # When the lane runs
    with clock.frozen(INDEXED):
        batch = await lane.run_batch(db, 100)
    # Then the order is indexed, found, and no longer queued; the row's lag counts from the event
    assert (batch.claimed, batch.indexed, batch.deferred, batch.gone) == (1, 1, 0, 0)
    assert await found(db, "韩梅梅 4321") == [order.order_no]
    assert await queued(db) == []
    async with db.transaction(write=False) as session:
        doc = (await session.scalars(select(SearchDoc))).one()
    assert (clock.as_utc(doc.source_at), clock.as_utc(doc.indexed_at)) == (CREATED, INDEXED)


async def test_a_rolled_back_change_queues_nothing(db: Database) -> None:
    # Given an indexed order
    order = await make_order(db)
    await lane.drain(db)
    # When a transaction cancels it and then fails
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await orders_service.transition(session, order.order_no, "cancel", OPERATOR)
            raise RuntimeError("the request failed after the change")
    # Then nothing is queued and the index keeps the order as it is
    assert await queued(db) == []
    assert await status_indexed(db, order.id) == "pending_payment"


async def test_several_changes_of_one_order_are_indexed_once_from_the_newest_state(
    db: Database,
) -> None:
    # Given an order created, then cancelled: two queued rows
    with clock.frozen(CREATED):
        order = await make_order(db, customer={"name": "王芳", "phone": "13711112222"})
    with clock.frozen(INDEXED):
        await cancel(db, order)
    assert [i for i, _ in await queued(db)] == [order.id, order.id]
    # When one lane batch takes both
    batch = await lane.run_batch(db, 100)
    # Then the order is indexed once, closed, its lag counted from the older change
    assert (batch.claimed, batch.indexed) == (2, 1)
    assert await found(db, "王芳", status="closed") == [order.order_no]
    async with db.transaction(write=False) as session:
        source_at = await session.scalar(select(SearchDoc.source_at))
    assert clock.as_utc(source_at) == CREATED


async def test_a_change_committed_during_a_lane_batch_is_indexed_by_the_next_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queued order
    order = await make_order(db, customer={"name": "李雷", "phone": "13622223333"})
    writer: list[asyncio.Task[None]] = []

    async def cancel_meanwhile() -> None:
        # Another transaction cancels the order after the lane read it. On PostgreSQL it
        # commits before the lane's batch does (the lane holds no lock a writer waits for);
        # on SQLite it waits for the single writer, that is for the lane's commit.
        task = asyncio.create_task(cancel(db, order))
        writer.append(task)
        if not db.is_sqlite:
            await task

    seen = pause_before_upsert(monkeypatch, cancel_meanwhile)
    # When a lane batch runs while the order is cancelled
    first = await lane.run_batch(db, 100)
    await writer[0]
    # Then that batch wrote what it had read (the order still pending), and the cancel queued
    # the order again
    assert (first.claimed, first.indexed) == (1, 1)
    assert [r["status"] for r in seen[0]] == ["pending_payment"]
    assert await status_indexed(db, order.id) == "pending_payment"
    assert [i for i, _ in await queued(db)] == [order.id]
    # When the lane runs again
    await lane.drain(db)
    # Then the index says what the order says now
    assert await status_indexed(db, order.id) == "closed"
    assert await found(db, "李雷", status="closed") == [order.order_no]
    assert await queued(db) == []


async def test_a_batch_that_dies_before_its_commit_loses_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two queued orders
    one = await make_order(db, customer={"name": "张伟", "phone": "13633334444"})
    two = await make_order(db, customer={"name": "刘洋", "phone": "13644445555"})
    before = await queued(db)

    async def crash() -> None:
        raise ConnectionResetError("the lane's process died")

    pause_before_upsert(monkeypatch, crash)
    # When a lane batch claims them, reads them and dies before it commits
    with pytest.raises(ConnectionResetError):
        await lane.run_batch(db, 100)
    # Then nothing was written and both are still queued
    assert await status_indexed(db, one.id) is None
    assert await queued(db) == before
    # When the lane runs again
    assert await lane.drain(db) == 2
    # Then both are found
    assert await found(db, "13633334444") == [one.order_no]
    assert await found(db, "13644445555") == [two.order_no]


@ONLY_PG  # SQLite's single writer runs one lane batch at a time
async def test_a_lane_leaves_an_order_another_lane_is_writing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an order a first lane batch is indexing (read, not yet committed)
    order = await make_order(db, customer={"name": "陈静", "phone": "13655556666"})
    release, ran = asyncio.Event(), asyncio.Event()
    second: list[Any] = []

    async def meanwhile() -> None:
        # the order changes (queued again), and a second lane runs while the first holds it
        await cancel(db, order)
        second.append(await lane.run_batch(db, 100))
        ran.set()
        await release.wait()

    pause_before_upsert(monkeypatch, meanwhile)
    first = asyncio.create_task(lane.run_batch(db, 100))
    await asyncio.wait_for(ran.wait(), timeout=30)
    # Then the second lane claimed the new row but left the order: no older or newer write of
    # its row while the first holds it
    assert (second[0].claimed, second[0].indexed, second[0].deferred) == (1, 0, 1)
    assert [i for i, _ in await queued(db)] == [order.id, order.id]
    # When the first commits, and the lane runs again
    release.set()
    assert (await first).indexed == 1
    await lane.drain(db)
    # Then the newest state is indexed
    assert await status_indexed(db, order.id) == "closed"
    assert await queued(db) == []


async def test_the_worker_runs_the_lane_and_stops_it(db: Database) -> None:
    # Given a worker running only its lanes
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(db, get_settings(), stop, lanes=["search"], dispatch=False)
    )
    try:
        # When an order is created
        order = await make_order(db, customer={"name": "赵敏", "phone": "13677778888"})
        # Then the lane indexes it soon, without the dispatcher
        for _ in range(200):
            if await found(db, "13677778888"):
                break
            await asyncio.sleep(0.05)
        assert await found(db, "13677778888") == [order.order_no]
        assert await queued(db) == []
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=10)
    # and an unknown lane is refused
    with pytest.raises(ValueError, match="no such lane: nope"):
        await run_worker(db, get_settings(), asyncio.Event(), lanes=["nope"])


async def test_rebuild_and_reindex_of_skus_keep_working(db: Database) -> None:
    # Given an indexed order whose row was lost
    order = await make_order(db, customer={"name": "孙丽", "phone": "13688889999"})
    await lane.drain(db)
    async with db.transaction() as session:
        await repository.delete_docs(session, [order.id])
    # When a rebuild runs
    async with db.transaction() as session:
        last, written = await service.rebuild_chunk(session, 0, 100)
    # Then the order is found again
    assert (last, written) == (order.id, 1)
    assert await found(db, "孙丽") == [order.order_no]
    # When the orders of its SKU are re-indexed (a catalogue change): they are queued
    async with db.transaction() as session:
        assert await service.reindex_skus(session, ["TEA-LJ-250"], 0, "catalog") == 1
    assert [i for i, _ in await queued(db)] == [order.id]
    assert await lane.drain(db) == 1


def test_every_event_that_queues_an_order_names_it() -> None:
    # The hook queues the order of each indexed event by its payload's order_id: an event type
    # added to INDEXED_EVENTS without one would be skipped silently
    from ordertally.events.registry import SCHEMAS

    missing = [
        t
        for t in service.INDEXED_EVENTS
        if (t, 1) not in SCHEMAS or "order_id" not in SCHEMAS[(t, 1)].model_fields
    ]
    assert missing == []
