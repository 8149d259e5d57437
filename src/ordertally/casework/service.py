"""Workbench use cases: the case list with facet counts, a case with its log, and the cases of
an order for its JSON. Working a case goes through exceptions' service (resolving through
orders' holds, which re-reserves a stock-shortage hold's units first)."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.casework import repository
from ordertally.casework.errors import BadCursor
from ordertally.casework.filters import CaseFilter
from ordertally.core import clock
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase, ExceptionLog
from ordertally.orders.models import SalesOrder


def encode_cursor(case_id: int) -> str:
    """The opaque keyset cursor after a case."""
    return base64.urlsafe_b64encode(f"c{case_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The case id behind a cursor, or BadCursor."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("c"):
            raise ValueError(text)
        return int(text[1:])
    except ValueError as exc:
        raise BadCursor(f"bad cursor: {cursor!r}") from exc


async def list_cases(
    session: AsyncSession, f: CaseFilter, cursor: str | None, limit: int
) -> dict[str, Any]:
    """A page of cases (newest first) with the next cursor and counts per facet."""
    rows = await repository.list_cases(
        session, f, decode_cursor(cursor) if cursor else None, limit + 1
    )
    page = rows[:limit]
    nos = await repository.order_nos(session, [c.order_id for c in page if c.order_id])
    return {
        "items": [case_doc(c, nos.get(c.order_id or 0)) for c in page],
        "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None,
        "facets": await repository.facet_counts(session, f),
    }


async def case_detail(session: AsyncSession, case_id: int) -> dict[str, Any]:
    """A case with its log."""
    case = await exceptions_service.get_case(session, case_id)
    nos = await repository.order_nos(session, [case.order_id] if case.order_id else [])
    logs = await exceptions_service.logs_of(session, [case.id])
    return case_doc(case, nos.get(case.order_id or 0)) | {"log": [log_doc(x) for x in logs]}


async def order_cases(session: AsyncSession, order: SalesOrder) -> tuple[str, Any]:
    """The "cases" part of an order's JSON: every case of the order with its log."""
    cases = await exceptions_service.cases_of_order(session, order.id)
    logs = await exceptions_service.logs_of(session, [c.id for c in cases])
    by_case: dict[int, list[dict[str, Any]]] = {}
    for row in logs:
        by_case.setdefault(row.case_id, []).append(log_doc(row))
    return "cases", [case_doc(c, order.order_no) | {"log": by_case.get(c.id, [])} for c in cases]


def _iso(value: Any) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def case_doc(case: ExceptionCase, order_no: str | None) -> dict[str, Any]:
    """A case as the API shows it."""
    now = clock.now()
    due = clock.as_utc(case.due_at) if case.due_at else None
    return {
        "id": case.id,
        "order_no": order_no,
        "type": case.type,
        "category": case.side,
        "area": case.category,
        "severity": case.severity,
        "state": case.status,
        "blocking": case.blocking,
        "owner_role": case.owner_role,
        "assignee": case.assignee,
        "due_at": _iso(due),
        "sla_breached": bool(
            due and case.status in ("open", "in_progress", "escalated") and due < now
        ),
        "detail": case.detail,
        "resolution": case.resolution,
        "resolution_code": case.resolution_code,
        "created_at": _iso(case.created_at),
        "resolved_at": _iso(case.resolved_at),
        "escalated_at": _iso(case.escalated_at),
    }


def log_doc(row: ExceptionLog) -> dict[str, Any]:
    """A log row as the API shows it."""
    return {
        "action": row.action,
        "actor": row.actor,
        "source_ip": row.source_ip,
        "note": row.note,
        "detail": row.detail,
        "at": _iso(row.at),
    }
