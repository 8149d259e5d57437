"""Prometheus metrics of the payments domain (counted after commit, see
`core.db.count_after_commit`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# What an acknowledgement waits for: its batch's inbox write, committed (one statement on
# PostgreSQL through asyncpg). Against ACK_SECONDS it tells the commit (the database, its
# fsync) from the time a callback waits for the CPU (verification, other requests).
INBOX_COMMIT_SECONDS = Histogram(
    "ordertally_payment_inbox_commit_seconds",
    "Time to write and commit one group-committed batch of callbacks to the inbox",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INBOX_BATCH_CALLBACKS = Histogram(
    "ordertally_payment_inbox_batch_callbacks",
    "Callbacks per group-committed inbox batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
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
