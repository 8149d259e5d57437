"""Periodic jobs: the unpaid-order timeout closes exactly the overdue orders, a tick runs once
however many workers race for it, a failing tick is recorded on its slot and not rerun there,
and two real worker processes close every overdue order exactly once."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import ordertally.orders.jobs  # noqa: F401  (registers close_unpaid_orders)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.jobs import scheduler
from ordertally.jobs.models import JobRun
from ordertally.orders.models import OrderEvent, SalesOrder
from tests.factories import make_order

pytestmark = pytest.mark.anyio

# A whole minute, so that minute-long slots start exactly here.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=1800)  # the default payment timeout


@pytest.fixture
def test_jobs() -> Iterator[list[str]]:
    """Names of jobs a test registers; unregistered afterwards."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            scheduler.JOBS.pop(name, None)


@pytest.fixture
async def second_db(db: Database) -> AsyncIterator[Database]:
    """Another process's view of the same database: its own engines and connections."""
    other = Database(db.url)
    try:
        yield other
    finally:
        await other.dispose()


async def _orders(db: Database) -> dict[str, tuple[str, int]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(SalesOrder))).all()
    return {o.order_no: (o.status, o.version) for o in rows}


async def _trail(db: Database, order_id: int) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
            )
        ).all()
    return [
        (e.version, e.event, e.from_status, e.to_status, e.actor_kind, e.actor_id, e.occurred_at)
        for e in rows
    ]


async def _runs(db: Database, job: str) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(JobRun).where(JobRun.job_name == job).order_by(JobRun.slot)
            )
        ).all()
    return [(r.slot, r.worker_id, r.started_at, r.finished_at, r.result, r.error) for r in rows]


async def _cases(db: Database, type_: str) -> list[dict[str, Any]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(ExceptionCase).where(ExceptionCase.type == type_).order_by(ExceptionCase.id)
            )
        ).all()
    return [{"id": c.id, **c.detail} for c in rows]


def _slot(at: datetime) -> str:
    """The minute a moment falls in, as epoch seconds of its start."""
    return str(int(at.replace(second=0, microsecond=0).timestamp()))


# --- (a) close_unpaid_orders -------------------------------------------------------------------


async def test_close_unpaid_orders_closes_only_orders_past_their_deadline(db: Database) -> None:
    close = scheduler.JOBS["close_unpaid_orders"]
    assert close.every_seconds == 60
    with clock.frozen(T0):
        # Given an unpaid order due at T0+30min, one due a minute later, and a paid order
        early = await make_order(db)
        paid = await make_order(db, "paid")
        clock.advance(timedelta(minutes=1))
        late = await make_order(db)
        assert (early.payment_deadline_at, late.payment_deadline_at) == (
            T0 + TIMEOUT,
            T0 + TIMEOUT + timedelta(minutes=1),
        )

        # When the job runs one second before the first deadline
        clock.advance(TIMEOUT - timedelta(minutes=1, seconds=1))
        before = await scheduler.run_tick(db, close, "w1")
        # Then nothing is closed
        assert before == {"closed": 0}
        assert await _orders(db) == {
            early.order_no: ("pending_payment", 1),
            paid.order_no: ("paid", 2),
            late.order_no: ("pending_payment", 1),
        }

        # When it runs in the next slot, exactly at the first deadline
        clock.advance(timedelta(seconds=1))
        at_deadline = clock.now()
        assert at_deadline == T0 + TIMEOUT
        result = await scheduler.run_tick(db, close, "w1")
        # Then only that order is closed, by the scheduler, with its audit row and event
        assert result == {"closed": 1}
        assert await _orders(db) == {
            early.order_no: ("closed", 2),
            paid.order_no: ("paid", 2),
            late.order_no: ("pending_payment", 1),
        }
        assert (await _trail(db, early.id))[1:] == [
            (
                2,
                "payment_timeout",
                "pending_payment",
                "closed",
                "scheduler",
                "payment_timeout",
                at_deadline,
            )
        ]
        assert [t[1] for t in await _trail(db, paid.id)] == ["create", "payment_succeeded"]
        assert [t[1] for t in await _trail(db, late.id)] == ["create"]
        async with db.transaction(write=False) as session:
            closed_events = (
                await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.event_type == "OrderClosed")
                )
            ).all()
        assert [(e.aggregate_id, e.payload["actor_kind"]) for e in closed_events] == [
            (early.order_no, "scheduler")
        ]

        # When another worker reaches the same slot
        # Then it does not run, and nothing changes
        assert await scheduler.run_tick(db, close, "w2") is None
        assert (await _orders(db))[late.order_no] == ("pending_payment", 1)

        # When the next slot starts, a minute after the first deadline
        clock.advance(timedelta(minutes=1))
        assert await scheduler.run_tick(db, close, "w2") == {"closed": 1}
        # Then the later order is closed too, and the paid one is still untouched
        assert await _orders(db) == {
            early.order_no: ("closed", 2),
            paid.order_no: ("paid", 2),
            late.order_no: ("closed", 2),
        }
        just_before = at_deadline - timedelta(seconds=1)
        now = clock.now()
        assert await _runs(db, "close_unpaid_orders") == [
            (_slot(just_before), "w1", just_before, just_before, {"closed": 0}, None),
            (_slot(at_deadline), "w1", at_deadline, at_deadline, {"closed": 1}, None),
            (_slot(now), "w2", now, now, {"closed": 1}, None),
        ]


# --- (b) two workers race one tick -------------------------------------------------------------


ROUNDS = 12


async def test_two_workers_racing_for_each_tick_run_it_once(
    db: Database, second_db: Database, test_jobs: list[str]
) -> None:
    # Given a job whose tick opens an exception case and holds its transaction a moment
    async def open_a_case(session: AsyncSession, now: datetime) -> dict[str, Any]:
        await asyncio.sleep(0.005)
        case_id = await exceptions_service.open_case(
            session,
            order_id=None,
            category="test",
            type="race_tick",
            blocking=False,
            detail={"slot": scheduler.slot_of(now, 60)},
        )
        return {"case_id": case_id}

    scheduler.periodic("test.race", every_seconds=60)(open_a_case)
    test_jobs.append("test.race")
    job = scheduler.JOBS["test.race"]
    # And two workers, each with its own engine and connections to the same database
    worker_a = Database(db.url)
    try:
        winners: list[tuple[str, str, int]] = []
        with clock.frozen(T0):
            for _ in range(ROUNDS):
                # When both run the same tick at once
                results = await asyncio.gather(
                    scheduler.run_tick(worker_a, job, "a"),
                    scheduler.run_tick(second_db, job, "b"),
                )
                # Then exactly one of them ran it
                ran = [(w, r) for w, r in zip("ab", results, strict=True) if r is not None]
                assert len(ran) == 1, results
                winner, result = ran[0]
                winners.append((_slot(clock.now()), winner, result["case_id"]))
                clock.advance(timedelta(seconds=60))
    finally:
        await worker_a.dispose()
    # And each slot has one job_run row, by its winner, and one side effect
    slots = [_slot(T0 + timedelta(minutes=n)) for n in range(ROUNDS)]
    assert [s for s, _, _ in winners] == slots
    runs = await _runs(db, "test.race")
    assert [(slot, worker, result, error) for slot, worker, _, _, result, error in runs] == [
        (slot, winner, {"case_id": case_id}, None) for slot, winner, case_id in winners
    ]
    assert await _cases(db, "race_tick") == [
        {"id": case_id, "slot": slot} for slot, _, case_id in winners
    ]


# --- (c) a failing tick ------------------------------------------------------------------------


async def test_a_failing_tick_is_recorded_on_its_slot_and_not_rerun_there(
    db: Database, second_db: Database, test_jobs: list[str]
) -> None:
    # Given a job that writes and then fails
    calls: list[datetime] = []

    async def fail_after_writing(session: AsyncSession, now: datetime) -> dict[str, Any]:
        calls.append(now)
        await exceptions_service.open_case(
            session, order_id=None, category="test", type="failing_tick", blocking=False, detail={}
        )
        raise RuntimeError("ledger unavailable")

    scheduler.periodic("test.failing", every_seconds=60)(fail_after_writing)
    test_jobs.append("test.failing")
    job = scheduler.JOBS["test.failing"]
    with clock.frozen(T0 + timedelta(seconds=30)):
        # When a worker runs its tick
        assert await scheduler.run_tick(db, job, "w1") is None
        # Then the error is recorded on the slot, and the job's write was rolled back
        failed = (
            _slot(T0),
            "w1",
            T0 + timedelta(seconds=30),
            T0 + timedelta(seconds=30),
            None,
            "RuntimeError: ledger unavailable",
        )
        assert await _runs(db, "test.failing") == [failed]
        assert await _cases(db, "failing_tick") == []
        assert calls == [T0 + timedelta(seconds=30)]

        # When the same and another worker reach that slot again, later in the same minute
        clock.advance(timedelta(seconds=29))
        assert await scheduler.run_tick(db, job, "w1") is None
        assert await scheduler.run_tick(second_db, job, "w2") is None
        # Then the job did not run again and the recorded failure is unchanged
        assert calls == [T0 + timedelta(seconds=30)]
        assert await _runs(db, "test.failing") == [failed]

        # When the next slot starts
        clock.advance(timedelta(seconds=1))
        assert await scheduler.run_tick(second_db, job, "w2") is None
        # Then it runs once more, and that failure is recorded on the new slot
        assert calls == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
        next_at = T0 + timedelta(seconds=60)
        assert await _runs(db, "test.failing") == [
            failed,
            (_slot(next_at), "w2", next_at, next_at, None, "RuntimeError: ledger unavailable"),
        ]
        assert await _cases(db, "failing_tick") == []


# --- (c2) a job that opens its own transactions -------------------------------------------------


async def test_an_outside_job_gets_the_database_and_keeps_what_it_committed_when_it_fails(
    db: Database, test_jobs: list[str]
) -> None:
    # Given a job registered with periodic_outside that commits a case, then fails
    calls: list[datetime] = []

    async def commit_then_fail(database: Database, now: datetime) -> dict[str, Any]:
        calls.append(now)
        # No transaction of the tick is open here: on SQLite this write would otherwise wait
        # for the single writer forever.
        async with database.transaction() as session:
            await exceptions_service.open_case(
                session,
                order_id=None,
                category="test",
                type="outside_tick",
                blocking=False,
                detail={},
            )
        raise RuntimeError("carrier unavailable")

    scheduler.periodic_outside("test.outside", every_seconds=60)(commit_then_fail)
    test_jobs.append("test.outside")
    job = scheduler.JOBS["test.outside"]
    with clock.frozen(T0 + timedelta(seconds=5)):
        # When a worker runs its tick
        assert await asyncio.wait_for(scheduler.run_tick(db, job, "w1"), timeout=10) is None
        # Then the failure is recorded on the claimed slot, and the job's own commit stays
        at = T0 + timedelta(seconds=5)
        assert await _runs(db, "test.outside") == [
            (_slot(T0), "w1", at, at, None, "RuntimeError: carrier unavailable")
        ]
        assert [c["id"] > 0 for c in await _cases(db, "outside_tick")] == [True]
        # And the same slot does not run it again
        assert await scheduler.run_tick(db, job, "w2") is None
        assert calls == [at]


# --- (d) two real worker processes -------------------------------------------------------------

OVERDUE = 20


def _start_worker(db: Database, log: Any) -> subprocess.Popen[bytes]:
    env = os.environ.copy()
    env.update(
        ORDERTALLY_DATABASE_URL=db.url,
        ORDERTALLY_PII_KEY=os.environ["ORDERTALLY_PII_KEY"],
        ORDERTALLY_DATA_DIR=os.environ["ORDERTALLY_DATA_DIR"],
        ORDERTALLY_WORKER_POLL_SECONDS="0.2",
        ORDERTALLY_BROKER_URL="",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ordertally", "worker"], env=env, stdout=log, stderr=log
    )


def _log_of(log: Any) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


async def _all_closed(db: Database, orders: list[SalesOrder]) -> bool:
    states = await _orders(db)
    return all(states[o.order_no][0] == "closed" for o in orders)


@pytest.mark.slow
async def test_two_worker_processes_close_every_overdue_order_exactly_once(db: Database) -> None:
    # Given 20 orders unpaid for two hours, a paid one as old, and two unpaid within deadline
    with clock.frozen(clock.now() - timedelta(hours=2)):
        overdue = [await make_order(db) for _ in range(OVERDUE)]
        paid = await make_order(db, "paid")
    fresh = [await make_order(db) for _ in range(2)]
    with tempfile.TemporaryFile() as log:
        # When two real workers run against the database at the same time
        workers = [_start_worker(db, log), _start_worker(db, log)]
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while not await _all_closed(db, overdue):
                assert all(w.poll() is None for w in workers), _log_of(log)
                assert asyncio.get_running_loop().time() < deadline, _log_of(log)
                await asyncio.sleep(0.1)
            # Both have had at least one more scheduler pass (every second) after the close
            await asyncio.sleep(1.5)
            assert all(w.poll() is None for w in workers), _log_of(log)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=30)
        assert [w.returncode for w in workers] == [0, 0], _log_of(log)

    # Then every overdue order was closed exactly once, by the scheduler
    states = await _orders(db)
    assert {o.order_no: states[o.order_no] for o in overdue} == {
        o.order_no: ("closed", 2) for o in overdue
    }
    # The paid order was never closed; the workers' fulfillment consumer allocated it instead
    assert states[paid.order_no] == ("allocated", 3)
    assert [states[o.order_no] for o in fresh] == [("pending_payment", 1)] * 2
    async with db.transaction(write=False) as session:
        timeouts = (
            await session.execute(
                select(OrderEvent.order_id, OrderEvent.actor_kind, func.count())
                .where(OrderEvent.event == "payment_timeout")
                .group_by(OrderEvent.order_id, OrderEvent.actor_kind)
            )
        ).all()
        audit_rows = await session.scalar(select(func.count()).select_from(OrderEvent))
        closed_events = await session.scalar(
            select(func.count()).where(OutboxEvent.event_type == "OrderClosed")
        )
    assert sorted(timeouts) == sorted((o.id, "scheduler", 1) for o in overdue)
    # create for 23 orders, payment and allocation of the paid one, one timeout per overdue order
    assert audit_rows == OVERDUE + 3 + 2 + OVERDUE
    assert closed_events == OVERDUE
    # And the job's recorded runs account for exactly those closes, without errors
    runs = await _runs(db, "close_unpaid_orders")
    assert sum(result["closed"] for _, _, _, _, result, _ in runs) == OVERDUE
    assert [error for *_, error in runs] == [None] * len(runs)
