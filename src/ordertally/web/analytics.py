"""The analytics screen (分析): the timeliness KPIs (ship time from the fulfilment start, the
share shipped after the platforms' deadlines, carriers' on-time rates, orders and paid rate
per day) and the stage table, per channel, warehouse, carrier or day, and the after-sales
panel (after-sales rate and refunds by SKU, channel, responsibility or type; the after-sales
stages), over a range of the merchant's days. The analytics domain's services compute every
figure."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ordertally.analytics import aftersale as analytics_aftersale
from ordertally.analytics import service as analytics_service
from ordertally.analytics.event_templates import DIMENSIONS
from ordertally.core import clock
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import get_settings
from ordertally.web import i18n, pages
from ordertally.web.aftersales import RESPONSIBILITY_LABELS
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, database, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

DEFAULT_DAYS = 7
MAX_DAYS = 92
STAGE_LABELS: dict[str, str] = {
    "pending_to_paid": N_("Created → paid"),
    "paid_to_allocated": N_("Paid → allocated"),
    "allocated_to_picking": N_("Allocated → picking"),
    "picking_to_shipped": N_("Picking → shipped"),
    "shipped_to_delivered": N_("Shipped → delivered"),
    "delivered_to_completed": N_("Delivered → completed"),
    "ship_time": N_("Ship time (from the fulfilment start)"),
}
AFTERSALE_STAGE_LABELS: dict[str, str] = {
    "as_requested_to_decided": N_("Requested → decided (approved or rejected)"),
    "as_approved_to_returned": N_("Approved → goods back"),
    "as_returned_to_inspected": N_("Goods back → inspected"),
    "as_returned_to_refunded": N_("Goods back → refunded"),
    "as_requested_to_resolved": N_("Requested → refunded, reshipped or exchanged"),
    "as_requested_to_closed": N_("Requested → closed"),
}
AFTERSALE_BY_LABELS: dict[str, str] = {
    "sku": N_("SKU"),
    "channel": N_("Channel"),
    "responsibility": N_("Responsibility"),
    "type": N_("After-sales type"),
}
DIMENSION_LABELS: dict[str, str] = {
    "all": N_("All orders"),
    "channel": N_("Channel"),
    "warehouse": N_("Warehouse"),
    "carrier": N_("Carrier"),
    "day": N_("Day"),
}


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _range(request: Request) -> tuple[date, date]:
    """The chosen merchant-local days (default: the last week up to today), at most
    MAX_DAYS long."""
    today = clock.now().astimezone(ZoneInfo(get_settings().timezone)).date()
    q = request.query_params
    end = _day(q.get("date_to")) or today
    start = _day(q.get("date_from")) or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        start, end = end, start
    if (end - start).days >= MAX_DAYS:
        start = end - timedelta(days=MAX_DAYS - 1)
    return start, end


def _chart(stages: list[dict[str, Any]], daily: list[dict[str, Any]], translate: Any) -> str:
    """The charts' data: p50/p90 hours per stage (all orders) and orders per day."""
    overall = [r for r in stages if r.get("all") in ("all", None)]
    per_day: dict[str, int] = {}
    for r in daily:
        per_day[r["day"]] = per_day.get(r["day"], 0) + r["orders"]
    doc = {
        "stages": [translate(STAGE_LABELS.get(r["stage"], r["stage"])) for r in overall],
        "p50": [r["p50_hours"] for r in overall],
        "p90": [r["p90_hours"] for r in overall],
        "sla": [r["sla_hours"] for r in overall],
        "labels": {"p50": "p50", "p90": "p90", "sla": translate(N_("SLA (hours)"))},
        "days": sorted(per_day),
        "orders": [per_day[d] for d in sorted(per_day)],
        "orders_label": translate(N_("Orders")),
    }
    return orjson.dumps(doc).decode().replace("<", "\\u003c")


async def _context(request: Request, user: SignedIn) -> dict[str, Any]:
    start, end = _range(request)
    by = request.query_params.get("by", "channel")
    by = by if by in DIMENSIONS else "channel"
    async with database(request).transaction(write=False) as session:
        # A channel-scoped user's figures cover their channels only (as the orders list).
        scope = user.channels
        stages = await analytics_service.stage_table(session, start, end, by, scope)
        overall = (
            stages
            if by == "all"
            else await analytics_service.stage_table(session, start, end, "all", scope)
        )
        ship = await analytics_service.ship_time(
            session, start, end, "all" if by == "day" else by, scope
        )
        carriers = await analytics_service.carriers(session, start, end, scope)
        daily = await analytics_service.daily(session, start, end, scope)
        as_by = request.query_params.get("as_by", "sku")
        as_by = as_by if as_by in AFTERSALE_BY_LABELS else "sku"
        as_rows = await analytics_aftersale.kpis(session, start, end, as_by, scope)
        as_all = await analytics_aftersale.kpis(session, start, end, "all", scope)
        as_stages = await analytics_aftersale.stage_table(session, start, end, "all", scope)
    translate = i18n.translations(i18n.pick_locale(request.cookies.get("ot_lang"))).gettext
    shipped = sum(r["orders"] for r in ship)
    with_deadline = sum(r["with_deadline"] for r in ship)
    after_deadline = sum(r["after_deadline"] for r in ship)
    ship_all = next((r for r in overall if r["stage"] == "ship_time"), None)
    orders = sum(r["orders"] for r in daily)
    paid = sum(r["paid"] for r in daily)
    return pages._common(
        request,
        user,
        active="analytics",
        date_from=start.isoformat(),
        date_to=end.isoformat(),
        by=by,
        dimensions=DIMENSION_LABELS,
        stage_labels=STAGE_LABELS,
        stages=stages,
        ship=ship,
        carriers=carriers,
        daily=daily,
        kpi={
            "orders": orders,
            "paid_rate": paid / orders if orders else None,
            "shipped": shipped,
            "ship_p50": ship_all["p50_hours"] if ship_all else None,
            "ship_p90": ship_all["p90_hours"] if ship_all else None,
            "after_deadline": after_deadline / with_deadline if with_deadline else None,
            "on_time": (
                sum(c["on_time_rate"] * c["delivered"] for c in carriers)
                / sum(c["delivered"] for c in carriers)
                if carriers
                else None
            ),
        },
        chart_json=_chart(overall, daily, translate),
        aftersale={
            "by": as_by,
            "by_labels": AFTERSALE_BY_LABELS,
            "rows": as_rows,
            "overall": as_all[0] if as_all else None,
            "stages": as_stages,
            "stage_labels": AFTERSALE_STAGE_LABELS,
            "type_labels": pages.AFTERSALE_TYPE_LABELS,
            "responsibility_labels": RESPONSIBILITY_LABELS,
        },
    )


@router.get("/ui/analytics")
async def analytics_page(request: Request) -> Response:
    """Timeliness KPIs, the stage table and their charts for a range of the merchant's days."""
    user = await signed_in(request, "analytics.read")
    try:
        context = await _context(request, user)
    except OrdertallyError as exc:
        context = pages._common(request, user, reason="missing", permission=None, order_no="")
        return render(request, "forbidden.html", context, status=exc.status)
    return render(request, "analytics.html", context)
