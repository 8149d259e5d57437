"""Delivers outbox events to registered consumers, at least once, applied once per consumer.

One transaction per batch: the claimed events (locked with SKIP LOCKED on PostgreSQL), each
consumer's work inside a savepoint together with its `processed_event` row, and the events' new
status. A crash anywhere rolls the batch back to pending; nothing is lost and, because a
consumer's effects and its dedupe row commit together, nothing is applied twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.events import repository
from ordertally.events.models import OutboxEvent
from ordertally.events.registry import Envelope, consumers_for

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


def envelope_of(event: OutboxEvent) -> Envelope:
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


async def dispatch_batch(db: Database, settings: Settings) -> BatchResult:
    """Claim due events and deliver each to the consumers that have not applied it yet."""
    result = BatchResult()
    async with db.transaction() as session:
        now = clock.now()
        events = await repository.claim_due(
            session, now, settings.worker_batch_size, skip_locked=not db.is_sqlite
        )
        result.claimed = len(events)
        for event in events:
            already = await repository.processed_consumers(session, event.event_id)
            envelope = envelope_of(event)
            failures: dict[str, str] = {}
            for consumer in consumers_for(event.event_type):
                if consumer.name in already:
                    continue
                try:
                    async with session.begin_nested():
                        await consumer.handler(session, envelope)
                        await repository.mark_processed(session, consumer.name, event.event_id, now)
                except Exception as exc:
                    log.warning("consumer %s failed on %s: %r", consumer.name, event.event_id, exc)
                    failures[consumer.name] = f"{type(exc).__name__}: {exc}"
                    DELIVERIES.labels(consumer.name, "failed").inc()
                else:
                    DELIVERIES.labels(consumer.name, "applied").inc()
            if not failures:
                await repository.finish(session, event.id, "done", now)
                result.done += 1
                continue
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
    return result


async def drain(db: Database, settings: Settings, max_batches: int = 1_000_000) -> int:
    """Dispatch until nothing is due (tests, CLI); returns events claimed."""
    total = 0
    for _ in range(max_batches):
        batch = await dispatch_batch(db, settings)
        total += batch.claimed
        if batch.claimed == 0:
            break
    return total
