"""Prometheus metrics of the payments domain, and `count_after_commit`: work done in a
transaction is counted once that transaction has committed, never before, never on rollback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

_QUEUE = "payments.count_after_commit"

CALLBACKS = Counter(
    "ordertally_payment_callbacks_total",
    "Payment callbacks by provider and outcome at the edge (accepted, duplicate, or why refused)",
    ["provider", "outcome"],
)
ACK_SECONDS = Histogram(
    "ordertally_payment_callback_ack_seconds",
    "Time from a callback's arrival to its answer",
    ["provider"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
APPLIED = Counter(
    "ordertally_payment_notifications_applied_total",
    "Stored payment notifications applied by a worker, by outcome",
    ["provider", "outcome"],
)
CALLBACK_TO_APPLIED = Histogram(
    "ordertally_payment_callback_to_applied_seconds",
    "Time from storing a notification to applying it",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUERIES = Counter(
    "ordertally_payment_queries_total",
    "Active queries to providers by provider and result",
    ["provider", "result"],
)
INBOX_BACKLOG = Gauge(
    "ordertally_payment_inbox_backlog",
    "Stored payment notifications not yet applied",
    multiprocess_mode="max",
)
INBOX_OLDEST_AGE = Gauge(
    "ordertally_payment_inbox_oldest_age_seconds",
    "Age of the oldest payment notification not yet applied",
    multiprocess_mode="max",
)


def count_after_commit(session: AsyncSession, count: Callable[[], None]) -> None:
    """Run `count` (a metric update) once the session's transaction commits; dropped if it
    rolls back, or if the savepoint it was queued in rolls back."""
    sync = session.sync_session
    queue: list[tuple[SessionTransaction | None, Callable[[], None]]] | None = sync.info.get(_QUEUE)
    if queue is None:
        queue = sync.info[_QUEUE] = []
        event.listen(sync, "after_commit", _run_queued)
        event.listen(sync, "after_soft_rollback", _drop_queued)
    queue.append((sync.get_nested_transaction(), count))


def _run_queued(sync: Session) -> None:
    if sync.in_nested_transaction():  # a savepoint released: its counts wait for the commit
        return
    queue = sync.info.get(_QUEUE, [])
    counts, queue[:] = [count for _, count in queue], []
    for count in counts:
        count()


def _drop_queued(sync: Session, previous: SessionTransaction) -> None:
    queue: list[tuple[Any, Callable[[], None]]] = sync.info.get(_QUEUE, [])
    if not previous.nested:
        if previous.parent is None:
            queue.clear()
        return
    queue[:] = [(txn, count) for txn, count in queue if not _within(txn, previous)]


def _within(txn: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while txn is not None:
        if txn is savepoint:
            return True
        txn = txn.parent
    return False
