"""The orders screen's saved views and bulk actions. A saved view is a search and its filters
under a name (`orders.saved_views`); a bulk action is a workbench batch over orders
(`casework.batch`): the orders ticked on the page, or all that the search and filters select,
previewed with a count and a sample, confirmed, then run by the worker with progress on the
batch page. Each action is offered only to the roles whose permission it names."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from ordertally.casework import batch
from ordertally.casework.schemas import MAX_PICKED, BatchIn
from ordertally.core.errors import OrdertallyError
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import saved_views
from ordertally.orders.schemas import SavedViewIn
from ordertally.web import pages, search_box
from ordertally.web.case_desk import _who, say
from ordertally.web.i18n import N_
from ordertally.web.security import PageForbidden, SignedIn, check_csrf, database, may, signed_in

router = APIRouter(include_in_schema=False)

# The orders screen's query parameters that a view remembers and a bulk action selects by.
VIEW_KEYS = ("q", "status", "channel", "created_from", "created_to", "case_type")
# action -> (label, the permission it needs, the parameters it takes from the form)
BULK_ACTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hold": (N_("Put on hold"), "cases.batch", ("note",)),
    "release": (N_("Release the hold"), "exceptions.resolve", ("note",)),
    "tag": (N_("Add a tag"), "cases.batch", ("tag",)),
    "remark": (N_("Set the seller's remark"), "cases.batch", ("remark",)),
    "open_case": (N_("Open a case"), "cases.batch", ("case_type", "note")),
    "cancel_unpaid": (N_("Cancel unpaid orders"), "orders.cancel", ("note",)),
}
_PARAM_LIMITS = {"note": 500, "tag": 64, "case_type": 64, "remark": 500}
# action -> (the parameter it cannot go without, what to say when it is missing)
_NEEDED = {
    "tag": ("tag", N_("Say which tag to add.")),
    "open_case": ("case_type", N_("Say which case type to open.")),
    "remark": ("remark", N_("Write the remark (up to 500 characters).")),
}


def bulk_actions(user: SignedIn) -> list[tuple[str, str]]:
    """The bulk actions this user's role may take: (key, label)."""
    return [(key, label) for key, (label, perm, _) in BULK_ACTIONS.items() if may(user, perm)]


def _link(query: dict[str, Any]) -> str:
    return "/ui/orders?" + urlencode({k: v for k, v in query.items() if v and k in VIEW_KEYS})


async def screen_extras(session: AsyncSession, user: SignedIn, filters: dict[str, str]) -> dict:
    """What the orders screen shows besides the orders: the saved views, the actions (read in
    the page's own transaction)."""
    views = await saved_views.views_for(session, user.username)
    return {
        "views": [
            {
                "id": v.id,
                "name": v.name,
                "shared": v.shared,
                "link": _link(v.query),
                "current": all(filters.get(k, "") == v.query.get(k, "") for k in VIEW_KEYS),
                "deletable": v.owner == user.username
                or (v.shared and user.role in saved_views.SHARE_ROLES),
            }
            for v in views
        ],
        "can_share": user.role in saved_views.SHARE_ROLES,
        # The filters the page's forms post back; a typed phone stays masked for a role that
        # may not see contacts.
        "posted_filters": filters
        if may(user, "orders.contact")
        else {**filters, "q": search_box.masked_query(filters.get("q", ""))},
        "bulk_actions": bulk_actions(user),
        "max_picked": MAX_PICKED,
    }


def _query_of(form: Any) -> dict[str, str]:
    return {k: str(form.get(k, "")).strip()[:200] for k in VIEW_KEYS}


# --- saved views ------------------------------------------------------------------------------


@router.post("/ui/orders/views")
async def save_view(request: Request) -> Response:
    """Save the current search and filters under a name (an admin may share it)."""
    user = await signed_in(request, "orders.read")
    await check_csrf(request, user)
    form = await request.form()
    query = _query_of(form)
    try:
        body = SavedViewIn.model_validate(
            {
                "name": str(form.get("view_name", ""))[:200],
                "shared": form.get("shared") == "1",
                "query": query,
            }
        )
    except ValidationError as exc:
        on_name = any(e["loc"][:1] == ("name",) for e in exc.errors())
        message = N_("Name the view: 1 to 64 characters.") if on_name else N_("Check the filters.")
        return await pages.render_orders(
            request, user, query, http_status=422, view_error=say(request, message)
        )
    try:
        async with database(request).transaction() as session:
            await saved_views.save(session, user.username, user.role, body)
    except OrdertallyError as exc:
        return await pages.render_orders(
            request,
            user,
            query,
            http_status=exc.status,
            view_error=say(request, pages._error_text(exc)),
        )
    return RedirectResponse(_link(query) + "&done=view_saved", status_code=303)


@router.post("/ui/orders/views/{view_id}/delete")
async def delete_view(request: Request, view_id: int) -> Response:
    """Delete a saved view (its owner, or an admin for a shared one)."""
    user = await signed_in(request, "orders.read")
    await check_csrf(request, user)
    try:
        async with database(request).transaction() as session:
            await saved_views.delete(session, view_id, user.username, user.role)
    except OrdertallyError as exc:
        return await pages.render_orders(
            request,
            user,
            {},
            http_status=exc.status,
            view_error=say(request, pages._error_text(exc)),
        )
    return RedirectResponse("/ui/orders?done=view_deleted", status_code=303)


# --- bulk actions -----------------------------------------------------------------------------


async def _selection(
    request: Request, user: SignedIn, form: Any, query: dict[str, str]
) -> dict[str, Any] | str:
    """The batch's order filters, or the message saying why there is none."""
    if form.get("scope") != "all":
        picked = [str(n).strip()[:64] for n in form.getlist("order_no") if str(n).strip()]
        if not picked:
            return N_("Tick the orders first, or choose all orders matching the filters.")
        if len(picked) > MAX_PICKED:
            return N_("Too many orders: narrow the search.")
        filters: dict[str, Any] = {"order_nos": picked}
    elif query["q"]:
        created_from = pages._parse_moment(query["created_from"], end=False)
        created_to = pages._parse_moment(query["created_to"], end=True)
        wanted = search_box.filters_of(
            query["status"] or None,
            query["channel"] or None,
            created_from,
            created_to,
            open_case=bool(query["case_type"]),
            channels=user.channels,
        )
        async with database(request).transaction(write=False) as session:
            case_orders = (
                await exceptions_service.orders_with_open_case(session, query["case_type"])
                if query["case_type"]
                else None
            )
            found = await search_box.matching_order_nos(
                session, query["q"], wanted, cap=MAX_PICKED, order_ids=case_orders
            )
        if found is None:
            return N_("Too many orders: narrow the search.")
        if not found:
            return N_("No orders match these filters.")
        filters = {"order_nos": found}
    else:
        filters = {}
        if query["status"] in pages.STATUS_LABELS:
            filters["status"] = query["status"]
        for key in ("channel", "case_type"):
            if query[key]:
                filters[key] = query[key][:64]
        for key, end in (("created_from", False), ("created_to", True)):
            moment = pages._parse_moment(query[key], end=end)
            if moment is not None:
                filters[key] = pages._iso(moment)
    if user.channels is not None:
        filters["channels"] = list(user.channels)
    return filters


@router.post("/ui/orders/bulk")
async def bulk_preview(request: Request) -> Response:
    """Preview a bulk action: the orders it selects (count and sample); nothing changes before
    the person confirms it on the batch page."""
    user = await signed_in(request, "orders.read")
    await check_csrf(request, user)
    form = await request.form()
    query = _query_of(form)
    action = str(form.get("action", ""))
    spec = BULK_ACTIONS.get(action)
    if spec is None:
        error: str | None = N_("Choose an action.")
    else:
        if not may(user, spec[1]):
            raise PageForbidden(user, spec[1])
        error = None
        params = {
            key: str(form.get(key, "")).strip()[: _PARAM_LIMITS[key]]
            for key in spec[2]
            if str(form.get(key, "")).strip()
        }
        needed = _NEEDED.get(action)
        if needed is not None and not params.get(needed[0]):
            error = needed[1]
    if error is None:
        selection = await _selection(request, user, form, query)
        if isinstance(selection, str):
            error = selection
    if error is None:
        assert isinstance(selection, dict)
        try:
            body = BatchIn.model_validate(
                {"action": action, "target": "orders", "filters": selection, "params": params}
            )
        except ValidationError:
            error = N_("Check the form's fields.")
    if error is not None:
        return await pages.render_orders(
            request, user, query, http_status=422, bulk_error=say(request, error)
        )
    async with database(request).transaction() as session:
        batch_id, _, _ = await batch.create(
            session, body.action, body.target, body.filters, body.params, _who(request, user)
        )
    return RedirectResponse(f"/ui/batches/{batch_id}", status_code=303)
