"""The exception cases' metrics: open cases by type and state (a gauge the ops refresh sets),
and the time from opening to resolution."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

CASES_OPEN = Gauge(
    "ordertally_cases_open",
    "Exception cases needing work, by type and state",
    ["type", "state"],
    multiprocess_mode="max",
)
RESOLVE_SECONDS = Histogram(
    "ordertally_case_resolve_seconds",
    "Time from a case's opening to its resolution",
    ["type"],
    buckets=(60, 300, 900, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600, 7 * 24 * 3600),
)
