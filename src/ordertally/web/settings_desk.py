"""Settings screens beside the main settings page: the exception workbench's SLA policies
(each case type's due time, warning, severity and owner; edited by whom may manage cases) and
the carriers (which adapter creates waybills and tracks parcels, which company per warehouse;
read from the configuration, no secret shown). Pages call the exceptions service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ordertally.auth.models import ROLES
from ordertally.casework.schemas import PolicyIn
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import SEVERITIES
from ordertally.web import cases
from ordertally.web.case_desk import actor_name, say
from ordertally.web.i18n import N_
from ordertally.web.pages import ROLE_LABELS, _common, _error_text
from ordertally.web.security import check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

FLASHES: dict[str, str] = {"saved": N_("The policy was saved: cases opened from now on follow it.")}


async def _sla_page(
    request: Request, *, error: str | None = None, failed: str | None = None, status: int = 200
) -> Response:
    user = await signed_in(request, "cases.read")
    async with database(request).transaction(write=False) as session:
        policies = await exceptions_service.list_policies(session)
    context = _common(
        request,
        user,
        active="settings",
        path="/ui/settings/sla",
        query="",
        policies=policies,
        severities=SEVERITIES,
        severity_labels=cases.SEVERITY_LABELS,
        category_labels=cases.CATEGORY_LABELS,
        roles=ROLES,
        role_labels=ROLE_LABELS,
        can_manage=may(user, "cases.manage"),
        flash=FLASHES.get(request.query_params.get("done", "")),
        error=error,
        failed=failed,
        # One row is edited at a time: the page stays light with every type listed.
        editing=failed or request.query_params.get("edit", "")[:64],
    )
    return render(request, "sla_policies.html", context, status=status)


@router.get("/ui/settings/sla")
async def sla_policies(request: Request) -> Response:
    """Every case type's SLA policy (the registry's default, or the stored edit)."""
    return await _sla_page(request)


@router.post("/ui/settings/sla/{case_type}")
async def save_sla_policy(request: Request, case_type: str) -> Response:
    """Change a case type's due time, warning, severity and owner; cases opened from now on
    follow it. Bad input changes nothing."""
    user = await signed_in(request, "cases.manage")
    await check_csrf(request, user)
    form = await request.form()
    async with database(request).transaction(write=False) as session:
        current = await exceptions_service.policy_of(session, case_type[:64])
    fields = {
        "sla_minutes": str(form.get("sla_minutes", "")).strip()[:8],
        "warn_minutes": str(form.get("warn_minutes", "")).strip()[:8],
        "severity": str(form.get("severity", "")),
        "owner_role": str(form.get("owner_role", "")),
    }
    try:
        body = PolicyIn.model_validate(
            {
                **fields,
                "evidence": current.evidence,
                "escalate_to": current.escalate_to,
                "escalate_after_minutes": current.escalate_after_minutes,
                "notify_on_open": current.notify_on_open,
                "channels": list(current.channels),
            }
        )
    except ValidationError:
        message = N_("Minutes: a due time of 1 to 129,600 and a warning of 0 to 2,880.")
        return await _sla_page(request, error=say(request, message), failed=case_type, status=422)
    try:
        async with database(request).transaction() as session:
            await exceptions_service.edit_policy(
                session, case_type, body.model_dump(), actor_name(user)
            )
    except OrdertallyError as exc:
        return await _sla_page(
            request, error=say(request, _error_text(exc)), failed=case_type, status=exc.status
        )
    return RedirectResponse("/ui/settings/sla?done=saved", status_code=303)


def _carriers() -> dict[str, Any]:
    s = get_settings()
    return {
        "adapter": s.fulfillment_carrier,
        "kuaidi100_on": bool(s.kuaidi100_api_base and s.kuaidi100_key),
        "default_company": s.fulfillment_default_company,
        "by_warehouse": dict(sorted(s.fulfillment_company_by_warehouse.items())),
        "auto_allocate": s.fulfillment_auto_allocate,
        "poll_hours": round(s.fulfillment_poll_interval_seconds / 3600, 1),
        "stale_hours": round(s.fulfillment_stale_after_seconds / 3600, 1),
        "query_minutes": s.kuaidi100_min_query_interval_seconds // 60,
        "sender": s.fulfillment_sender_name,
    }


@router.get("/ui/settings/carriers")
async def carriers(request: Request) -> Response:
    """The carrier adapter and the company each warehouse ships with (no secret shown)."""
    user = await signed_in(request, "fulfillment.manage")
    context = _common(
        request, user, active="settings", path="/ui/settings/carriers", carriers=_carriers()
    )
    return render(request, "carriers.html", context)
