"""What one order's timeline adds to the delay-cause rows and to the daily paid rows, as pure
functions (ADR 0043): the timeline consumer and the delay-cause consumer move those rows by an
order's new contribution less its old one, as the stage rows are moved (ADR 0038)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ordertally.analytics.aftersale_rows import add_deltas
from ordertally.analytics.histogram import ALL_CHANNELS, TRACKED, micros

# The stages whose delay causes the stage table names: all of them but the ship-by deadline
# (not a stage of the table).
DELAY_TRACKED = tuple(t for t in TRACKED if t[0] != "ship_deadline")
DELAY_STAGE_NAMES = tuple(name for name, *_ in DELAY_TRACKED)

DelayKey = tuple[str, str, str, str, str, str]  # dimension, day, channel, stage, key, type
PaidKey = tuple[str, str, str]  # day, channel, currency


def encode_types(types: Iterable[str]) -> str:
    """Exception case types as the timeline stores them: "" for none, else a sorted JSON
    list (a type may hold any character)."""
    found = sorted(set(types))
    return orjson.dumps(found).decode() if found else ""


def decode_types(stored: str | None) -> list[str]:
    """The types `encode_types` stored."""
    return list(orjson.loads(stored)) if stored else []


def merged_types(stored: str | None, read: Iterable[str]) -> str:
    """The stored types together with those just read: a case is never deleted nor retyped,
    so the set only grows, and a read from an older snapshot can never take a type away."""
    return encode_types([*decode_types(stored), *read])


def delay_contribution(row: Mapping[str, Any]) -> dict[DelayKey, tuple[int]]:
    """What one order's timeline adds to the delay-cause rows: one order per (stage over its
    SLA, case type), under the order's channel and every channel, for each row dimension.
    Nothing before the order's creation is known (no day to count it on)."""
    types = decode_types(row.get("exception_types"))
    day = row.get("day_date") or ""
    if not types or not day or row.get("created_at") is None:
        return {}
    keys = (
        ("all", "all"),
        ("warehouse", row["warehouse"] or ""),
        ("carrier", row["carrier"] or ""),
    )
    out: dict[DelayKey, tuple[int]] = {}
    for name, start, end, sla_us in DELAY_TRACKED:
        a, b = row.get(start), row.get(end)
        if a is None or b is None or micros(a, b) <= sla_us:
            continue
        for channel in (row["channel"], ALL_CHANNELS):
            for dimension, key in keys:
                for kind in types:
                    out[(dimension, day, channel, name, key, kind)] = (1,)
    return out


def paid_contribution(row: Mapping[str, Any]) -> dict[PaidKey, tuple[int]]:
    """What one order's timeline adds to the daily paid rows: one paid order on its creation
    day, channel and currency once both its creation and its payment are known."""
    day = row.get("day_date") or ""
    if not day or row.get("created_at") is None or row.get("paid_at") is None:
        return {}
    return {(day, row["channel"], row["currency"]): (1,)}


def delay_deltas(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """The delay-cause rows' change when timelines go from `before` to `after`, sorted by key
    (the lock order), zero changes dropped."""
    return add_deltas(
        (delay_contribution(r) for r in before), (delay_contribution(r) for r in after)
    )


def paid_deltas(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """The daily paid rows' change when timelines go from `before` to `after`."""
    return add_deltas((paid_contribution(r) for r in before), (paid_contribution(r) for r in after))
