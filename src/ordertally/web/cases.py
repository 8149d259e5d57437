"""The exception workbench page: cases that need work, filtered by state, category, type, role
and SLA, with counts per facet and keyset pages. Reads through the workbench's service; the
actions are the API's (`/api/v1/cases/...`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from ordertally.auth import users
from ordertally.casework import service as casework_service
from ordertally.casework.errors import BadCursor
from ordertally.casework.filters import CaseFilter
from ordertally.core import clock
from ordertally.exceptions import registry
from ordertally.web import pages
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50

STATE_LABELS: dict[str, str] = {
    "open": N_("Open"),
    "in_progress": N_("In progress"),
    "escalated": N_("Escalated"),
    "resolved": N_("Resolved"),
    "cancelled": N_("Cancelled"),
}
CATEGORY_LABELS: dict[str, str] = {
    "customer": N_("Customer side"),
    "system": N_("System side"),
    "supply_chain": N_("Supply chain"),
}
SEVERITY_LABELS: dict[str, str] = {
    "low": N_("Low"),
    "normal": N_("Normal"),
    "high": N_("High"),
    "critical": N_("Critical"),
}

# Resolution codes offered in the form (any code matching the API's pattern is taken).
RESOLUTION_CODES: dict[str, str] = {
    "refunded": N_("Refunded"),
    "reshipped": N_("Reshipped"),
    "fixed": N_("Fixed"),
    "customer_contacted": N_("Customer contacted"),
    "duplicate": N_("Duplicate"),
    "no_action_needed": N_("No action needed"),
}


def sla_timer(case: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """How long an active case has left before its SLA due time, or how late it is (None for a
    closed case or one without a due time): hours and minutes, and whether it is late."""
    if not case.get("due_at") or case.get("state") not in ("open", "in_progress", "escalated"):
        return None
    due = datetime.fromisoformat(str(case["due_at"]).replace("Z", "+00:00"))
    seconds = (due - now).total_seconds()
    late = seconds < 0
    hours, rest = divmod(int(abs(seconds) // 60), 60)
    return {"late": late, "hours": hours, "minutes": rest}


def _pick(value: str | None, known: dict[str, str] | set[str]) -> str | None:
    return value if value in known else None


def cases_link(**params: str) -> str:
    """The page's address with these filters (empty ones left out)."""
    kept = {k: v for k, v in params.items() if v}
    return "/ui/cases" + (f"?{urlencode(kept)}" if kept else "")


@router.get("/ui/cases")
async def cases_page(request: Request) -> Response:
    """Cases, newest first, filtered; htmx asks for the table block alone."""
    user = await signed_in(request, "cases.read")
    return await render_list(request, user, request.query_params)


async def render_list(
    request: Request,
    user: SignedIn,
    q: Mapping[str, str],
    *,
    status: int = 200,
    **extra: Any,
) -> Response:
    """The list under the filters in `q` (a page's query, or a bulk form's hidden fields)."""
    filters = {
        "state": _pick(q.get("state"), STATE_LABELS) or "",
        "category": _pick(q.get("category"), CATEGORY_LABELS) or "",
        "type": (q.get("type") or "").strip()[:64],
        "role": _pick(q.get("role"), pages.ROLE_LABELS) or "",
        "breached": "1" if q.get("breached") == "1" else "",
    }
    f = CaseFilter(
        state=filters["state"] or None,
        category=filters["category"] or None,
        type=filters["type"] or None,
        role=filters["role"] or None,
        breached=True if filters["breached"] else None,
        now=clock.now(),
        channels=user.channels,
    )
    cursor = (q.get("after") or "")[:100] or None
    async with database(request).transaction(write=False) as session:
        try:
            page = await casework_service.list_cases(session, f, cursor, PAGE_SIZE)
        except BadCursor:
            cursor = None
            page = await casework_service.list_cases(session, f, None, PAGE_SIZE)
        people = await users.list_users(session) if may(user, "cases.work") else []
    context: dict[str, Any] = pages._common(
        request,
        user,
        active="cases",
        cases=[c | {"timer": sla_timer(c, f.now or clock.now())} for c in page["items"]],
        facets=page["facets"],
        filters=filters,
        state_labels=STATE_LABELS,
        category_labels=CATEGORY_LABELS,
        severity_labels=SEVERITY_LABELS,
        type_labels={
            name: (entry.label_zh, entry.label_en) for name, entry in registry.TYPES.items()
        },
        next_link=cases_link(**filters, after=page["next_cursor"]) if page["next_cursor"] else None,
        first_link=cases_link(**filters) if cursor else None,
        can_work=may(user, "cases.work"),
        can_batch=may(user, "cases.batch"),
        people=[p for p in people if p.active],
        path="/ui/cases",
        query=urlencode({k: v for k, v in filters.items() if v}),
        resolution_codes=RESOLUTION_CODES,
        **({"bulk_error": None, "bulk_results": []} | extra),
    )
    block = "table" if request.headers.get("hx-target") == "cases-table" else None
    return render(request, "cases.html", context, block=block, status=status)
