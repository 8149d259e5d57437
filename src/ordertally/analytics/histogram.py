"""Stage durations as mergeable log-scale histograms: which bucket a duration falls in, what one
order's timeline contributes to the per-day stage rows, and percentiles read back from summed
buckets (pure functions; ADR 0038)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ordertally.analytics.event_templates import SHIP_DEADLINE, SHIP_TIME, STAGES

# Bucket 0 holds durations under one second (and negative ones: clocks of two systems); bucket
# k >= 1 holds [BOUNDS[k-1], BOUNDS[k]) microseconds, BOUNDS[k] = ceil(1 s * 2^(k/16)). The
# bounds are integers, so Python (bisect) and PostgreSQL (width_bucket) place a duration in
# the same bucket. 400 buckets reach 2^25 s (388 days); longer durations share the last one.
STEPS_PER_DOUBLING = 16
BUCKETS = 400
BOUNDS: tuple[int, ...] = tuple(
    math.ceil(1_000_000 * 2 ** (k / STEPS_PER_DOUBLING)) for k in range(BUCKETS)
)
RATIO = 2 ** (1 / STEPS_PER_DOUBLING)
# A percentile is read as the mean of the durations in its bucket (exact when they are equal,
# and always inside the bucket): within this share of the true value (percentile_disc) for
# durations of a second or more; below a second within one second.
RELATIVE_ERROR = RATIO - 1

# Every stage the rows keep: the stage table's, ship time, and shipped after the deadline.
TRACKED: tuple[tuple[str, str, str, int], ...] = tuple(
    (name, start, end, int(sla / timedelta(microseconds=1)))
    for name, start, end, sla in (*STAGES, SHIP_TIME, SHIP_DEADLINE)
)
ALL_CHANNELS = "*"
# Row dimensions; "channel" and "day" are read from the "all" rows (by channel or day).
ROW_DIMENSIONS = ("all", "warehouse", "carrier")

StatKey = tuple[str, str, str, str, str, int]  # dimension, day, channel, stage, key, bucket


def bucket_of(us: int) -> int:
    """The bucket of a duration in microseconds."""
    return bisect_right(BOUNDS, us)


def micros(start: datetime, end: datetime) -> int:
    """end - start in whole microseconds."""
    return (end - start) // timedelta(microseconds=1)


def contribution(row: Mapping[str, Any]) -> dict[StatKey, tuple[int, int, int]]:
    """What one order's timeline adds to the stage rows: (orders, microseconds, over SLA) per
    row key. Nothing before the order's creation is known (no day to count it on)."""
    day = row.get("day_date") or ""
    if not day or row.get("created_at") is None:
        return {}
    keys = (
        ("all", "all"),
        ("warehouse", row["warehouse"] or ""),
        ("carrier", row["carrier"] or ""),
    )
    return stage_rows(row, day, TRACKED, keys)


def stage_rows(
    row: Mapping[str, Any],
    day: str,
    tracked: Sequence[tuple[str, str, str, int]],
    keys: Sequence[tuple[str, str]],
) -> dict[StatKey, tuple[int, int, int]]:
    """(1, microseconds, over SLA) per row key, for each tracked stage (name, start column, end
    column, SLA in µs) whose two times the row has, under the row's channel and every channel,
    for each (dimension, key)."""
    out: dict[StatKey, tuple[int, int, int]] = {}
    for name, start, end, sla_us in tracked:
        a, b = row.get(start), row.get(end)
        if a is None or b is None:
            continue
        us = micros(a, b)
        bucket, over = bucket_of(us), int(us > sla_us)
        for channel in (row["channel"], ALL_CHANNELS):
            for dimension, key in keys:
                out[(dimension, day, channel, name, key, bucket)] = (1, us, over)
    return out


def deltas(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> list[tuple[StatKey, int, int, int]]:
    """The rows' change when timelines go from `before` to `after`: the old contributions
    out, the new ones in; zero changes dropped, sorted by key (the lock order)."""
    acc: dict[StatKey, list[int]] = {}
    for sign, rows in ((-1, before), (1, after)):
        for row in rows:
            for key, (n, us, over) in contribution(row).items():
                t = acc.setdefault(key, [0, 0, 0])
                t[0] += sign * n
                t[1] += sign * us
                t[2] += sign * over
    return [(k, n, us, over) for k, (n, us, over) in sorted(acc.items()) if n or us or over]


def representative(bucket: int, orders: int, sum_us: int) -> float:
    """A bucket's value in seconds: the mean of its durations."""
    return sum_us / orders / 1_000_000 if orders else 0.0


def percentile(buckets: list[tuple[int, int, int]], total: int, q: float) -> float:
    """percentile_disc(q) in seconds from (bucket, orders, sum_us) sorted by bucket: the value
    of the bucket holding the ceil(q * total)-th smallest duration."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, orders, sum_us in buckets:
        seen += orders
        if seen >= rank:
            return representative(bucket, orders, sum_us)
    return representative(*buckets[-1]) if buckets else 0.0
