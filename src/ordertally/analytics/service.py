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

from ordertally.analytics import repository
from ordertally.analytics.errors import (
    InvalidAnalyticsRequest,
    TimelineNotFound,
    UnknownIndustryTemplate,
)
from ordertally.analytics.event_templates import (
    CARRIER_SLA,
    DIMENSIONS,
    INDUSTRY_TEMPLATES,
    SHIP_TIME,
    STAGES,
)
from ordertally.analytics.models import OrderTimeline
from ordertally.analytics.schemas import BusinessEventIn, RequirementIn
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.events.registry import Envelope

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
    """Fold one order or shipment event into the order's timeline (idempotent: stage times
    keep their first value)."""
    p = event.payload
    if event.type == "OrderCreated":
        created = _dt(p["created_at"])
        await repository.upsert_created(
            session,
            {
                "order_id": p["order_id"],
                "order_no": p["order_no"],
                "channel": p["channel"],
                "currency": p["currency"],
                "total_minor": p["total_minor"],
                "day_date": local_day(created),
                "created_at": created,
            },
        )
        return
    if event.type in STAGE_OF_EVENT:
        at = _dt(p["occurred_at"])
        column = STAGE_OF_EVENT[event.type]
        await repository.set_first(session, p["order_id"], p["order_no"], {column: at})
        if column == "paid_at":
            await refresh_start(session, p["order_no"])
        return
    if event.type == "ShipmentShipped":
        await repository.set_first(
            session,
            p["order_id"],
            p["order_no"],
            {"warehouse": p["warehouse"], "carrier": p["carrier"]},
        )


async def apply_events(session: AsyncSession, events: list[Envelope]) -> None:
    """`apply_event` for a batch: one statement per kind of change instead of one per event
    (the first time of each stage per order wins, as one at a time)."""
    created: dict[int, dict[str, Any]] = {}
    stages: dict[str, dict[int, dict[str, Any]]] = {}
    shipped: dict[int, dict[str, Any]] = {}
    paid: list[str] = []
    for event in events:
        p = event.payload
        if event.type == "OrderCreated":
            at = _dt(p["created_at"])
            created.setdefault(
                p["order_id"],
                {
                    "order_id": p["order_id"],
                    "order_no": p["order_no"],
                    "channel": p["channel"],
                    "currency": p["currency"],
                    "total_minor": p["total_minor"],
                    "day_date": local_day(at),
                    "created_at": at,
                },
            )
        elif event.type in STAGE_OF_EVENT:
            column, at = STAGE_OF_EVENT[event.type], _dt(p["occurred_at"])
            rows = stages.setdefault(column, {})
            seen = rows.get(p["order_id"])
            if seen is None or at < seen[column]:
                rows[p["order_id"]] = {
                    "order_id": p["order_id"],
                    "order_no": p["order_no"],
                    column: at,
                }
            if column == "paid_at":
                paid.append(p["order_no"])
        elif event.type == "ShipmentShipped":
            shipped[p["order_id"]] = {
                "order_id": p["order_id"],
                "order_no": p["order_no"],
                "warehouse": p["warehouse"],
                "carrier": p["carrier"],
            }
    await repository.upsert_created_many(session, list(created.values()))
    for rows in stages.values():
        await repository.set_first_many(session, list(rows.values()))
    await repository.set_first_many(session, list(shipped.values()))
    if paid:
        waiting = await repository.with_requirement(session, paid)
        await repository.start_at_payment(session, [no for no in paid if no not in waiting])
        for order_no in dict.fromkeys(no for no in paid if no in waiting):
            await refresh_start(session, order_no)


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
    """Recompute an order's fulfillment_start_at from its payment, requirement and events."""
    row = await repository.timeline(session, order_no)
    if row is None:
        return
    req = await repository.requirement(session, order_no)
    events = await repository.events_of(session, order_no)
    start = fulfillment_start(row.paid_at, req.required if req else (), events)
    await repository.set_start(session, order_no, start, req.ship_by_at if req else None)


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


async def timeline(session: AsyncSession, order_no: str) -> OrderTimeline:
    """One order's timeline (404 if no event of it was seen)."""
    row = await repository.timeline(session, order_no)
    if row is None:
        raise TimelineNotFound(f"no timeline for order {order_no}")
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


async def stage_table(
    session: AsyncSession, date_from: date, date_to: date, by: str = "all"
) -> list[dict[str, Any]]:
    """The stage table: per stage and dimension value, avg/p50/p90, share over SLA and the
    main delay causes (exception types of the late orders)."""
    _check_dimension(by)
    since, until = period(date_from, date_to)
    stages = [(n, a, b, sla.total_seconds()) for n, a, b, sla in (*STAGES, SHIP_TIME)]
    stats = await repository.stages_stats(session, stages, by, since, until)
    all_causes = await repository.stages_delay_causes(session, stages, by, since, until)
    rows: list[dict[str, Any]] = []
    for name, _, _, sla_s in stages:
        causes: dict[str, list[tuple[str, int]]] = {}
        for key, kind, n in all_causes[name]:
            causes.setdefault(key, []).append((kind, n))
        for s in stats[name]:
            rows.append(
                {
                    "stage": name,
                    by: s["key"],
                    "orders": s["orders"],
                    "avg_hours": round(s["avg_seconds"] / 3600, 4),
                    "p50_hours": round(s["p50_seconds"] / 3600, 4),
                    "p90_hours": round(s["p90_seconds"] / 3600, 4),
                    "sla_hours": sla_s / 3600,
                    "over_sla_share": round(s["over_sla"] / s["orders"], 4),
                    "delay_causes": [
                        {"type": t, "orders": n}
                        for t, n in sorted(causes.get(s["key"], []), key=lambda c: (-c[1], c[0]))[
                            :3
                        ]
                    ],
                }
            )
    return rows


async def ship_time(
    session: AsyncSession, date_from: date, date_to: date, by: str = "channel"
) -> list[dict[str, Any]]:
    """Ship time (shipped_at - fulfillment_start_at) and the share shipped after the
    platform's ship-by deadline, per dimension value."""
    _check_dimension(by)
    since, until = period(date_from, date_to)
    _, start, end, sla = SHIP_TIME
    stats = await repository.stage_stats(session, start, end, sla.total_seconds(), by, since, until)
    late = await repository.ship_deadline_misses(session, by, since, until)
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
        for s in stats
    ]


async def carriers(session: AsyncSession, date_from: date, date_to: date) -> list[dict[str, Any]]:
    """Carrier on-time delivery: delivered within CARRIER_SLA of shipping, per carrier."""
    since, until = period(date_from, date_to)
    sla = CARRIER_SLA.total_seconds()
    stats = await repository.stage_stats(
        session, "shipped_at", "delivered_at", sla, "carrier", since, until
    )
    return [
        {
            "carrier": s["key"],
            "delivered": s["orders"],
            "on_time_rate": round(1 - s["over_sla"] / s["orders"], 4),
            "avg_hours": round(s["avg_seconds"] / 3600, 4),
        }
        for s in stats
    ]


async def daily(session: AsyncSession, date_from: date, date_to: date) -> list[dict[str, Any]]:
    """Orders, amounts and the paid rate per local day, channel and currency."""
    rows = await repository.daily(session, date_from.isoformat(), date_to.isoformat())
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
    """Rebuild the tally and the timelines from the event log (business events and
    requirements are inputs, kept); returns the events replayed."""
    replayed, after = 0, 0
    async with db.transaction() as session:
        await repository.clear_read_models(session)
        while True:
            page = await events_service.replay_log(session, list(TIMELINE_EVENTS), after, batch)
            if not page:
                break
            for event_id, event in page:
                if event.type == "OrderCreated":
                    await tally_order(session, event)
                await apply_event(session, event)
                after = event_id
            replayed += len(page)
    return replayed
