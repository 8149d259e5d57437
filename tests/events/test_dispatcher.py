"""The outbox dispatcher: rolled-back events never leave, committed ones are applied once per
consumer, failures back off and end as dead letters, oversize and unknown events are refused,
and a worker killed mid-dispatch loses and doubles nothing."""

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select, update

import ordertally.analytics.consumers  # noqa: F401  (registers analytics.order_daily_tally)
from ordertally.analytics.models import OrderDailyTally
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import outbox, registry
from ordertally.events.dispatcher import BatchResult, dispatch_batch, drain
from ordertally.events.errors import EventTooLarge, UnknownEventType
from ordertally.events.models import DeadLetter, OutboxEvent, ProcessedEvent
from ordertally.events.registry import Envelope
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import make_order, order_body

pytestmark = pytest.mark.anyio

TALLY = "analytics.order_daily_tally"
PINGED = "TestPinged"


class Pinged(BaseModel):
    note: str


@dataclass
class Probe:
    """Test consumers of TestPinged: each apply opens an exception case of its own type."""

    calls: dict[str, list[str]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)

    def add(self, name: str, *, fails: bool = False) -> None:
        self.calls[name] = []
        if fails:
            self.failing.add(name)

        async def handle(session: Any, event: Envelope) -> None:
            self.calls[name].append(event.id)
            # A real write in the consumer's savepoint, so a failure must roll it back.
            await exceptions_service.open_case(
                session,
                order_id=None,
                category="test",
                type=name,
                blocking=False,
                detail={"event_id": event.id, "note": event.payload["note"]},
            )
            if name in self.failing:
                raise RuntimeError(f"boom {len(self.calls[name])}")

        registry.consumer(name, PINGED)(handle)


@pytest.fixture(autouse=True)
def only_our_consumers() -> Iterator[None]:
    """The dispatcher sees the real tally consumer and this module's test consumers only,
    whatever other modules of the session registered; the table is restored afterwards."""
    saved = dict(registry.CONSUMERS)
    registry.CONSUMERS.clear()
    registry.CONSUMERS[TALLY] = saved[TALLY]
    try:
        yield
    finally:
        registry.CONSUMERS.clear()
        registry.CONSUMERS.update(saved)


@pytest.fixture
def probe() -> Iterator[Probe]:
    registry.event_schema(PINGED, 1)(Pinged)
    p = Probe()
    try:
        yield p
    finally:
        for name in p.calls:
            registry.CONSUMERS.pop(name, None)
        registry.SCHEMAS.pop((PINGED, 1), None)


async def _publish(db: Database, note: str) -> str:
    async with db.transaction() as session:
        return await outbox.publish(
            session, PINGED, Pinged(note=note), aggregate_type="test", aggregate_id=note[:32]
        )


async def _count(db: Database, model: type, *where: Any) -> int:
    async with db.transaction(write=False) as session:
        stmt = select(func.count()).select_from(model)
        for clause in where:
            stmt = stmt.where(clause)
        return int(await session.scalar(stmt) or 0)


async def _cases(db: Database) -> list[tuple[str, str, str]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(ExceptionCase).order_by(ExceptionCase.id))).all()
    return [(c.type, c.detail["event_id"], c.detail["note"]) for c in rows]


async def _processed(db: Database) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(ProcessedEvent.consumer, ProcessedEvent.event_id).order_by(
                    ProcessedEvent.consumer, ProcessedEvent.event_id
                )
            )
        ).all()
    return [(c, e) for c, e in rows]


async def _event(db: Database, event_id: str) -> OutboxEvent:
    async with db.transaction(write=False) as session:
        row = await session.scalar(select(OutboxEvent).where(OutboxEvent.event_id == event_id))
    assert row is not None
    return row


# --- (a) rollback ------------------------------------------------------------------------------


class _Abort(Exception):
    pass


async def test_an_event_of_a_rolled_back_transaction_never_reaches_a_consumer(
    db: Database, probe: Probe
) -> None:
    # Given a consumer, one event published in a transaction that rolls back and one committed
    probe.add("test.listener")
    with pytest.raises(_Abort):
        async with db.transaction() as session:
            await outbox.publish(
                session, PINGED, {"note": "lost"}, aggregate_type="test", aggregate_id="lost"
            )
            raise _Abort
    kept = await _publish(db, "kept")
    # When the outbox is drained
    claimed = await drain(db, get_settings())
    # Then only the committed event was claimed and applied; the rolled-back one left no trace
    assert claimed == 1
    assert probe.calls == {"test.listener": [kept]}
    assert await _cases(db) == [("test.listener", kept, "kept")]
    assert await _processed(db) == [("test.listener", kept)]
    assert await _count(db, OutboxEvent) == 1
    assert await _count(db, OutboxEvent, OutboxEvent.aggregate_id == "lost") == 0
    assert (await _event(db, kept)).status == "done"


# --- (b) exactly once per consumer -------------------------------------------------------------


async def test_a_committed_event_is_applied_once_even_when_dispatched_again(db: Database) -> None:
    # Given two orders created at 17:30 UTC, which is 01:30 the next day in Asia/Shanghai
    with clock.frozen(datetime(2026, 3, 1, 17, 30, tzinfo=UTC)):
        first = await make_order(db)
        second = await make_order(
            db, lines=[{"sku": "A", "quantity": 3, "unit_price": "10.05"}], channel="taobao"
        )
        assert (first.total_minor, second.total_minor) == (15970, 3015)
        # When the outbox is drained
        assert await drain(db, get_settings()) == 2
        # Then each order is tallied once on its local business day
        assert await _tallies(db) == [("2026-03-02", "taobao", "CNY", 1, 3015)]
        assert await _tallies(db, "wechat_mini") == [("2026-03-02", "wechat_mini", "CNY", 1, 15970)]
        created = await _processed(db)
        assert [c for c, _ in created] == [TALLY, TALLY]
        # When both events are put back to pending and the outbox drained again
        async with db.transaction() as session:
            reset = await session.execute(
                update(OutboxEvent).values(status="pending", done_at=None, available_at=clock.now())
            )
            assert reset.rowcount == 2  # type: ignore[attr-defined]
        assert await drain(db, get_settings()) == 2
        # Then they were claimed and marked done again, but the tally did not move
        assert await _count(db, OutboxEvent, OutboxEvent.status == "done") == 2
        assert await _tallies(db) == [("2026-03-02", "taobao", "CNY", 1, 3015)]
        assert await _tallies(db, "wechat_mini") == [("2026-03-02", "wechat_mini", "CNY", 1, 15970)]
        assert await _processed(db) == created


async def _tallies(db: Database, channel: str = "taobao") -> list[tuple[str, str, str, int, int]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(select(OrderDailyTally).where(OrderDailyTally.channel == channel))
        ).all()
    return [(r.day_date, r.channel, r.currency, r.orders_count, r.total_minor) for r in rows]


# --- (c) retries, backoff and dead letters -----------------------------------------------------


async def test_a_failing_consumer_backs_off_then_dead_letters_while_the_other_applies_once(
    db: Database, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three attempts at most, a steady consumer and one that always fails after writing
    monkeypatch.setenv("ORDERTALLY_OUTBOX_MAX_ATTEMPTS", "3")
    reset_settings()
    settings = get_settings()
    assert (settings.outbox_max_attempts, settings.outbox_backoff_base_seconds) == (3, 2.0)
    probe.add("test.flaky", fails=True)
    probe.add("test.steady")
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    with clock.frozen(t0):
        event_id = await _publish(db, "ping")

        # When the event is dispatched the first time
        first = await dispatch_batch(db, settings)
        # Then the steady consumer applied it, the flaky one's write was rolled back, and the
        # event waits 2 s with its attempt and error recorded
        assert first == BatchResult(claimed=1, done=0, retried=1, dead=0)
        event = await _event(db, event_id)
        assert (event.status, event.attempts, event.available_at, event.last_error) == (
            "pending",
            1,
            t0 + timedelta(seconds=2),
            "test.flaky: RuntimeError: boom 1",
        )
        assert event.done_at is None
        assert await _cases(db) == [("test.steady", event_id, "ping")]
        assert await _processed(db) == [("test.steady", event_id)]

        # When the worker polls again before the backoff has passed
        # Then nothing is due and nobody is called
        assert await dispatch_batch(db, settings) == BatchResult()
        assert probe.calls == {"test.flaky": [event_id], "test.steady": [event_id]}

        # When the backoff has passed
        clock.advance(timedelta(seconds=2))
        second = await dispatch_batch(db, settings)
        # Then only the flaky consumer is retried, and the backoff doubles to 4 s
        assert second == BatchResult(claimed=1, done=0, retried=1, dead=0)
        event = await _event(db, event_id)
        assert (event.status, event.attempts, event.available_at, event.last_error) == (
            "pending",
            2,
            t0 + timedelta(seconds=6),
            "test.flaky: RuntimeError: boom 2",
        )
        assert probe.calls == {"test.flaky": [event_id] * 2, "test.steady": [event_id]}
        assert await _count(db, DeadLetter) == 0

        # When the third and last attempt fails too
        clock.advance(timedelta(seconds=3))
        assert await dispatch_batch(db, settings) == BatchResult()
        clock.advance(timedelta(seconds=1))
        third = await dispatch_batch(db, settings)
        # Then the event is dead, with one dead letter for the failing consumer only
        assert third == BatchResult(claimed=1, done=0, retried=0, dead=1)
        event = await _event(db, event_id)
        assert (event.status, event.attempts, event.done_at, event.last_error) == (
            "dead",
            3,
            t0 + timedelta(seconds=6),
            "test.flaky: RuntimeError: boom 3",
        )
        async with db.transaction(write=False) as session:
            letters = (await session.scalars(select(DeadLetter))).all()
        assert [
            (d.event_id, d.event_type, d.consumer, d.reason, d.attempts, d.created_at)
            for d in letters
        ] == [
            (event_id, PINGED, "test.flaky", "RuntimeError: boom 3", 3, t0 + timedelta(seconds=6))
        ]
        # And a dead event is never claimed again; the steady consumer applied it exactly once
        clock.advance(timedelta(hours=1))
        assert await drain(db, settings) == 0
        assert probe.calls == {"test.flaky": [event_id] * 3, "test.steady": [event_id]}
        assert await _cases(db) == [("test.steady", event_id, "ping")]
        assert await _processed(db) == [("test.steady", event_id)]


# --- (d) refused at publish --------------------------------------------------------------------


async def test_an_event_over_the_size_limit_is_refused_and_writes_nothing(
    db: Database, probe: Probe
) -> None:
    # Given the default 50 KiB limit; `{"note":"..."}` serialises to 11 bytes plus the note
    assert get_settings().max_event_bytes == 51_200
    # When an event one byte over the limit is published in a transaction that then commits
    async with db.transaction() as session:
        with pytest.raises(EventTooLarge) as refused:
            await outbox.publish(
                session, PINGED, {"note": "x" * 51_190}, aggregate_type="test", aggregate_id="big"
            )
    # Then it is refused with its size and nothing entered the outbox
    assert refused.value.extra == {"size": 51_201}
    assert refused.value.status == 413
    assert await _count(db, OutboxEvent) == 0
    # And an event of exactly the limit is accepted
    event_id = await _publish(db, "x" * 51_189)
    assert await _count(db, OutboxEvent) == 1
    assert len((await _event(db, event_id)).payload["note"]) == 51_189


async def test_an_unknown_or_malformed_event_is_refused_and_writes_nothing(
    db: Database, probe: Probe
) -> None:
    # Given a registered TestPinged v1 schema and nothing else under that name
    async with db.transaction() as session:
        # When an unregistered type, an unregistered version and a malformed payload are published
        with pytest.raises(UnknownEventType) as unknown_type:
            await outbox.publish(
                session, "TestNeverRegistered", {"note": "x"}, aggregate_type="t", aggregate_id="1"
            )
        with pytest.raises(UnknownEventType) as unknown_version:
            await outbox.publish(
                session, PINGED, {"note": "x"}, aggregate_type="t", aggregate_id="1", version=2
            )
        with pytest.raises(ValidationError):
            await outbox.publish(session, PINGED, {"nope": 1}, aggregate_type="t", aggregate_id="1")
    # Then each is refused and the committed transaction wrote nothing
    assert str(unknown_type.value) == "no schema registered for TestNeverRegistered v1"
    assert str(unknown_version.value) == "no schema registered for TestPinged v2"
    assert await _count(db, OutboxEvent) == 0


# --- (e) a worker killed mid-dispatch ----------------------------------------------------------

KILL_ORDERS = 450
KILL_BATCH = 15  # events per dispatch transaction: 30 batches to interrupt
KILL_CYCLES = 3


def _order_command(n: int) -> OrderCreate:
    return OrderCreate.model_validate(
        order_body(
            channel=("wechat_mini", "taobao", "jd")[n % 3],
            lines=[
                {
                    "sku": "TEA-LJ-250",
                    "quantity": n % 4 + 1,
                    "unit_price": f"{n % 97 + 1}.{n % 10}5",
                }
            ],
        )
    )


async def _create_orders(db: Database, n: int, per_transaction: int = 150) -> None:
    actor = Actor(ActorKind.API, "kill-test")
    for start in range(0, n, per_transaction):
        async with db.transaction() as session:
            for i in range(start, min(n, start + per_transaction)):
                await orders_service.create_order(
                    session, _order_command(i), actor, check_fingerprint=False
                )


def _start_worker(db: Database, log: Any) -> subprocess.Popen[bytes]:
    env = os.environ.copy()
    env.update(
        ORDERTALLY_DATABASE_URL=db.url,
        ORDERTALLY_PII_KEY=os.environ["ORDERTALLY_PII_KEY"],
        ORDERTALLY_DATA_DIR=os.environ["ORDERTALLY_DATA_DIR"],
        ORDERTALLY_WORKER_BATCH_SIZE=str(KILL_BATCH),
        ORDERTALLY_WORKER_POLL_SECONDS="0.1",
        ORDERTALLY_BROKER_URL="",  # no broker relay: the tally is the consumer under test
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ordertally", "worker"], env=env, stdout=log, stderr=log
    )


async def _outbox_status(db: Database) -> dict[str, int]:
    """The OrderCreated events per status (the worker's periodic jobs may publish others, such
    as the search index's first look at the catalogue's words)."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(OutboxEvent.status, func.count())
            .where(OutboxEvent.event_type == "OrderCreated")
            .group_by(OutboxEvent.status)
        )
        return {status: int(n) for status, n in rows.all()}


def _log_of(log: Any) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


@pytest.mark.slow
async def test_a_worker_killed_mid_dispatch_loses_and_doubles_nothing(db: Database) -> None:
    # Given 450 committed orders whose OrderCreated events wait in the outbox
    await _create_orders(db, KILL_ORDERS)
    assert await _outbox_status(db) == {"pending": KILL_ORDERS}
    rng = random.Random()
    with tempfile.TemporaryFile() as log:
        # When a real worker is SIGKILLed at a random point of its work, three times over
        for _ in range(KILL_CYCLES):
            before = (await _outbox_status(db)).get("done", 0)
            target = before + rng.randint(1, (KILL_ORDERS - before) // 6)
            worker = _start_worker(db, log)
            deadline = asyncio.get_running_loop().time() + 60
            try:
                while (await _outbox_status(db)).get("done", 0) < target:
                    assert worker.poll() is None, _log_of(log)
                    assert asyncio.get_running_loop().time() < deadline, _log_of(log)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0, 0.03))
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
            assert worker.returncode == -signal.SIGKILL
            done = (await _outbox_status(db)).get("done", 0)
            # Then each kill found the worker with progress made and events still pending
            assert before < done < KILL_ORDERS, (before, done)

        # When a worker then runs until nothing is pending and is stopped gracefully
        worker = _start_worker(db, log)
        deadline = asyncio.get_running_loop().time() + 60
        try:
            while (await _outbox_status(db)).get("pending", 0) > 0:
                assert worker.poll() is None, _log_of(log)
                assert asyncio.get_running_loop().time() < deadline, _log_of(log)
                await asyncio.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        assert worker.returncode == 0, _log_of(log)

    # Then every event is done, none dead, and nothing is left for an in-process drain
    assert await _outbox_status(db) == {"done": KILL_ORDERS}
    async with db.transaction(write=False) as session:
        # (events a periodic job of the worker published, not the OrderCreated under test)
        others = await session.scalar(
            select(func.count()).where(
                OutboxEvent.status == "pending", OutboxEvent.event_type != "OrderCreated"
            )
        )
    assert await drain(db, get_settings()) == others
    async with db.transaction(write=False) as session:
        # And every OrderCreated event was applied by the tally exactly once
        per_event = (
            await session.execute(
                select(OutboxEvent.event_id, func.count(ProcessedEvent.event_id))
                .outerjoin(
                    ProcessedEvent,
                    (ProcessedEvent.event_id == OutboxEvent.event_id)
                    & (ProcessedEvent.consumer == TALLY),
                )
                .where(OutboxEvent.event_type == "OrderCreated")
                .group_by(OutboxEvent.event_id)
            )
        ).all()
        assert len(per_event) == KILL_ORDERS
        assert {n for _, n in per_event} == {1}
        tallied = await session.scalar(select(func.count()).where(ProcessedEvent.consumer == TALLY))
        assert tallied == KILL_ORDERS
        # And the tally adds up to exactly the orders, by count and by amount
        tally_count, tally_total = (
            await session.execute(
                select(
                    func.sum(OrderDailyTally.orders_count), func.sum(OrderDailyTally.total_minor)
                )
            )
        ).one()
        order_count, order_total = (
            await session.execute(select(func.count(), func.sum(SalesOrder.total_minor)))
        ).one()
    assert (int(tally_count), int(tally_total)) == (order_count, int(order_total))
    assert order_count == KILL_ORDERS
    assert int(order_total) == sum(_expected_total(i) for i in range(KILL_ORDERS))


def _expected_total(n: int) -> int:
    return (n % 4 + 1) * ((n % 97 + 1) * 100 + (n % 10) * 10 + 5)
