"""Shared hot rows are taken last in a dispatch batch (issue 21's third drill run).

The drill's remaining ship deadlock was a three-way cycle: the ship held its order row and
waited for a stock row held by worker A; A waited for the `order_daily_tally` row held by
worker B; B, whose batch had counted an OrderCreated early on, waited for the ship's order row.
The tally consumer is now a `last` consumer with a batch handler: it runs after every other
consumer of the batch, as one upsert in key order, so a batch never waits for an order or stock
row while it holds a tally row.

On PostgreSQL the cycle is driven step by step over two connections. The first one plays the
ship and worker A together: it holds the order row, the worker's batch is seen waiting for it
(pg_stat_activity), then it upserts the tally row the batch counts into. With the tally taken
event by event the batch would already hold that row: PostgreSQL reports a deadlock (the batch
runs again, or the first connection fails). SQLite has one writer; there the two run one after
the other and the end state is checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text

import ordertally.analytics.consumers  # registers analytics.order_daily_tally
import ordertally.fulfillment.consumers  # noqa: F401  (registers fulfillment.allocate)
from ordertally.analytics import repository as analytics_repository
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import outbox, registry
from ordertally.events.dispatcher import dispatch_batch, drain
from ordertally.events.models import OutboxEvent
from ordertally.events.registry import Envelope
from ordertally.orders import creation, transitions
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind
from tests.factories import order_for

pytestmark = pytest.mark.anyio

BUYER = Actor(ActorKind.API, "buyer")
CALLBACK = Actor(ActorKind.PAYMENT_CALLBACK, "wx")
RERUNS = "ordertally_event_batch_reruns_total"


def _reruns() -> float:
    return REGISTRY.get_sample_value(RERUNS) or 0.0


async def _create(db: Database, sku: str) -> tuple[int, str]:
    async with db.transaction() as session:
        snap, _ = await creation.create_order(
            session, order_for([(sku, 1)]), BUYER, check_fingerprint=False
        )
    return snap.order.id, snap.order.order_no


async def _tally(db: Database) -> list[tuple[str, str, str, int, int]]:
    async with db.transaction(write=False) as session:
        rows = await analytics_repository.tallies(session)
    return [(r.day_date, r.channel, r.currency, r.orders_count, r.total_minor) for r in rows]


async def _batch_in_wait(db: Database, started: asyncio.Future[int]) -> None:
    """Wait until some backend other than ours waits for a lock, and report its pid."""
    for _ in range(200):
        async with db.transaction(write=False) as session:
            pid = await session.scalar(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        if pid is not None:
            started.set_result(int(pid))
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker batch never waited for the ship's order row")


async def test_a_worker_batch_takes_the_tally_row_after_the_order_rows(db: Database) -> None:
    settings = get_settings()
    # Given an order O, created earlier (its events already dispatched)
    o_id, o_no = await _create(db, "TEA-LJ-250")
    await drain(db, settings)
    before = await _tally(db)
    # And a batch to come: order X's OrderCreated (a tally count) and then O's OrderPaid
    # (allocation locks O's row)
    await _create(db, "CUP-CER-01")
    async with db.transaction() as session:
        await transitions.transition(session, o_no, "payment_succeeded", CALLBACK)
        created = await session.scalar(
            select(OutboxEvent.payload)
            .where(OutboxEvent.event_type == "OrderCreated", OutboxEvent.status == "pending")
            .order_by(OutboxEvent.id)
        )
    assert created is not None
    key = (_day_of(created), str(created["channel"]), str(created["currency"]))
    reruns = _reruns()
    if db.is_sqlite:
        await drain(db, settings)
        async with db.transaction() as session:
            await analytics_repository.add_to_tally(session, *key, 0)
    else:
        # Given the ship (and worker A) holding O's order row
        async with db.transaction() as ship:
            await ship.execute(
                text("SELECT 1 FROM sales_order WHERE id = :id FOR NO KEY UPDATE"), {"id": o_id}
            )
            # When the worker's batch runs and waits for that row
            batch = asyncio.ensure_future(dispatch_batch(db, settings))
            seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            await _batch_in_wait(db, seen)
            await asyncio.wait_for(seen, 15)
            # And the other side then asks for the tally row the batch counts into, and commits
            await analytics_repository.add_to_tally(ship, *key, 0)
        # Then the batch completes too, without a deadlock on either side
        await asyncio.wait_for(batch, 30)
        await drain(db, settings)
    assert _reruns() == reruns
    async with db.transaction(write=False) as session:
        status = await session.scalar(select(SalesOrder.status).where(SalesOrder.id == o_id))
    assert status == "allocated"
    # And X is counted once, plus the other side's count of one (total 0)
    after = {(d, c, cur): (n, t) for d, c, cur, n, t in await _tally(db)}
    was = {(d, c, cur): (n, t) for d, c, cur, n, t in before}
    n0, t0 = was.get(key, (0, 0))
    assert after[key] == (n0 + 2, t0 + int(created["total_minor"]))


def _day_of(payload: dict[str, Any]) -> str:
    from datetime import datetime

    from ordertally.analytics.service import local_day
    from ordertally.core import clock

    return local_day(clock.as_utc(datetime.fromisoformat(payload["created_at"])))


ORDERED = "TestOrdered"


@pytest.fixture
def recorder() -> Iterator[list[str]]:
    """Two test consumers of TestOrdered: `a.hot` (last) and `b.cold`; calls are recorded."""
    from pydantic import BaseModel

    class Ordered(BaseModel):
        fail: bool = False

    calls: list[str] = []
    registry.event_schema(ORDERED, 1)(Ordered)

    async def hot(session: Any, event: Envelope) -> None:
        calls.append(f"a.hot:{event.aggregate_id}")

    async def cold(session: Any, event: Envelope) -> None:
        calls.append(f"b.cold:{event.aggregate_id}")
        if event.payload["fail"]:
            raise RuntimeError("cold fails")

    async def stock(session: Any, event: Envelope) -> None:
        calls.append(f"a.stock:{event.aggregate_id}")

    registry.consumer("a.hot", ORDERED, last=True)(hot)
    registry.consumer("a.stock", ORDERED, stock=True)(stock)
    registry.consumer("b.cold", ORDERED)(cold)
    try:
        yield calls
    finally:
        registry.CONSUMERS.pop("a.hot", None)
        registry.CONSUMERS.pop("a.stock", None)
        registry.CONSUMERS.pop("b.cold", None)
        registry.SCHEMAS.pop((ORDERED, 1), None)


@pytest.mark.parametrize("fail", [False, True], ids=["fast path", "isolated"])
async def test_last_consumers_run_after_every_other_consumer_of_the_batch(
    db: Database, recorder: list[str], fail: bool
) -> None:
    await drain(db, get_settings())
    # Given two events in one batch; with `fail` the second one's cold consumer raises, so the
    # batch runs again with a savepoint per consumer
    async with db.transaction() as session:
        for name, fails in (("e1", False), ("e2", fail)):
            await outbox.publish(
                session,
                ORDERED,
                {"fail": fails},  # type: ignore[arg-type]
                aggregate_type="test",
                aggregate_id=name,
            )
    recorder.clear()
    # When the batch is dispatched
    await dispatch_batch(db, get_settings())
    # Then the stock locker `a.stock` ran after `b.cold`, and `a.hot` after both, for both
    # events, though their names sort first (isolated: after the fast run failed on e2, the
    # rerun calls the cold consumer again for e1 only)
    fast = ["b.cold:e1", "b.cold:e2"]
    expected = [*fast, "b.cold:e1"] if fail else fast
    assert recorder == [*expected, "a.stock:e1", "a.stock:e2", "a.hot:e1", "a.hot:e2"]


def test_the_consumers_that_lock_stock_rows_run_in_the_stock_phase() -> None:
    import ordertally.channels.consumers
    import ordertally.customers.consumers
    import ordertally.fulfillment.consumers
    import ordertally.payments.consumers
    import ordertally.rules.consumers
    import ordertally.search.consumers  # noqa: F401

    # The worker's consumers that take a hot SKU's stock rows run after the others
    stock = {
        "fulfillment.allocate",
        "channels.apply_webhook",
        "payments.apply_notification",
    }
    assert {name for name in stock if registry.phase(registry.CONSUMERS[name]) == 1} == stock
    # and the search re-index requests, the customers and the rules before them (the search
    # index itself runs in a lane of its own, outside the chain)
    for name in ("search.reindex", "customers.link_order", "rules.evaluate"):
        assert registry.phase(registry.CONSUMERS[name]) == 0


async def test_the_tally_batch_counts_like_one_event_at_a_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    settings = get_settings()
    await drain(db, settings)
    before = {(d, c, cur): (n, t) for d, c, cur, n, t in await _tally(db)}
    # Given five orders in two currencies in one batch
    totals: dict[str, int] = {}
    for sku, currency in (
        ("TEA-LJ-250", "CNY"),
        ("CUP-CER-01", "USD"),
        ("TEA-LJ-250", "CNY"),
        ("A", "CNY"),
        ("CUP-CER-01", "USD"),
    ):
        body = order_for([(sku, 1)], currency=currency)
        async with db.transaction() as session:
            snap, _ = await creation.create_order(session, body, BUYER, check_fingerprint=False)
        totals[currency] = totals.get(currency, 0) + snap.order.total_minor
    # When one batch dispatches them
    result = await dispatch_batch(db, settings)
    assert result.done >= 5
    # Then each (day, channel, currency) row gained its orders and totals exactly
    after = {(d, c, cur): (n, t) for d, c, cur, n, t in await _tally(db)}
    gained = {
        key[2]: (n - before.get(key, (0, 0))[0], t - before.get(key, (0, 0))[1])
        for key, (n, t) in after.items()
        if (n, t) != before.get(key)
    }
    assert gained == {"CNY": (3, totals["CNY"]), "USD": (2, totals["USD"])}
