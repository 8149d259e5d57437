"""Analytics use cases: keep order timelines from events, record business events and what an
order waits for, compute when fulfilment could start, and the stage table and KPIs."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics import aftersale_rows, delay_rows, histogram, repository
from ordertally.analytics.errors import (
    InvalidAnalyticsRequest,
    TimelineNotFound,
    TimelineOutOfScope,
    UnknownIndustryTemplate,
)
from ordertally.analytics.event_templates import (
    DIMENSIONS,
    INDUSTRY_TEMPLATES,
    SHIP_DEADLINE,
    SHIP_TIME,
    STAGES,
)
from ordertally.analytics.models import OrderTimeline
from ordertally.analytics.schemas import BusinessEventIn, RequirementIn
from ordertally.core import clock
from ordertally.core.db import Database, dialect_of
from ordertally.core.money import format_minor
from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.events.registry import Envelope
from ordertally.orders import service as orders_service

# Order status events -> the timeline column their time fills (first time only).
STAGE_OF_EVENT = {
    "OrderPaid": "paid_at",
    "OrderReopenedPaid": "paid_at",
    "OrderAllocated": "allocated_at",
    "OrderFulfillmentStarted": "picking_at",
    "OrderShipped": "shipped_at",
    "OrderDelivered": "delivered_at",
    "OrderCompleted": "completed_at",
}
TIMELINE_EVENTS = ("OrderCreated", *STAGE_OF_EVENT, "ShipmentShipped", "ShipmentDelivered")


def _dt(value: str | datetime) -> datetime:
    return clock.as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


async def tally_order(session: AsyncSession, event: Envelope) -> None:
    """Count an OrderCreated on its merchant-local business day."""
    p = event.payload
    await repository.add_to_tally(
        session, local_day(_dt(p["created_at"])), p["channel"], p["currency"], p["total_minor"]
    )


async def tally_orders(session: AsyncSession, events: list[Envelope]) -> None:
    """Count many OrderCreated events: summed per (day, channel, currency) and written in that
    key order, so two workers' batches take shared tally rows in the same order."""
    sums: dict[tuple[str, str, str], list[int]] = {}
    for event in events:
        p = event.payload
        key = (local_day(_dt(p["created_at"])), p["channel"], p["currency"])
        counted = sums.setdefault(key, [0, 0])
        counted[0] += 1
        counted[1] += int(p["total_minor"])
    await repository.add_many_to_tally(
        session, [(*key, count, total) for key, (count, total) in sorted(sums.items())]
    )


def local_day(at: datetime) -> str:
    """The merchant-local business day of a moment."""
    return clock.to_local(at, get_settings().timezone).date().isoformat()


async def apply_event(session: AsyncSession, event: Envelope) -> None:
    """Fold one order or shipment event into the order's timeline (`apply_events` of one)."""
    await apply_events(session, [event])


def _earliest(seen: datetime | None, at: datetime) -> datetime:
    return at if seen is None or at < clock.as_utc(seen) else clock.as_utc(seen)


async def apply_events(session: AsyncSession, events: list[Envelope]) -> None:
    """Fold a batch of order and shipment events into the orders' timelines and the stage
    rows: the batch's timelines are locked and read in one statement, folded here (each stage
    keeps its earliest time, so a replayed, late or re-timed event lands where it belongs),
    written back in one, and the stage rows get each order's new contribution less its old
    one in one more (ADR 0038)."""
    orders = {e.payload["order_id"]: e.payload["order_no"] for e in events}
    if not orders:
        return
    locked = await repository.lock_timelines(session, sorted(orders.items()))
    before = {r["order_id"]: r for r in locked}
    after = {order_id: dict(r) for order_id, r in before.items()}
    paid: dict[str, dict[str, Any]] = {}
    for event in events:
        p = event.payload
        row = after[p["order_id"]]
        if event.type == "OrderCreated":
            at = _dt(p["created_at"])
            row.update(
                channel=p["channel"],
                currency=p["currency"],
                total_minor=p["total_minor"],
                day_date=local_day(at),
                created_at=_earliest(row["created_at"], at),
            )
        elif event.type in STAGE_OF_EVENT:
            column = STAGE_OF_EVENT[event.type]
            row[column] = _earliest(row[column], _dt(p["occurred_at"]))
            if column == "paid_at":
                paid[row["order_no"]] = row
        elif event.type == "ShipmentShipped":
            row.update(warehouse=p["warehouse"], carrier=p["carrier"])
    if paid:
        waiting = await repository.with_requirement(session, list(paid))
        for order_no, row in paid.items():
            if order_no in waiting:
                await _compute_start(session, row)
            else:
                row["fulfillment_start_at"] = row["paid_at"]
    await _store(session, before, after)


async def _store(
    session: AsyncSession, before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> None:
    """Write the timelines that changed and move the stage, delay-cause, paid and shipped rows
    by the difference (PostgreSQL: one statement)."""
    changed = [k for k, row in after.items() if row != before[k]]
    if not changed:
        return
    old, new = [before[k] for k in changed], [after[k] for k in changed]
    # The shipped rows (what the after-sales rate divides by) move only when an order's
    # shipped day or channel does: once in an order's life, unless an event comes late.
    moves: list[tuple[int, int, str, str]] = []
    for k in changed:
        was, now = _shipped_key(before[k]), _shipped_key(after[k])
        if was != now:
            moves += [(k, -1, *was)] if was else []
            moves += [(k, 1, *now)] if now else []
    in_one_statement = dialect_of(session) == "postgresql"
    await repository.store_timelines_and_deltas(
        session,
        new,
        histogram.deltas(old, new),
        delay_rows.delay_deltas(old, new),
        delay_rows.paid_deltas(old, new),
        moves if in_one_statement else [],
    )
    moved = sorted({k for k, *_ in moves})
    if moved and not in_one_statement:
        lines = await orders_service.lines_of_orders(session, moved)
        await repository.add_shipped_deltas(
            session,
            aftersale_rows.add_deltas(
                (_shipped(before[k], lines[k]) for k in moved),
                (_shipped(after[k], lines[k]) for k in moved),
            ),
        )


def _shipped_key(row: dict[str, Any]) -> tuple[str, str] | None:
    at = row.get("shipped_at")
    return None if at is None else (local_day(at), row["channel"])


def _shipped(row: dict[str, Any], lines: list[Any]) -> dict[Any, tuple[int, int]]:
    return aftersale_rows.shipped_contribution(
        row, [(line.sku, line.quantity) for line in lines], local_day
    )


async def apply_cases(session: AsyncSession, order_ids: Iterable[int]) -> None:
    """An exception case opened on these orders: read each order's case types again and move
    its delay-cause rows by the difference (ADR 0043). The timelines are locked (created empty
    where missing: the order's own events may not have been folded yet) in order id order;
    the types read are added to those stored (a case is never deleted nor retyped), so a
    replayed, late or out-of-order case event changes nothing twice."""
    ids = sorted(set(order_ids))
    if not ids:
        return
    nos = {o.id: o.order_no for o in await orders_service.get_orders_by_id(session, ids)}
    if not nos:
        return
    locked = await repository.lock_timelines(session, sorted(nos.items()))
    before = {r["order_id"]: r for r in locked}
    found = await repository.exception_types_of(session, sorted(nos))
    after = {
        order_id: {
            **row,
            "exception_types": delay_rows.merged_types(
                row["exception_types"], found.get(order_id, ())
            ),
        }
        for order_id, row in before.items()
    }
    await _store(session, before, after)


async def _compute_start(session: AsyncSession, row: dict[str, Any]) -> None:
    """Set a timeline row's fulfillment_start_at and ship_by_at from its payment, requirement
    and business events."""
    order_no = row["order_no"]
    req = await repository.requirement(session, order_no)
    events = await repository.events_of(session, order_no)
    row["fulfillment_start_at"] = fulfillment_start(
        row["paid_at"], req.required if req else (), events
    )
    row["ship_by_at"] = req.ship_by_at if req else None


def fulfillment_start(
    paid_at: datetime | None, required: Iterable[str], events: dict[str, datetime]
) -> datetime | None:
    """When fulfilment could start: the latest required event (never before payment), or the
    payment when nothing is required; None while a required event is missing."""
    required = list(required)
    if paid_at is None or any(t not in events for t in required):
        return None
    return max([paid_at, *(events[t] for t in required)])


async def refresh_start(session: AsyncSession, order_no: str) -> None:
    """Recompute an order's fulfillment_start_at from its payment, requirement and events
    (and move the stage rows by the change)."""
    row = await repository.lock_timeline(session, order_no)
    if row is None:
        return
    new = dict(row)
    await _compute_start(session, new)
    await _store(session, {row["order_id"]: row}, {row["order_id"]: new})


async def record_events(
    session: AsyncSession, events: list[BusinessEventIn], actor: str, source: str
) -> int:
    """Record business events (API, file or platform) and refresh the orders' start."""
    now = clock.now()
    for e in events:
        await repository.upsert_event(
            session,
            {
                "order_no": e.order_no,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "source": source,
                "recorded_by": actor,
                "recorded_at": now,
            },
        )
    for order_no in dict.fromkeys(e.order_no for e in events):
        await refresh_start(session, order_no)
    return len(events)


def read_events_file(path: Path) -> list[BusinessEventIn]:
    """Business events from a CSV file with columns order_no, type, occurred_at (ISO 8601
    with its offset); UTF-8 (with or without BOM)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        try:
            return [
                BusinessEventIn.model_validate(
                    {"order_no": r["order_no"], "type": r["type"], "occurred_at": r["occurred_at"]}
                )
                for r in csv.DictReader(f)
            ]
        except (KeyError, ValueError) as exc:
            raise InvalidAnalyticsRequest(f"{path.name}: {exc}") from exc


async def set_requirement(
    session: AsyncSession, order_no: str, body: RequirementIn, actor: str
) -> list[str]:
    """Say what an order's fulfilment waits for; returns the required event types."""
    if body.template not in INDUSTRY_TEMPLATES:
        raise UnknownIndustryTemplate(f"no industry template {body.template!r}", field="template")
    required = list(dict.fromkeys([*INDUSTRY_TEMPLATES[body.template], *body.extra_events]))
    await repository.upsert_requirement(
        session,
        {
            "order_no": order_no,
            "template": body.template,
            "required": required,
            "ship_by_at": body.ship_by_at,
            "set_by": actor,
            "set_at": clock.now(),
        },
    )
    await refresh_start(session, order_no)
    return required


async def timeline(
    session: AsyncSession, order_no: str, channels: tuple[str, ...] | None = None
) -> OrderTimeline:
    """One order's timeline (404 if no event of it was seen; 403 for a channel-scoped caller
    and another channel's order)."""
    row = await repository.timeline(session, order_no)
    if row is None:
        raise TimelineNotFound(f"no timeline for order {order_no}")
    if channels is not None and row.channel not in channels:
        raise TimelineOutOfScope(f"order {order_no} is outside your channels")
    return row


def period(date_from: date, date_to: date, tz: str | None = None) -> tuple[datetime, datetime]:
    """Merchant-local days [date_from, date_to] as UTC bounds [since, until)."""
    if date_from > date_to:
        raise InvalidAnalyticsRequest("date_from is after date_to", field="date_from")
    zone = ZoneInfo(tz or get_settings().timezone)
    return (
        datetime.combine(date_from, time(), zone),
        datetime.combine(date_to + timedelta(days=1), time(), zone),
    )


def _check_dimension(by: str) -> None:
    if by not in DIMENSIONS:
        raise InvalidAnalyticsRequest(f"by must be one of {', '.join(DIMENSIONS)}", field="by")


Channels = tuple[str, ...] | None


async def aggregated(
    session: AsyncSession,
    stages: list[str],
    by: str,
    date_from: date,
    date_to: date,
    channels: Channels,
) -> dict[str, list[dict[str, Any]]]:
    """Per stage, per dimension value: orders, avg/p50/p90 seconds and orders over the SLA,
    summed from the pre-aggregated day rows (percentiles within histogram.RELATIVE_ERROR)."""
    rows = await repository.stage_buckets(
        session, by, date_from.isoformat(), date_to.isoformat(), stages, channels
    )
    groups: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}
    for stage, key, bucket, n, us, over in rows:
        if n:
            groups.setdefault((stage, key), []).append((bucket, n, us, over))
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in stages}
    for (stage, key), buckets in groups.items():
        orders = sum(b[1] for b in buckets)
        hist = [(b, n, us) for b, n, us, _ in buckets]
        out[stage].append(
            {
                "key": key,
                "orders": orders,
                "avg_seconds": sum(b[2] for b in buckets) / orders / 1_000_000,
                "p50_seconds": histogram.percentile(hist, orders, 0.5),
                "p90_seconds": histogram.percentile(hist, orders, 0.9),
                "over_sla": sum(b[3] for b in buckets),
            }
        )
    return out


async def stage_table(
    session: AsyncSession,
    date_from: date,
    date_to: date,
    by: str = "all",
    channels: Channels = None,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """The stage table: per stage and dimension value, avg/p50/p90, share over SLA and the
    main delay causes (exception types of the late orders). From the pre-aggregated day rows
    (p50/p90 within histogram.RELATIVE_ERROR of percentile_disc), or with `exact` from the
    timelines (percentile_cont); a channel-scoped caller's channels only."""
    _check_dimension(by)
    since, until = period(date_from, date_to)
    stages = [(n, a, b, sla.total_seconds()) for n, a, b, sla in (*STAGES, SHIP_TIME)]
    if exact:
        stats = await repository.stages_stats(session, stages, by, since, until, channels)
    else:
        stats = await aggregated(session, [n for n, *_ in stages], by, date_from, date_to, channels)
    causes_of: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for stage, key, kind, n in await repository.delay_rows(
        session, by, date_from.isoformat(), date_to.isoformat(), [n for n, *_ in stages], channels
    ):
        causes_of.setdefault((stage, key), []).append((kind, n))
    rows: list[dict[str, Any]] = []
    for name, _, _, sla_s in stages:
        causes = {key: found for (stage, key), found in causes_of.items() if stage == name}
        for s in sorted(stats[name], key=lambda s: s["key"]):
            rows.append(
                {
                    "stage": name,
                    by: s["key"],
                    "orders": s["orders"],
                    **stage_figures(s, sla_s),
                    "delay_causes": [
                        {"type": t, "orders": n}
                        for t, n in sorted(causes.get(s["key"], []), key=lambda c: (-c[1], c[0]))[
                            :3
                        ]
                    ],
                }
            )
    return rows


def stage_figures(s: dict[str, Any], sla_seconds: float) -> dict[str, Any]:
    """One aggregated stage row's hours (average, p50, p90), its SLA and the share over it, as
    the stage tables show them."""
    return {
        "avg_hours": round(s["avg_seconds"] / 3600, 4),
        "p50_hours": round(s["p50_seconds"] / 3600, 4),
        "p90_hours": round(s["p90_seconds"] / 3600, 4),
        "sla_hours": sla_seconds / 3600,
        "over_sla_share": round(s["over_sla"] / s["orders"], 4),
    }


async def ship_time(
    session: AsyncSession,
    date_from: date,
    date_to: date,
    by: str = "channel",
    channels: Channels = None,
) -> list[dict[str, Any]]:
    """Ship time (shipped_at - fulfillment_start_at) and the share shipped after the
    platform's ship-by deadline, per dimension value (from the pre-aggregated rows)."""
    _check_dimension(by)
    period(date_from, date_to)
    ship, deadline = SHIP_TIME[0], SHIP_DEADLINE[0]
    stats = await aggregated(session, [ship, deadline], by, date_from, date_to, channels)
    late = {s["key"]: (s["orders"], s["over_sla"]) for s in stats[deadline]}
    return [
        {
            by: s["key"],
            "orders": s["orders"],
            "avg_hours": round(s["avg_seconds"] / 3600, 4),
            "p50_hours": round(s["p50_seconds"] / 3600, 4),
            "p90_hours": round(s["p90_seconds"] / 3600, 4),
            "with_deadline": late.get(s["key"], (0, 0))[0],
            "after_deadline": late.get(s["key"], (0, 0))[1],
        }
        for s in sorted(stats[ship], key=lambda s: s["key"])
    ]


async def carriers(
    session: AsyncSession, date_from: date, date_to: date, channels: Channels = None
) -> list[dict[str, Any]]:
    """Carrier on-time delivery: delivered within CARRIER_SLA of shipping (the shipped →
    delivered stage's SLA), per carrier."""
    period(date_from, date_to)
    stage = next(n for n, a, b, sla in STAGES if (a, b) == ("shipped_at", "delivered_at"))
    stats = await aggregated(session, [stage], "carrier", date_from, date_to, channels)
    return [
        {
            "carrier": s["key"],
            "delivered": s["orders"],
            "on_time_rate": round(1 - s["over_sla"] / s["orders"], 4),
            "avg_hours": round(s["avg_seconds"] / 3600, 4),
        }
        for s in sorted(stats[stage], key=lambda s: s["key"])
    ]


async def daily(
    session: AsyncSession, date_from: date, date_to: date, channels: Channels = None
) -> list[dict[str, Any]]:
    """Orders, amounts and the paid rate per local day, channel and currency."""
    period(date_from, date_to)
    rows = await repository.daily(session, date_from.isoformat(), date_to.isoformat(), channels)
    return [
        {
            "day": r["day"],
            "channel": r["channel"],
            "currency": r["currency"],
            "orders": r["orders"],
            "total": format_minor(r["total_minor"], r["currency"]),
            "paid": r["paid"],
            "paid_rate": round(r["paid"] / r["orders"], 4),
        }
        for r in rows
    ]


async def rebuild(db: Database, batch: int = 2000) -> int:
    """Rebuild the tally, the timelines and their stage, delay-cause and paid rows from the
    event log (business events and requirements are inputs, kept) through the consumers'
    batch folds, then fold in every order's exception cases (the delay-cause consumer's fold
    over the orders that have one: cases older than their event, or than the outbox's
    retention, count too); returns the events replayed."""
    replayed, after = 0, 0
    async with db.transaction() as session:
        await repository.clear_read_models(session)
        while True:
            page = await events_service.replay_log(session, list(TIMELINE_EVENTS), after, batch)
            if not page:
                break
            events = [event for _, event in page]
            await tally_orders(session, [e for e in events if e.type == "OrderCreated"])
            await apply_events(session, events)
            after = page[-1][0]
            replayed += len(page)
        await _fold_every_case(session, batch)
    return replayed


async def _fold_every_case(session: AsyncSession, batch: int) -> None:
    """`apply_cases` over every order that has an exception case, a page at a time."""
    after = 0
    while page := await repository.orders_with_cases_after(session, after, batch):
        await apply_cases(session, page)
        after = page[-1]


async def rebuild_stages(db: Database, batch: int = 5000) -> int:
    """Recompute the stage, delay-cause and daily paid rows from the timelines as they stand
    (after a migration, or to check the incremental ones), the timelines' exception case types
    read again first: one statement per kind on PostgreSQL, pages of timelines on SQLite;
    returns the stage rows written."""
    async with db.transaction() as session:
        await repository.clear_stage_stats(session)
        await repository.clear_timeline_rows(session)
        if db.dialect == "postgresql":
            await repository.rebuild_stage_stats_pg(session)
        else:
            after = 0
            while page := await repository.timelines_after(session, after, batch):
                await repository.add_stage_deltas(session, histogram.deltas([], page))
                after = page[-1]["order_id"]
        await repository.rebuild_paid_rows(session)
        # Delay causes: from the types each timeline carries, then any type not carried yet.
        after = 0
        while page := await repository.timelines_with_cases_after(session, after, batch):
            await repository.add_timeline_row_deltas(session, delay_rows.delay_deltas([], page), [])
            after = page[-1]["order_id"]
        await _fold_every_case(session, batch)
        return await repository.stage_row_count(session)
