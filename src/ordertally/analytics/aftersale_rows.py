"""After-sales analytics as pure functions: a case's timeline row from its facts, what it adds
to the stage rows and to the KPI rows, the refund's split over the case's SKUs, and what an
order's shipment adds to the shipped rows the after-sales rate divides by (ADR 0040)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ordertally.analytics.event_templates import AFTERSALE_STAGES
from ordertally.analytics.histogram import ALL_CHANNELS, StatKey, stage_rows
from ordertally.core.money import split_by_largest_remainder

# (stage, from column, to column, SLA in microseconds) of `aftersale_timeline`.
AS_TRACKED: tuple[tuple[str, str, str, int], ...] = tuple(
    (name, start, end, int(sla / timedelta(microseconds=1)))
    for name, start, end, sla in AFTERSALE_STAGES
)
AS_STAGE_NAMES: tuple[str, ...] = tuple(name for name, *_ in AS_TRACKED)
# The stage rows' dimensions of a case ("channel" and "day" read the "all" rows).
AS_ROW_DIMENSIONS = ("all", "type", "responsibility")
# The KPI rows' dimensions ("channel" and "day" read the "all" rows). Like the stage rows, the
# KPI and shipped rows are kept per channel and for "*" (every channel): an unscoped read sums
# a fifth of the rows.
KPI_ROW_DIMENSIONS = ("all", "type", "responsibility", "sku")
STAMPS = (
    "requested_at",
    "approved_at",
    "rejected_at",
    "decided_at",
    "returned_at",
    "inspected_at",
    "refunded_at",
    "resolved_at",
    "closed_at",
)
# Every after-sales event the consumer folds: each means "this case changed, read it again".
AFTERSALE_EVENTS = (
    "AftersaleRequested",
    "AftersaleApproved",
    "AftersaleRejected",
    "AftersaleAwaitingReturn",
    "AftersaleReturned",
    "AftersaleInspected",
    "AftersaleRefunded",
    "AftersaleReshipped",
    "AftersaleExchanged",
    "AftersaleClosed",
    "AftersaleRefundConfirmed",
)

KpiKey = tuple[str, str, str, str, str]  # dimension, day, channel, key, currency
ShipKey = tuple[str, str, str, str]  # dimension, day, channel, key


def _first(*stamps: datetime | None) -> datetime | None:
    known = [s for s in stamps if s is not None]
    return min(known) if known else None


def timeline_row(facts: Mapping[str, Any], local_day: Callable[[datetime], str]) -> dict[str, Any]:
    """A case's `aftersale_timeline` row from its facts (the after-sales domain's read:
    `reached` is status -> the earliest time its audit trail reached it)."""
    reached: Mapping[str, datetime] = facts["reached"]
    requested = reached.get("requested") or facts["created_at"]
    refunded = reached.get("refunded")
    lines = [[sku, int(qty)] for sku, qty in facts["lines"]]
    return {
        "case_no": facts["case_no"],
        "order_no": facts["order_no"],
        "channel": facts["channel"],
        "type": facts["type"],
        "currency": facts["currency"],
        "responsibility": facts["responsibility"] or "",
        "day_date": local_day(requested),
        "requested_at": requested,
        "approved_at": reached.get("approved"),
        "rejected_at": reached.get("rejected"),
        "decided_at": _first(reached.get("approved"), reached.get("rejected")),
        "returned_at": reached.get("returned"),
        "inspected_at": reached.get("inspected"),
        "refunded_at": refunded,
        "resolved_at": _first(refunded, reached.get("reshipped"), reached.get("exchanged")),
        "closed_at": reached.get("closed"),
        "units": sum(qty for _, qty in lines),
        "refunded_minor": int(facts["refunded_minor"]),
        "lines": lines,
    }


def stage_contribution(row: Mapping[str, Any]) -> dict[StatKey, tuple[int, int, int]]:
    """What one case adds to the stage rows: (cases, microseconds, over SLA) per row key."""
    day = row.get("day_date") or ""
    if not day:
        return {}
    keys = (("all", "all"), ("type", row["type"]), ("responsibility", row["responsibility"]))
    return stage_rows(row, day, AS_TRACKED, keys)


def refund_split(amount: int, lines: list[list[Any]]) -> list[int]:
    """A refund split over a case's lines in proportion to their units, exactly (largest
    remainder: the minor units left go one each to the lines with the largest remainders,
    the earlier line first on a tie)."""
    if not lines or sum(int(q) for _, q in lines) <= 0:
        return [0] * len(lines)
    return split_by_largest_remainder(amount, [int(q) for _, q in lines])


def kpi_contribution(row: Mapping[str, Any]) -> dict[KpiKey, tuple[int, int, int]]:
    """What one case adds to the KPI rows: (cases, units, refund minor) per row key. A case
    counts once per SKU it names; a case without lines counts under the SKU ""."""
    day = row.get("day_date") or ""
    if not day:
        return {}
    channel, currency = row["channel"], row["currency"]
    units, refund = int(row["units"]), int(row["refunded_minor"])
    out: dict[KpiKey, tuple[int, int, int]] = {}
    for dimension, key in (
        ("all", "all"),
        ("type", row["type"]),
        ("responsibility", row["responsibility"]),
    ):
        out[(dimension, day, channel, key, currency)] = (1, units, refund)
    lines = row["lines"] or []
    if not lines:
        out[("sku", day, channel, "", currency)] = (1, 0, refund)
        return _and_every_channel(out)
    per_sku: dict[str, list[int]] = {}
    for (sku, qty), share in zip(lines, refund_split(refund, lines), strict=True):
        t = per_sku.setdefault(sku, [1, 0, 0])
        t[1] += int(qty)
        t[2] += share
    for sku, (n, q, r) in per_sku.items():
        out[("sku", day, channel, sku, currency)] = (n, q, r)
    return _and_every_channel(out)


def _and_every_channel(out: dict[Any, Any]) -> dict[Any, Any]:
    """Rows keyed (dimension, day, channel, ...) and the same for the "*" channel."""
    return {**out, **{(k[0], k[1], ALL_CHANNELS, *k[3:]): v for k, v in out.items()}}


def shipped_contribution(
    row: Mapping[str, Any], lines: Iterable[tuple[str, int]], local_day: Callable[[datetime], str]
) -> dict[ShipKey, tuple[int, int]]:
    """What one order's first shipment adds to the shipped rows: (orders, units) per row key,
    on the merchant-local day it shipped."""
    shipped = row.get("shipped_at")
    if shipped is None:
        return {}
    day, channel = local_day(shipped), row["channel"]
    per_sku: dict[str, int] = {}
    for sku, qty in lines:
        per_sku[sku] = per_sku.get(sku, 0) + int(qty)
    out: dict[ShipKey, tuple[int, int]] = {("all", day, channel, "all"): (1, sum(per_sku.values()))}
    for sku, qty in per_sku.items():
        out[("sku", day, channel, sku)] = (1, qty)
    return _and_every_channel(out)


def add_deltas(
    before: Iterable[Mapping[Any, tuple[int, ...]]],
    after: Iterable[Mapping[Any, tuple[int, ...]]],
) -> list[tuple[Any, ...]]:
    """The rows' change when contributions go from `before` to `after`: (key, *sums), zero
    changes dropped, sorted by key (the lock order)."""
    acc: dict[Any, list[int]] = {}
    for sign, parts in ((-1, before), (1, after)):
        for part in parts:
            for key, values in part.items():
                t = acc.setdefault(key, [0] * len(values))
                for i, v in enumerate(values):
                    t[i] += sign * v
    return [(k, *v) for k, v in sorted(acc.items()) if any(v)]
