"""The sender at volume, over real HTTP on both databases: sender loops in two processes' worth
of connections share the due rows and send each once, sends run concurrently within a bound
per channel, a slow or dead channel costs one timeout and does not hold the others, and a loop
stopped mid-round loses nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import ordertally.notify.jobs  # noqa: F401  (registers the sender tick)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.notify import repository, sender, service
from ordertally.notify.models import Notification
from ordertally.notify.service import TARGET_CONCURRENCY, SendResult
from tests.notify.conftest import Receiver, configure

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


async def _plan(db: Database, count: int, target_key: str, *, now: datetime | None = None) -> None:
    """`count` pending messages for one JSON target, as the planner writes them."""
    at = now or clock.now()
    rows: list[dict[str, Any]] = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "OrderPaid",
            "order_no": f"SO{n:08d}",
            "target_kind": "json",
            "target_key": target_key,
            "recipient_masked": None,
            "lang": "zh",
            "title": f"订单已支付：SO{n:08d}",
            "body": f"订单 SO{n:08d} 已支付",
            "sms": None,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "last_error": None,
            "provider_message_id": None,
            "created_at": at,
            "sent_at": None,
        }
        for n in range(count)
    ]
    async with db.transaction() as session:
        assert await repository.add_planned(session, rows) == count


async def _rows(db: Database) -> list[Notification]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(Notification).order_by(Notification.id))).all())


def _hook(name: str, receiver: Receiver) -> dict[str, Any]:
    return {"name": name, "url": receiver.apprise_url(name), "events": ["OrderPaid"]}


async def test_two_sender_loops_share_the_rows_and_send_each_once(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 300 due messages for one webhook that takes 5 ms a request, rounds of 20
    configure(monkeypatch, ops=[_hook("ops", receiver)], notify_send_batch="20")
    receiver.delay = 0.005
    await _plan(db, 300, "ops:ops")
    # When two sender loops, each on its own connections, run until nothing is left
    other = Database(db.url, pool_size=5)
    try:
        settings = get_settings()
        totals = await asyncio.gather(
            sender.run(db, settings, linger_seconds=0.3, poll_seconds=0.02),
            sender.run(other, settings, linger_seconds=0.3, poll_seconds=0.02),
        )
    finally:
        await other.dispose()
    # Then both loops took a share, and every message was sent and recorded exactly once
    assert all(total.claimed > 0 for total in totals), totals
    assert sum(t.claimed for t in totals) == 300
    assert sum(t.sent for t in totals) == 300
    assert receiver.attempts == 300
    ids = [h["x-ordertally-notification-id"] for h in receiver.headers]
    assert len(set(ids)) == 300
    rows = await _rows(db)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert sorted(str(r.id) for r in rows) == sorted(ids)


async def test_sends_to_one_channel_run_at_once_up_to_the_bound(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 40 messages for a webhook that answers after 300 ms
    configure(monkeypatch, ops=[_hook("ops", receiver)], notify_send_batch="100")
    receiver.delay = 0.3
    await _plan(db, 40, "ops:ops")
    # When one round sends them
    started = time.perf_counter()
    result = await service.send_due(db)
    elapsed = time.perf_counter() - started
    # Then they went out in waves of at most the bound (five), not one after another (12 s)
    assert result == SendResult(claimed=40, sent=40)
    assert receiver.most_in_flight == TARGET_CONCURRENCY
    assert elapsed < 3.0, elapsed
    assert {(r.status, r.attempts) for r in await _rows(db)} == {("sent", 1)}


async def test_a_slow_channel_costs_one_timeout_and_does_not_hold_the_others(
    db: Database,
    receiver: Receiver,
    other_receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a channel that answers after 2 s, a fast one, 1 s timeout, 40 messages each
    configure(
        monkeypatch,
        ops=[_hook("slow", receiver), _hook("fast", other_receiver)],
        notify_send_batch="100",
        notify_http_timeout_seconds="1",
        notify_backoff_base_seconds="10",
    )
    receiver.delay = 2.0
    with clock.frozen(T0):
        await _plan(db, 40, "ops:slow")
        await _plan(db, 40, "ops:fast")
        # When one round sends them
        started = time.perf_counter()
        result = await service.send_due(db)
        elapsed = time.perf_counter() - started
    # Then the round lasted about one timeout, not a timeout per wave of the slow channel
    assert elapsed < 1.9, elapsed
    # And the fast channel got all of its messages
    assert len(other_receiver.received) == 40
    # And of the slow channel's, the first wave timed out (one attempt counted, retried after
    # the backoff) and the rest were not attempted this round (no attempt counted)
    assert result == SendResult(
        claimed=80, sent=40, retried=TARGET_CONCURRENCY, skipped=40 - TARGET_CONCURRENCY
    )
    rows = await _rows(db)
    fast = [(r.status, r.attempts) for r in rows if r.target_key == "ops:fast"]
    assert fast == [("sent", 1)] * 40
    slow = [r for r in rows if r.target_key == "ops:slow"]
    timed_out = [r for r in slow if r.attempts == 1]
    untried = [r for r in slow if r.attempts == 0]
    assert len(timed_out) == TARGET_CONCURRENCY
    assert {(r.status, r.next_attempt_at) for r in timed_out} == {
        ("failed", T0 + timedelta(seconds=10))
    }
    assert all(r.last_error and "Timeout" in r.last_error for r in timed_out)
    assert len(untried) == 40 - TARGET_CONCURRENCY
    assert {(r.status, r.next_attempt_at) for r in untried} == {
        ("pending", T0 + timedelta(seconds=10))
    }
    assert all(r.last_error and "not attempted" in r.last_error for r in untried)

    # When the channel is fast again and the backoff has passed
    receiver.delay = 0.0
    with clock.frozen(T0 + timedelta(seconds=10)):
        again = await service.send_due(db)
    # Then every slow-channel message is sent, each recorded with its own count of attempts
    assert again == SendResult(claimed=40, sent=40)
    rows = await _rows(db)
    assert (
        sorted((r.status, r.attempts) for r in rows if r.target_key == "ops:slow")
        == [("sent", 1)] * (40 - TARGET_CONCURRENCY) + [("sent", 2)] * TARGET_CONCURRENCY
    )


async def test_a_sender_stopped_mid_round_loses_nothing(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 10 messages for a webhook that answers after 1 s
    configure(monkeypatch, ops=[_hook("ops", receiver)])
    receiver.delay = 1.0
    with clock.frozen(T0):
        await _plan(db, 10, "ops:ops")
        # When the loop is stopped while its sends are in flight
        assert sender.ensure_running(db, get_settings())
        for _ in range(100):
            if receiver.in_flight:
                break
            await asyncio.sleep(0.02)
        assert receiver.in_flight > 0
        await sender.stop()
        assert not sender.running()
        # Then the rows are still there, unrecorded and leased: no other sender takes them yet
        rows = await _rows(db)
        assert {(r.status, r.attempts) for r in rows} == {("pending", 0)}
        assert await service.send_due(db) == SendResult()
    # And once the lease has run out they are sent and recorded, once each
    receiver.delay = 0.0
    with clock.frozen(T0 + timedelta(seconds=61)):
        assert await service.send_due(db) == SendResult(claimed=10, sent=10)
    assert {(r.status, r.attempts) for r in await _rows(db)} == {("sent", 1)}


async def test_an_outcome_recorded_by_another_sender_is_kept(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a message another sender sent and recorded after this sender's lease ran out
    configure(monkeypatch, ops=[_hook("ops", receiver)])
    await _plan(db, 1, "ops:ops")
    (row,) = await _rows(db)
    assert await service.send_due(db) == SendResult(claimed=1, sent=1)
    (sent,) = await _rows(db)
    # When the late sender records its own (failed) outcome of the attempt it had claimed
    async with db.transaction() as session:
        await repository.record_many(
            session,
            [
                {
                    "id": row.id,
                    "claimed_attempts": 0,
                    "status": "failed",
                    "attempts": 1,
                    "next_attempt_at": clock.now(),
                    "sent_at": None,
                    "provider_message_id": None,
                    "last_error": "json: ReadTimeout",
                }
            ],
        )
    # Then the record of the send stands
    (kept,) = await _rows(db)
    assert (kept.status, kept.attempts, kept.sent_at, kept.last_error) == (
        "sent",
        1,
        sent.sent_at,
        None,
    )


async def test_the_tick_starts_one_sender_loop_per_worker(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a planned message and the registered job
    from ordertally.jobs.scheduler import JOBS, run_tick

    configure(monkeypatch, ops=[_hook("ops", receiver)])
    job = JOBS["notify_send_due"]
    assert job.every_seconds == 5
    await _plan(db, 1, "ops:ops", now=T0)
    try:
        with clock.frozen(T0):
            # When two workers tick in the same slot
            first = await run_tick(db, job, "worker-a")
            second = await run_tick(db, job, "worker-b")
            # Then one ran (and started this process's loop), the other skipped the slot
            assert first == {"started": True}
            assert second is None
            for _ in range(100):
                if receiver.received:
                    break
                await asyncio.sleep(0.02)
            # And the loop sent the message
            assert len(receiver.received) == 1
            # And a tick of the next slot finds the loop running and starts no other
            clock.advance(timedelta(seconds=5))
            assert await run_tick(db, job, "worker-a") == {"started": False}
            assert sender.running()
    finally:
        await sender.stop()
    assert [(r.status, r.attempts) for r in await _rows(db)] == [("sent", 1)]


async def test_a_stopping_worker_stops_its_sender_loop(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.jobs.worker import run_worker

    configure(monkeypatch, ops=[_hook("ops", receiver)])
    try:
        # Given this process's sender loop running (the worker's tick started it)
        assert sender.ensure_running(db, get_settings())
        assert sender.running()
        # When the worker loop stops
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(run_worker(db, get_settings(), stop), timeout=30)
        # Then the sender loop stopped with it (no task left sending after the worker is gone)
        assert not sender.running()
    finally:
        await sender.stop()
