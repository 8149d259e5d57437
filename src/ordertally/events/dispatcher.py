"""Delivers outbox events to registered consumers, at least once, applied once per consumer.

One transaction per batch: the claimed events (locked with SKIP LOCKED on PostgreSQL), each
consumer's work inside a savepoint together with its `processed_event` row, and the events' new
status. A crash anywhere rolls the batch back to pending; nothing is lost and, because a
consumer's effects and its dedupe row commit together, nothing is applied twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database, is_transient
from ordertally.core.settings import Settings
from ordertally.events import repository
from ordertally.events.registry import (
    CALLBACK_EVENTS,
    Consumer,
    Envelope,
    consumers_for,
    phase,
)
from ordertally.events.repository import Claimed

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "ordertally_event_deliveries_total", "Consumer deliveries by outcome", ["consumer", "outcome"]
)


@dataclass(slots=True)
class BatchResult:
    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0  # callback events left for later by `callback_apply_per_second`


@dataclass(slots=True)
class _Budget:
    """A token bucket per process: how many stored callbacks may be applied now."""

    rate: float = 0.0
    tokens: float = 0.0
    at: float = 0.0

    def available(self, rate: float) -> int:
        now = time.monotonic()
        capacity = max(rate, 1.0)
        if rate != self.rate:  # first use or a new setting: start full
            self.rate, self.tokens, self.at = rate, capacity, now
        self.tokens = min(capacity, self.tokens + (now - self.at) * rate)
        self.at = now
        return int(self.tokens)

    def spend(self, count: int) -> None:
        self.tokens -= count


_CALLBACK_BUDGET = _Budget()


def reset_callback_budget() -> None:
    """Forget the apply budget (tests)."""
    _CALLBACK_BUDGET.rate = 0.0


def _within_budget(
    events: list[Claimed], allowed: int | None, result: BatchResult
) -> list[Claimed]:
    """The claimed events minus the callback events past the apply budget (left pending)."""
    if allowed is None:
        return events
    kept: list[Claimed] = []
    for event in events:
        if event.event_type in CALLBACK_EVENTS:
            if allowed <= 0:
                result.deferred += 1
                continue
            allowed -= 1
            _CALLBACK_BUDGET.spend(1)
        kept.append(event)
    return kept


def envelope_of(event: Claimed) -> Envelope:
    """The consumer-facing envelope of an outbox row."""
    return Envelope(
        id=event.event_id,
        type=event.event_type,
        version=event.event_version,
        occurred_at=event.occurred_at,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        payload=event.payload,
    )


def backoff(settings: Settings, attempts: int) -> timedelta:
    """Exponential backoff, capped."""
    seconds = settings.outbox_backoff_base_seconds * (2 ** (attempts - 1))
    return timedelta(seconds=min(seconds, settings.outbox_backoff_max_seconds))


# Fast-path runs of one batch before a transient failure is treated like any other.
FAST_PATH_TRIES = 3
TRANSIENT_RERUNS = Counter(
    "ordertally_event_batch_reruns_total",
    "Batches run again from the start after a deadlock or serialization failure",
)


class _FastPathFailed(Exception):
    """A consumer failed while the batch ran without savepoints: run it again, isolated (or,
    after a deadlock, from the start)."""

    def __init__(self, event_id: str, consumer: str, error: str, transient: bool = False) -> None:
        super().__init__(consumer)
        self.key = (event_id, consumer)
        self.error = error
        self.transient = transient


async def dispatch_batch(db: Database, settings: Settings) -> BatchResult:
    """Claim due events and deliver each to the consumers that have not applied it yet.

    A batch first runs without savepoints (the common case: every consumer succeeds), reading
    the dedupe rows and writing the processed and finished rows once per batch. If any consumer
    raises, that transaction is rolled back and the batch runs again with each consumer inside
    its own savepoint, so one failing consumer is retried alone while the rest commit; the
    failure already seen is recorded without calling that consumer a second time. Either way a
    consumer's effects and its dedupe row commit together (docs/adr/0004).

    A deadlock or serialization failure is not the consumer's fault: the rolled-back batch runs
    again from the start (its locks were released, the other transaction can finish), up to
    FAST_PATH_TRIES times, before it counts as a failure.
    """
    for attempt in range(1, FAST_PATH_TRIES + 1):
        try:
            return await _dispatch(db, settings, isolate=False, known={})
        except _FastPathFailed as failed:
            if failed.transient and attempt < FAST_PATH_TRIES:
                log.info("batch runs again after %s: %s", failed.key[1], failed.error)
                TRANSIENT_RERUNS.inc()
                continue
            log.info("batch runs again with savepoints: %s failed: %s", failed.key[1], failed.error)
            return await _dispatch(db, settings, isolate=True, known={failed.key: failed.error})
    raise AssertionError("unreachable")  # pragma: no cover


async def _dispatch(
    db: Database, settings: Settings, *, isolate: bool, known: dict[tuple[str, str], str]
) -> BatchResult:
    result = BatchResult()
    applied: list[str] = []
    rate = settings.callback_apply_per_second
    allowed = _CALLBACK_BUDGET.available(rate) if rate > 0 else None
    async with db.transaction() as session:
        now = clock.now()
        # The due events and the consumers that already applied each (one statement on
        # PostgreSQL).
        claimed, already = await repository.claim_batch(
            session,
            now,
            settings.worker_batch_size,
            skip_locked=not db.is_sqlite,
            leave=CALLBACK_EVENTS if allowed == 0 else frozenset(),
        )
        # Callbacks past the budget stay pending (their locks go with this transaction).
        events = _within_budget(claimed, allowed, result)
        result.claimed = len(events)
        if not events:
            return result
        processed: list[dict[str, object]] = []
        failures: dict[int, dict[str, str]] = {}
        entries = [(event, envelope_of(event)) for event in events]
        # Consumer by consumer, in name order, each over the batch's events in outbox order
        # (one batch handler call, or its handler per event): a consumer sees every effect of
        # the consumers before it, as it would event by event (rules read the customer link).
        # Three phases: the consumers that lock no stock row first, then those that do
        # (allocation, channel orders, payments), then the `last` ones (shared hot rows such as
        # the daily tally). A batch therefore locks a hot SKU's stock rows only for its tail
        # (the API's shipments and creations wait for them), and takes the shared rows after
        # all of its order and stock rows: it never waits for another transaction's order or
        # stock row while holding one (issue 21).
        plan: dict[str, tuple[Consumer, list[tuple[Claimed, Envelope]]]] = {}
        interested: dict[str, list[Consumer]] = {}
        for event, envelope in entries:
            seen = already.get(event.event_id, set())
            if event.event_type not in interested:
                interested[event.event_type] = consumers_for(event.event_type)
            for consumer in interested[event.event_type]:
                if consumer.name not in seen:
                    plan.setdefault(consumer.name, (consumer, []))[1].append((event, envelope))
        for current in (0, 1, 2):
            for name in sorted(plan):
                consumer, deliveries = plan[name]
                if phase(consumer) != current:
                    continue
                if not isolate and consumer.batch_handler is not None:
                    try:
                        await consumer.batch_handler(session, [e for _, e in deliveries])
                    except Exception as exc:
                        raise _FastPathFailed(
                            "*", name, f"{type(exc).__name__}: {exc}", is_transient(exc)
                        ) from exc
                    for event, _ in deliveries:
                        processed.append(
                            {"consumer": name, "event_id": event.event_id, "processed_at": now}
                        )
                        applied.append(name)
                    continue
                for event, envelope in deliveries:
                    error = known.get((event.event_id, name))
                    try:
                        if error is not None:
                            raise _FastPathFailed(event.event_id, name, error)
                        if isolate:
                            async with session.begin_nested():
                                await consumer.handler(session, envelope)
                        else:
                            await consumer.handler(session, envelope)
                    except Exception as exc:
                        reason = error if error is not None else f"{type(exc).__name__}: {exc}"
                        if not isolate:
                            raise _FastPathFailed(
                                event.event_id, name, reason, is_transient(exc)
                            ) from exc
                        log.warning("consumer %s failed on %s: %s", name, envelope.id, reason)
                        failures.setdefault(event.id, {})[name] = reason
                        DELIVERIES.labels(name, "failed").inc()
                        continue
                    processed.append(
                        {"consumer": name, "event_id": event.event_id, "processed_at": now}
                    )
                    applied.append(name)
        done: list[int] = []
        for event, _ in entries:
            if event.id not in failures:
                done.append(event.id)
                result.done += 1
                continue
            await _give_up_or_retry(session, settings, event, failures[event.id], now, result)
        await repository.finish_batch(session, processed, done, now)
    for name in applied:
        DELIVERIES.labels(name, "applied").inc()
    return result


async def _give_up_or_retry(
    session: AsyncSession,
    settings: Settings,
    event: Claimed,
    failures: dict[str, str],
    now: datetime,
    result: BatchResult,
) -> None:
    """Schedule a failed event's next attempt, or dead-letter it after the last one."""
    attempts = event.attempts + 1
    error = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
    if attempts >= settings.outbox_max_attempts:
        for name, reason in sorted(failures.items()):
            await repository.add_dead_letter(
                session,
                event_id=event.event_id,
                event_type=event.event_type,
                consumer=name,
                reason=reason[:4000],
                attempts=attempts,
                created_at=now,
            )
            DELIVERIES.labels(name, "dead").inc()
        await repository.schedule_retry(session, event.id, attempts, now, error)
        await repository.finish(session, event.id, "dead", now)
        result.dead += 1
    else:
        await repository.schedule_retry(
            session, event.id, attempts, now + backoff(settings, attempts), error
        )
        result.retried += 1


async def drain(db: Database, settings: Settings, max_batches: int = 1_000_000) -> int:
    """Dispatch until nothing is due (tests, CLI); returns events claimed."""
    total = 0
    for _ in range(max_batches):
        batch = await dispatch_batch(db, settings)
        total += batch.claimed
        if batch.claimed == 0:
            break
    return total
