"""Search's Prometheus metrics: how far the index trails the events it is built from."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

INDEX_LAG = Histogram(
    "ordertally_search_index_lag_seconds",
    "Time from an order change's event to its search index row being written",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
PENDING_AGE = Gauge(
    "ordertally_search_index_pending_age_seconds",
    "Age of the oldest order change the search index is waiting for",
    multiprocess_mode="max",
)
BACKLOG = Gauge(
    "ordertally_search_index_backlog",
    "Order changes queued for the search lane (search_dirty rows)",
    multiprocess_mode="max",
)


def observe_lag(seconds: float) -> None:
    """Record one row's lag (event time to index write)."""
    INDEX_LAG.observe(max(seconds, 0.0))
