"""HTTP routes of the analytics domain: business events and requirements in; the stage
table, ship time, carrier on-time rates, the daily series and order timelines out."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ordertally.analytics import aftersale, service
from ordertally.analytics.event_templates import AFTERSALE_STAGES, INDUSTRY_TEMPLATES, STAGES
from ordertally.analytics.histogram import RELATIVE_ERROR
from ordertally.analytics.models import OrderTimeline
from ordertally.analytics.schemas import BusinessEventsIn, RequirementIn
from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.http import database, json_response

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])

Day = Annotated[date, Query(description="Merchant-local day")]
By = Annotated[str, Query(pattern=r"^(all|channel|warehouse|carrier|day)$")]


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def timeline_doc(t: OrderTimeline) -> dict[str, Any]:
    """An order's timeline as JSON."""
    stamps = ("created_at", "paid_at", "allocated_at", "picking_at", "shipped_at")
    more = ("delivered_at", "completed_at", "fulfillment_start_at", "ship_by_at")
    return {
        "order_no": t.order_no,
        "channel": t.channel,
        "day": t.day_date,
        "warehouse": t.warehouse,
        "carrier": t.carrier,
        **{k: _iso(getattr(t, k)) for k in (*stamps, *more)},
    }


@router.post("/fulfillment-events", status_code=201, summary="Record business events")
async def record_events(
    request: Request,
    body: BusinessEventsIn,
    principal: Annotated[Principal, Depends(require("analytics.record"))],
) -> Response:
    """Production confirmed, design approved, customs cleared, presale released or the
    merchant's own types; the same order and type again replaces the time."""
    async with database(request).transaction() as session:
        n = await service.record_events(session, body.events, principal.name, "api")
    return json_response({"recorded": n}, 201)


@router.put("/orders/{order_no}/requirement", summary="What an order's fulfilment waits for")
async def set_requirement(
    request: Request,
    order_no: str,
    body: RequirementIn,
    principal: Annotated[Principal, Depends(require("analytics.record"))],
) -> Response:
    """Set the industry template (and extra event types) and the ship-by deadline."""
    async with database(request).transaction() as session:
        required = await service.set_requirement(session, order_no, body, principal.name)
    return json_response({"order_no": order_no, "template": body.template, "required": required})


@router.get("/templates", summary="Industry templates and stages (data)")
async def templates(
    _: Annotated[Principal, Depends(require("analytics.read"))],
) -> Response:
    """The industry event templates and the stages with their SLAs."""
    return json_response(
        {
            "industry_templates": {k: list(v) for k, v in INDUSTRY_TEMPLATES.items()},
            "stages": [
                {"stage": n, "from": a, "to": b, "sla_hours": s.total_seconds() / 3600}
                for n, a, b, s in STAGES
            ],
        }
    )


@router.get("/orders/{order_no}/timeline", summary="An order's stage times")
async def order_timeline(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
) -> Response:
    """When the order reached each stage and when its fulfilment could start (403
    `analytics.out_of_scope` for a channel-scoped caller and another channel's order)."""
    async with database(request).transaction(write=False) as session:
        row = await service.timeline(session, order_no, principal.channels)
    return json_response(timeline_doc(row))


@router.get("/stages", summary="The stage table: avg, p50, p90, share over SLA, delay causes")
async def stages(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
    by: By = "all",
    exact: Annotated[bool, Query(description="Exact percentiles from the timelines")] = False,
) -> Response:
    """Orders created on these local days, by channel, warehouse, carrier or day; a
    channel-scoped caller's channels only. p50/p90 come from per-day histograms (within
    `percentile_error` of the exact value) unless `exact`."""
    async with database(request).transaction(write=False) as session:
        rows = await service.stage_table(
            session, date_from, date_to, by, principal.channels, exact=exact
        )
    return json_response(
        {
            "by": by,
            "exact": exact,
            "percentile_error": 0 if exact else round(RELATIVE_ERROR, 4),
            "items": rows,
        }
    )


@router.get("/ship-time", summary="Ship time from fulfilment start, against ship-by deadlines")
async def ship_time(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
    by: By = "channel",
) -> Response:
    """shipped_at - fulfillment_start_at (not created_at), per dimension value."""
    async with database(request).transaction(write=False) as session:
        rows = await service.ship_time(session, date_from, date_to, by, principal.channels)
    return json_response({"by": by, "items": rows})


@router.get("/carriers", summary="Carrier on-time delivery rates")
async def carriers(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
) -> Response:
    """Share delivered within the carrier SLA of shipping, per carrier."""
    async with database(request).transaction(write=False) as session:
        rows = await service.carriers(session, date_from, date_to, principal.channels)
    return json_response({"items": rows})


@router.get("/daily", summary="Orders, amounts and paid rate per day and channel")
async def daily(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
) -> Response:
    """The daily series per local day, channel and currency."""
    async with database(request).transaction(write=False) as session:
        rows = await service.daily(session, date_from, date_to, principal.channels)
    return json_response({"items": rows})


AftersaleBy = Annotated[str, Query(pattern=r"^(all|channel|type|responsibility|day)$")]
KpiBy = Annotated[str, Query(pattern=r"^(all|channel|sku|responsibility|type|day)$")]
OneChannel = Annotated[
    str | None, Query(max_length=32, description="One channel (within the caller's scope)")
]


@router.get("/aftersale-stages", summary="After-sales stage table: avg, p50, p90, share over SLA")
async def aftersale_stages(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
    by: AftersaleBy = "all",
    channel: OneChannel = None,
) -> Response:
    """Cases requested on these local days, by channel, type, responsibility or day; a
    channel-scoped caller's channels only (403 `analytics.out_of_scope` for another
    channel). p50/p90 come from per-day histograms (within `percentile_error`)."""
    async with database(request).transaction(write=False) as session:
        scope = aftersale.narrow(principal.channels, channel)
        rows = await aftersale.stage_table(session, date_from, date_to, by, scope)
    return json_response(
        {
            "by": by,
            "percentile_error": round(RELATIVE_ERROR, 4),
            "stages": [
                {"stage": n, "from": a, "to": b, "sla_hours": s.total_seconds() / 3600}
                for n, a, b, s in AFTERSALE_STAGES
            ],
            "items": rows,
        }
    )


@router.get("/aftersale-kpis", summary="After-sales rate and refunds by SKU, channel, ...")
async def aftersale_kpis(
    request: Request,
    date_from: Day,
    date_to: Day,
    principal: Annotated[Principal, Depends(require("analytics.read"))],
    by: KpiBy = "all",
    channel: OneChannel = None,
) -> Response:
    """Cases and units requested on these local days against orders and units shipped on
    them, and the refunds confirmed for those cases (exact decimal strings per currency), by
    SKU, channel, responsibility, type or day; a channel-scoped caller's channels only."""
    async with database(request).transaction(write=False) as session:
        scope = aftersale.narrow(principal.channels, channel)
        rows = await aftersale.kpis(session, date_from, date_to, by, scope)
    return json_response({"by": by, "items": rows})
