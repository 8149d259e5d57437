"""Batch actions from the workbench: resolve every case of a type that the list's filters
select, as the workbench's batch action (`casework.batch`: preview with a count and a sample,
confirm, run by the worker in chunks with progress, cancellable between chunks). The page is
the API's preview / confirm / cancel / progress, through the same service."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ordertally.casework import batch
from ordertally.casework.errors import BatchNotFound
from ordertally.casework.schemas import BatchIn
from ordertally.core.errors import OrdertallyError
from ordertally.web import cases, i18n, order_desk, pages
from ordertally.web.case_desk import _who, say
from ordertally.web.i18n import N_
from ordertally.web.security import PageForbidden, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

BATCH_STATES: dict[str, str] = {
    "previewed": N_("Previewed: not started"),
    "queued": N_("Queued"),
    "running": N_("Running"),
    "done": N_("Done"),
    "cancelled": N_("Cancelled"),
}
# What a batch does, as its page's heading says it.
ACTION_TITLES: dict[str, str] = {
    "resolve_cases": N_("Resolve every case of a type that the filters select"),
    "hold": N_("Put the orders on hold"),
    "release": N_("Release the orders' holds"),
    "tag": N_("Tag the orders"),
    "open_case": N_("Open a case on each order"),
    "cancel_unpaid": N_("Cancel the unpaid orders"),
    "remark": N_("Set the seller's remark on the orders"),
}
FILTER_LABELS: dict[str, str] = {
    "status": N_("status"),
    "channel": N_("channel"),
    "case_type": N_("with an open case of type"),
    "type": N_("case type"),
    "category": N_("category"),
    "state": N_("state"),
    "role": N_("role"),
    "assignee": N_("assignee"),
    "order_no": N_("order"),
    "sku": N_("SKU"),
    "warehouse": N_("warehouse"),
    "tag": N_("tag"),
    "created_from": N_("created from"),
    "created_to": N_("created until"),
    "breached": N_("SLA breached"),
}
# Order numbers named in full on the batch page; the rest are counted.
NAMED_ORDERS = 5
FLASHES: dict[str, str] = {
    "confirmed": N_("The batch is queued: the worker runs it in the background."),
    "cancelled": N_("The batch was cancelled; what was done stays done."),
}


@router.post("/ui/cases/batch")
async def create(request: Request) -> Response:
    """Preview resolving every case of the filtered type: nothing changes before confirm."""
    user = await signed_in(request, "cases.batch")
    await check_csrf(request, user)
    form = await request.form()
    q = {k: str(form.get(k, ""))[:64] for k in ("state", "category", "type", "role", "breached")}
    filters: dict[str, Any] = {k: v for k, v in q.items() if v and k != "breached"}
    if q["breached"] == "1":
        filters["breached"] = True
    params = {
        "case_type": q["type"],
        "code": str(form.get("code", "")).strip()[:64],
        "note": str(form.get("resolution", "")).strip()[:500],
    }
    error = None
    if not q["type"]:
        error = say(request, N_("Filter the list to one case type first."))
    elif not params["note"] or not params["code"]:
        error = say(request, N_("Say how the cases were resolved (up to 500 characters)."))
    if error is None:
        try:
            body = BatchIn.model_validate(
                {"action": "resolve_cases", "target": "cases", "filters": filters, "params": params}
            )
            async with database(request).transaction() as session:
                batch_id, _, _ = await batch.create(
                    session,
                    body.action,
                    body.target,
                    body.filters,
                    body.params,
                    _who(request, user),
                )
        except ValidationError:
            error = say(request, N_("Check the form's fields."))
    if error is not None:
        return await cases.render_list(request, user, q, bulk_error=error, status=422)
    return RedirectResponse(f"/ui/batches/{batch_id}", status_code=303)


async def _page(request: Request, batch_id: int, *, error: str | None = None) -> Response:
    user = await signed_in(request, "cases.read")
    async with database(request).transaction(write=False) as session:
        try:
            b = await batch.get(session, batch_id)
        except BatchNotFound:
            context = pages._common(request, user, reason="batch_missing", permission=None)
            return render(request, "forbidden.html", context, status=404)
        audit = await batch.audit_counts(session, batch_id)
        # A channel-scoped user sees only the batches over their own accounts' orders.
        theirs = set(b.filters.get("channels") or ["*"]) <= set(user.channels or ())
        if b.target == "orders" and user.channels is not None and not theirs:
            raise PageForbidden(user, "cases.read", scope=True)
        sample: list[str] = []
        if b.state == "previewed":
            _, sample = await batch.preview(session, b.target, b.filters)
    context = pages._common(
        request,
        user,
        active="orders" if b.target == "orders" else "cases",
        batch=b,
        audit=audit,
        sample=sample,
        state_labels=BATCH_STATES,
        title=ACTION_TITLES.get(b.action, b.action),
        shown_filters=_shown_filters(request, b.target, b.filters),
        can_batch=may(user, "cases.batch"),
        batch_flash=FLASHES.get(request.query_params.get("done", "")),
        error=error,
        path=f"/ui/batches/{batch_id}",
        query="",
    )
    block = "progress" if request.headers.get("hx-target") == "batch-progress" else None
    return render(request, "batch.html", context, block=block, status=409 if error else 200)


def _shown_filters(request: Request, target: str, filters: dict[str, Any]) -> list[str]:
    """A batch's selection in words, in the page's language ("2 orders: A, B", "status: paid")."""
    locale = i18n.pick_locale(request.cookies.get("ot_lang"))
    words = {
        "status": pages.STATUS_LABELS,
        "state": cases.STATE_LABELS,
        "category": cases.CATEGORY_LABELS,
        "role": pages.ROLE_LABELS,
    }
    shown: list[str] = []
    nos = filters.get("order_nos")
    if isinstance(nos, list):
        named = ", ".join(nos[:NAMED_ORDERS]) + (" …" if len(nos) > NAMED_ORDERS else "")
        shown.append(say(request, N_("%(count)s orders: %(nos)s"), count=len(nos), nos=named))
    for key, label in FILTER_LABELS.items():
        value = filters.get(key)
        if value is None or value == "" or value is False:
            continue
        if value is True:
            shown.append(say(request, label))
            continue
        text = str(value)
        if key in words and text in words[key]:
            text = say(request, words[key][text])
        elif key in ("created_from", "created_to"):
            with contextlib.suppress(ValueError):
                text = i18n.fmt_time(datetime.fromisoformat(text), locale)
        shown.append(
            say(request, N_("%(label)s: %(value)s"), label=say(request, label), value=text)
        )
    if not shown:
        everything = N_("all orders") if target == "orders" else N_("all cases")
        shown.append(say(request, everything))
    return shown


@router.get("/ui/batches/{batch_id}")
async def batch_page(request: Request, batch_id: int) -> Response:
    """A batch: what it does, its preview, its progress (htmx refreshes it while it runs)."""
    return await _page(request, batch_id)


@router.post("/ui/batches/{batch_id}/confirm")
async def confirm(request: Request, batch_id: int) -> Response:
    """Queue a previewed batch for the worker (a bulk order action also needs its own
    permission: cancelling needs the right to cancel)."""
    user = await signed_in(request, "cases.batch")
    await check_csrf(request, user)
    try:
        async with database(request).transaction() as session:
            spec = order_desk.BULK_ACTIONS.get((await batch.get(session, batch_id)).action)
            if spec is not None and not may(user, spec[1]):
                raise PageForbidden(user, spec[1])
            await batch.confirm(session, batch_id)
    except OrdertallyError as exc:
        return await _page(request, batch_id, error=say(request, pages._error_text(exc)))
    return RedirectResponse(f"/ui/batches/{batch_id}?done=confirmed", status_code=303)


@router.post("/ui/batches/{batch_id}/cancel")
async def cancel(request: Request, batch_id: int) -> Response:
    """Stop a batch between chunks."""
    user = await signed_in(request, "cases.batch")
    await check_csrf(request, user)
    try:
        async with database(request).transaction() as session:
            await batch.cancel(session, batch_id)
    except OrdertallyError as exc:
        return await _page(request, batch_id, error=say(request, pages._error_text(exc)))
    return RedirectResponse(f"/ui/batches/{batch_id}?done=cancelled", status_code=303)
