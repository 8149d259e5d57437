"""The back office's pages and actions: sign-in, dashboard, orders list and detail, users.
Each handler checks the role first, each write checks the CSRF token, and every read or write
goes through a domain's public service in one transaction."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ordertally.aftersales import service as aftersales_service
from ordertally.auth import users
from ordertally.auth.models import ROLES
from ordertally.auth.users import BadCredentials, TooManyAttempts
from ordertally.core import clock
from ordertally.core.errors import OrdertallyError
from ordertally.core.http import client_ip
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment import tracking_page
from ordertally.notify import service as notify_service
from ordertally.orders import closing, holds, snapshot, transitions
from ordertally.orders import service as orders_service
from ordertally.orders.errors import OrderNotFound, OrderOutOfScope
from ordertally.orders.state_machine import (
    TRANSITIONS,
    Actor,
    ActorKind,
    Event,
    Status,
    allowed_from,
)
from ordertally.payments import service as payments_service
from ordertally.web import dashboard, i18n, order_desk, search_box, security
from ordertally.web.i18n import N_
from ordertally.web.security import (
    PageForbidden,
    SignedIn,
    check_csrf,
    database,
    may,
    signed_in,
)
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

STATUS_LABELS: dict[str, str] = {
    "pending_payment": N_("Awaiting payment"),
    "paid": N_("Paid"),
    "allocated": N_("Allocated"),
    "fulfilling": N_("Fulfilling"),
    "shipped": N_("Shipped"),
    "delivered": N_("Delivered"),
    "completed": N_("Completed"),
    "closed": N_("Closed"),
    "refunded": N_("Refunded"),
    "partially_refunded": N_("Partially refunded"),
}
AFTERSALE_TYPE_LABELS: dict[str, str] = {
    "refund_only": N_("Refund only"),
    "return_refund": N_("Return and refund"),
    "exchange": N_("Exchange"),
    "reship": N_("Reshipment"),
    "refused": N_("Refused delivery"),
}
AFTERSALE_STATUS_LABELS: dict[str, str] = {
    "requested": N_("Requested"),
    "approved": N_("Approved"),
    "rejected": N_("Rejected"),
    "awaiting_return": N_("Awaiting return"),
    "returned": N_("Returned"),
    "inspected": N_("Inspected"),
    "refunded": N_("Refunded"),
    "reshipped": N_("Reshipped"),
    "exchanged": N_("Exchanged"),
    "closed": N_("Closed"),
}
CHANNEL_LABELS: dict[str, str] = {
    "douyin": N_("Douyin"),
    "jd": N_("JD"),
    "pinduoduo": N_("Pinduoduo"),
    "taobao": N_("Taobao"),
    "wechat_mini": N_("WeChat mini-program"),
    "shopify": N_("Shopify"),
    "amazon": N_("Amazon"),
    "manual": N_("Manual"),
}
ROLE_LABELS: dict[str, str] = {
    "admin": N_("Administrator"),
    "ops": N_("Operations"),
    "cs": N_("Customer service"),
    "finance": N_("Finance"),
    "warehouse": N_("Warehouse"),
}
TRANSITION_LABELS: dict[str, str] = {
    "create": N_("Created"),
    "import_paid": N_("Imported as paid"),
    "payment_succeeded": N_("Payment received"),
    "payment_timeout": N_("Payment timed out"),
    "cancel": N_("Cancelled"),
    "allocate": N_("Allocated to warehouses"),
    "start_fulfillment": N_("Fulfilment started"),
    "ship": N_("Shipped"),
    "deliver": N_("Delivered"),
    "complete": N_("Completed"),
    "reopen_paid": N_("Reopened as paid"),
    "refund": N_("Refunded"),
    "review_pass": N_("Review passed"),
    "review_hold": N_("Held in review"),
    "review_edit": N_("Edited in review"),
}
OUTCOME_LABELS: dict[str, str] = {
    "ok": N_("Signed in"),
    "bad_password": N_("Wrong password"),
    "unknown_user": N_("Unknown username"),
    "inactive": N_("Disabled user"),
    "rate_limited": N_("Refused: too many failures"),
}
FLASHES: dict[str, str] = {
    "cancelled": N_("The order was cancelled."),
    "resolved": N_("The case was resolved."),
    "user_created": N_("The user was created."),
    "view_saved": N_("The view was saved."),
    "view_deleted": N_("The view was deleted."),
}
# Domain errors shown on pages, by their stable code (by field for invalid input); any other
# error shows its own detail.
ERROR_MESSAGES: dict[str, str] = {
    "order.illegal_transition": N_("This action is not possible in the order's current status."),
    "order.on_hold": N_("The order has an open hold: resolve it first."),
    "order.conflict": N_("The order changed meanwhile. Reload the page and try again."),
    "exceptions.still_short": N_("The stock is still short: the hold stays open."),
    "order.payment_received": N_(
        "The buyer's payment has reached the platform: the order cannot be cancelled."
    ),
    "conflict": N_("This case is already resolved."),
    "request.invalid:username": N_("Username: 2 to 64 lowercase letters, digits, '.', '_' or '-'."),
    "request.invalid:role": N_("Choose one of the roles."),
    "request.invalid:password": N_("The password needs at least 10 characters."),
    "request.invalid:warehouses": N_(
        "Warehouses: codes of 1 to 32 letters, digits, '_' or '-', separated by commas."
    ),
    "request.invalid:channels": N_(
        "Channel accounts: codes of 1 to 32 letters, digits, '_' or '-', separated by commas."
    ),
    "conflict:username": N_("This username is taken."),
    "saved_view.not_found": N_("This saved view no longer exists."),
    "saved_view.not_yours:shared": N_("Only an admin may share a view."),
    "saved_view.not_yours": N_("Only its owner, or an admin for a shared view, may delete it."),
    "saved_view.too_many": N_("You have saved 50 views: delete one first."),
}
PAGE_SIZE = 50
_CURSOR = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+\+00:00)_(\d+)$")

# The state diagram's layout: the main path on a row, the ends off it below.
_DIAGRAM_POS: dict[str, tuple[int, int]] = {
    "pending_payment": (0, 0),
    "paid": (1, 0),
    "allocated": (2, 0),
    "fulfilling": (3, 0),
    "shipped": (4, 0),
    "delivered": (5, 0),
    "completed": (6, 0),
    "closed": (0, 1),
    "refunded": (2, 1),
    "partially_refunded": (5, 1),
}


def _error_text(exc: OrdertallyError) -> str:
    """The catalogue message for a domain error, or its own detail."""
    field = exc.extra.get("field")
    return ERROR_MESSAGES.get(f"{exc.code}:{field}") or ERROR_MESSAGES.get(exc.code) or exc.detail


def _common(request: Request, user: SignedIn | None, **extra: Any) -> dict[str, Any]:
    nav = []
    if user is not None:
        nav.append(("/ui/", N_("Dashboard"), "dashboard"))
        nav.append(("/ui/orders", N_("Orders"), "orders"))
        if may(user, "payments.reconcile"):
            nav.append(("/ui/payments", N_("Finance"), "payments"))
        nav.append(("/ui/inventory", N_("Inventory"), "inventory"))
        if may(user, "channels.read"):
            nav.append(("/ui/channels", N_("Channels"), "channels"))
        nav.append(("/ui/cases", N_("Exception cases"), "cases"))
        if may(user, "orders.review"):
            nav.append(("/ui/review", N_("Order review"), "review"))
        if may(user, "rules.read"):
            nav.append(("/ui/rules", N_("Rules"), "rules"))
        nav.append(("/ui/aftersales", N_("After-sales"), "aftersales"))
        if may(user, "exports.read"):
            nav.append(("/ui/exports", N_("Exports"), "exports"))
        if may(user, "analytics.read"):
            nav.append(("/ui/analytics", N_("Analytics"), "analytics"))
        if may(user, "users.manage"):
            nav.append(("/ui/users", N_("Users"), "users"))
        if may(user, "auth.manage") or may(user, "notify.manage") or may(user, "fx.manage"):
            nav.append(("/ui/settings", N_("Settings"), "settings"))
    return {
        "user": user,
        "nav": nav,
        "path": request.url.path,
        "query": request.url.query,
        "status_labels": STATUS_LABELS,
        "channel_labels": CHANNEL_LABELS,
        "role_labels": ROLE_LABELS,
        "flash": FLASHES.get(request.query_params.get("done", "")),
        **extra,
    }


# --- sign-in ----------------------------------------------------------------------------------


@router.get("/")
async def root() -> Response:
    """The back office is the home page."""
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (with a double-submit CSRF token: there is no session yet)."""
    return _login_form(request, security.safe_next(next), error=None, username="")


def _login_form(
    request: Request, next_path: str, *, error: str | None, username: str, status: int = 200
) -> Response:
    token = security.new_login_csrf()
    response = render(
        request,
        "login.html",
        _common(request, None, next=next_path, error=error, username=username, csrf=token),
        status=status,
    )
    security.set_cookie(request, response, security.LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/ui/login")
async def login(request: Request) -> Response:
    """Check the password, open a session, set its cookie; failures are recorded and counted."""
    form = await request.form()
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    next_path = security.safe_next(str(form.get("next", "")))
    sent = str(form.get(security.CSRF_FIELD, ""))
    cookie = request.cookies.get(security.LOGIN_CSRF_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent, cookie):
        raise security.CsrfRefused()
    error: str | None = None
    status = 200
    async with database(request).transaction() as session:
        try:
            token, _ = await users.sign_in(
                session, username, password, client_ip(request) or "unknown"
            )
        except TooManyAttempts:
            error, status = N_("Too many failed sign-ins. Try again in 15 minutes."), 429
        except BadCredentials:
            error, status = N_("Wrong username or password."), 401
    if error is not None:
        return _login_form(request, next_path, error=error, username=username, status=status)
    response = RedirectResponse(next_path, status_code=303)
    security.set_cookie(request, response, security.SESSION_COOKIE, token)
    response.delete_cookie(security.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    """Close this browser's session."""
    user = await security.current_user(request)
    if user is not None:
        await check_csrf(request, user)
        async with database(request).transaction() as session:
            await users.sign_out(session, request.cookies.get(security.SESSION_COOKIE, ""))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


@router.get("/ui/lang/{locale}")
async def switch_language(request: Request, locale: str, next: str | None = None) -> Response:
    """Remember the chosen language in a cookie and go back."""
    response = RedirectResponse(security.safe_next(next), status_code=303)
    if locale in i18n.LOCALES:
        security.set_cookie(
            request, response, security.LANG_COOKIE, locale, max_age=365 * 24 * 3600
        )
    return response


# --- dashboard --------------------------------------------------------------------------------


def _orders_link(**params: str) -> str:
    return "/ui/orders?" + urlencode({k: v for k, v in params.items() if v})


def _dashboard_context(request: Request, user: SignedIn, figures: dashboard.Figures) -> dict:
    translate = i18n.translations(i18n.pick_locale(request.cookies.get("ot_lang"))).gettext
    labels = {s: translate(STATUS_LABELS[s]) for s in figures.stuck}
    return _common(
        request,
        user,
        active="dashboard",
        f=figures,
        chart_json=orjson.dumps(figures.chart(labels)).decode().replace("<", "\\u003c"),
        hour_link=_orders_link(created_from=_iso(figures.per_minute[0][0])),
        day_link=_orders_link(created_from=_iso(figures.now - dashboard.PAID_RATE_WINDOW)),
        paid_link=_orders_link(
            status="paid", created_from=_iso(figures.now - dashboard.PAID_RATE_WINDOW)
        ),
        stuck_links={
            s: _orders_link(status=s, created_to=_iso(c)) for s, c in figures.cutoffs.items()
        },
        case_links={t: _orders_link(case_type=t) for t in figures.open_cases},
    )


@router.get("/ui/")
async def dashboard_page(request: Request) -> Response:
    """运营看板: the figures and their charts."""
    user = await signed_in(request, "orders.read")
    async with database(request).transaction(write=False) as session:
        figures = await dashboard.figures(session)
    return render(request, "dashboard.html", _dashboard_context(request, user, figures))


@router.get("/ui/dashboard/figures")
async def dashboard_figures(request: Request) -> Response:
    """The figures block alone, polled by htmx."""
    user = await signed_in(request, "orders.read")
    async with database(request).transaction(write=False) as session:
        figures = await dashboard.figures(session)
    return render(
        request, "dashboard.html", _dashboard_context(request, user, figures), block="figures"
    )


# --- orders -----------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return clock.as_utc(value).isoformat()


def _parse_moment(value: str | None, *, end: bool) -> datetime | None:
    """A date (the merchant's day; `end`: the day after) or an ISO moment, as UTC."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).date()
            if end:
                day += timedelta(days=1)
            local = datetime.combine(day, time(), tzinfo=ZoneInfo(get_settings().timezone))
            return clock.as_utc(local)
        moment = datetime.fromisoformat(value.replace(" ", "+"))
        return clock.as_utc(moment)
    except ValueError:
        return None


@router.get("/ui/orders")
async def orders_page(request: Request) -> Response:
    """Orders, newest first, filtered; htmx asks for the table block alone."""
    user = await signed_in(request, "orders.read")
    return await render_orders(request, user, request.query_params)


async def render_orders(
    request: Request,
    user: SignedIn,
    q: Mapping[str, str],
    *,
    http_status: int = 200,
    **extra: Any,
) -> Response:
    """The orders screen for these query parameters (a form posted back shows its error)."""
    status = q.get("status") if q.get("status") in STATUS_LABELS else None
    channel = (q.get("channel") or "").strip()[:32] or None
    case_type = (q.get("case_type") or "").strip()[:64] or None
    created_from = _parse_moment(q.get("created_from"), end=False)
    created_to = _parse_moment(q.get("created_to"), end=True)
    text = (q.get("q") or "").strip()[: search_box.MAX_QUERY]
    filters = {
        "q": text,
        "status": status or "",
        "channel": channel or "",
        "created_from": q.get("created_from", ""),
        "created_to": q.get("created_to", ""),
        "case_type": case_type or "",
    }
    if text:
        cursor = (q.get("cursor") or "")[:200] or None
        return await _search_page(
            request, user, filters, created_from, created_to, cursor, extra, http_status
        )
    after = None
    match = _CURSOR.match(q.get("after", ""))
    if match:
        after = (datetime.fromisoformat(match.group(1)), int(match.group(2)))
    async with database(request).transaction(write=False) as session:
        case_orders = (
            await exceptions_service.orders_with_open_case(session, case_type)
            if case_type
            else None
        )
        rows = await orders_service.list_orders(
            session,
            status=status,
            channel=channel,
            created_from=created_from,
            created_to=created_to,
            after=after,
            limit=PAGE_SIZE + 1,
            order_ids=case_orders,
            channels=user.channels,
        )
        extras = {**await order_desk.screen_extras(session, user, filters), **extra}
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_link = None
    if more:
        last = rows[-1]
        next_link = _orders_link(**filters, after=f"{_iso(last.created_at)}_{last.id}")
    context = _common(
        request,
        user,
        active="orders",
        orders=rows,
        filters=filters,
        next_link=next_link,
        first_link=_orders_link(**filters) if after else None,
        **extras,
    )
    return _orders_response(request, context, http_status)


async def _search_page(
    request: Request,
    user: SignedIn,
    filters: dict[str, str],
    created_from: datetime | None,
    created_to: datetime | None,
    cursor: str | None,
    extra: dict[str, Any],
    status: int,
) -> Response:
    """The orders that the search box's words find, with the same filters, keyset pages
    (the search's cursor) and why each matched."""
    case_type = filters["case_type"] or None
    wanted = search_box.filters_of(
        filters["status"] or None,
        filters["channel"] or None,
        created_from,
        created_to,
        open_case=case_type is not None,
        channels=user.channels,
    )
    async with database(request).transaction(write=False) as session:
        case_orders = (
            await exceptions_service.orders_with_open_case(session, case_type)
            if case_type
            else None
        )
        found = await search_box.search(
            session,
            filters["q"],
            wanted,
            cursor=cursor,
            limit=PAGE_SIZE,
            may_see_contact=may(user, "orders.contact"),
            order_ids=case_orders,
        )
        extras = {**await order_desk.screen_extras(session, user, filters), **extra}
    context = _common(
        request,
        user,
        active="orders",
        orders=found.rows,
        filters=filters,
        searching=True,
        field_labels=search_box.FIELD_LABELS,
        next_link=_orders_link(**filters, cursor=found.next_cursor) if found.next_cursor else None,
        first_link=_orders_link(**filters) if cursor else None,
        **extras,
    )
    return _orders_response(request, context, status)


def _orders_response(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    block = "table" if request.headers.get("hx-target") == "orders-table" else None
    return render(request, "orders.html", context, block=block, status=status)


def _diagram(current: str) -> dict[str, Any]:
    """Nodes and edges of the state diagram, drawn from the transition table."""
    w, h, gap_x, gap_y = 128, 34, 152, 84
    at: dict[str, tuple[int, int]] = {
        status: (10 + col * gap_x, 12 + row * gap_y) for status, (col, row) in _DIAGRAM_POS.items()
    }
    nodes = [
        {"status": s.value, "x": at[s][0], "y": at[s][1], "w": w, "h": h, "current": s == current}
        for s in Status
    ]
    edges = []
    for t in TRANSITIONS:
        for source in sorted(t.sources):
            if source == t.target:  # a status that stays (another partial refund): no arrow
                continue
            (ax, ay), (bx, by) = at[source.value], at[t.target.value]
            if ay == by:  # same row: from the right side to the left side
                x1, y1, x2, y2 = float(ax + w), ay + h / 2, float(bx), by + h / 2
            else:  # between rows: bottom to top (or back), a little off-centre
                down = ay < by
                shift = 8 if down else -8
                x1, y1 = ax + w / 2 + shift, float(ay + (h if down else 0))
                x2, y2 = bx + w / 2 + shift, float(by + (0 if down else h))
            edges.append(
                {
                    "name": t.name,
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "live": source.value == current,
                }
            )
    return {"nodes": nodes, "edges": edges, "width": 10 + 6 * gap_x + w + 10, "height": 140}


async def _order_context(request: Request, user: SignedIn, order_no: str) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        order = await orders_service.get_order_in_scope(session, order_no, user.channels)
        snap = await snapshot.load_snapshot(session, order)
        cases = await exceptions_service.open_cases(session, order.id)
        events = (
            await orders_service.events_of(session, order_no)
            if may(user, "orders.events")
            else None
        )
        payments = (
            await payments_service.payments_of(session, order_no)
            if may(user, "payments.read")
            else None
        )
        shipments = None
        if may(user, "fulfillment.read"):
            shipments = await fulfillment_service.shipments_of(session, order.id)
            tracks = await fulfillment_service.timelines(session, [s.id for s in shipments])
        sent = (
            await notify_service.list_notifications(session, order_no=order_no, limit=50)
            if may(user, "notify.read")
            else None
        )
        aftersale_cases = (
            await aftersales_service.cases_of_order(session, order.id)
            if may(user, "aftersales.read")
            else None
        )
    leaving = {t.name for t in allowed_from(Status(order.status))}
    return _common(
        request,
        user,
        active="orders",
        order=order,
        lines=snap.lines,
        reservations=snap.inventory["reservations"],
        allocation=snap.inventory["allocation"],
        cases=cases,
        events=events,
        payments=payments,
        shipments=shipments,
        tracks=tracks if shipments is not None else {},
        sent=sent,
        aftersale_cases=aftersale_cases,
        can_open_aftersale=may(user, "aftersales.manage")
        and any(order.status in s for s in aftersales_service.OPENS_FROM.values()),
        tracking_url=tracking_page.url_for(order.order_no) if shipments is not None else None,
        transition_labels=TRANSITION_LABELS,
        aftersale_type_labels=AFTERSALE_TYPE_LABELS,
        aftersale_status_labels=AFTERSALE_STATUS_LABELS,
        diagram=_diagram(order.status),
        can_cancel="cancel" in leaving and may(user, "orders.cancel"),
        can_resolve=may(user, "exceptions.resolve"),
        can_request_manual=may(user, "payments.manual")
        and order.status in (Status.PENDING_PAYMENT, Status.CLOSED),
        manual_error=None,
        error=None,
    )


@router.get("/ui/orders/{order_no}")
async def order_page(request: Request, order_no: str) -> Response:
    """One order: amounts, lines, state diagram, audit trail, payments, shipments, cases."""
    user = await signed_in(request, "orders.read")
    try:
        context = await _order_context(request, user, order_no)
    except OrderNotFound:
        missing = _common(request, user, reason="missing", permission=None, order_no=order_no)
        return render(request, "forbidden.html", missing, status=404)
    except OrderOutOfScope:
        raise PageForbidden(user, "orders.read", scope=True) from None
    return render(request, "order.html", context)


async def _in_scope(request: Request, user: SignedIn, order_no: str) -> None:
    """Refuse a channel-scoped user an action on another account's order (the 403 page)."""
    if user.channels is None:
        return
    try:
        async with database(request).transaction(write=False) as session:
            await orders_service.get_order_in_scope(session, order_no, user.channels)
    except (OrderOutOfScope, OrderNotFound):  # a scoped user acts on orders shown as its own
        raise PageForbidden(user, "orders.read", scope=True) from None


@router.post("/ui/orders/{order_no}/cancel")
async def cancel_order(request: Request, order_no: str) -> Response:
    """Cancel an unpaid order (the transition table refuses any other)."""
    user = await signed_in(request, "orders.cancel")
    await check_csrf(request, user)
    await _in_scope(request, user, order_no)
    form = await request.form()
    reason = str(form.get("reason", "")).strip()[:500] or None
    actor = Actor(ActorKind.OPERATOR, f"user:{user.username}", client_ip(request), note=reason)
    try:
        # The timeout's own checks first: a payment the platform already took keeps it open.
        await closing.refuse_if_paid(database(request), order_no)
        async with database(request).transaction() as session:
            await transitions.transition(session, order_no, Event.CANCEL, actor)
    except OrdertallyError as exc:
        context = await _order_context(request, user, order_no)
        context["error"] = _error_text(exc)
        return render(request, "order.html", context, status=exc.status)
    return RedirectResponse(f"/ui/orders/{order_no}?done=cancelled", status_code=303)


@router.post("/ui/cases/{case_id}/resolve")
async def resolve_case(request: Request, case_id: int) -> Response:
    """Resolve an open case (lift a hold); htmx swaps the cases block."""
    user = await signed_in(request, "exceptions.resolve")
    await check_csrf(request, user)
    form = await request.form()
    resolution = str(form.get("resolution", "")).strip()[:500]
    order_no = str(form.get("order_no", ""))[:32]
    if user.channels is not None:
        # A channel-scoped user resolves only open cases of an order of its own accounts.
        await _in_scope(request, user, order_no)
        async with database(request).transaction(write=False) as session:
            order = await orders_service.get_order(session, order_no)
            open_ids = {c.id for c in await exceptions_service.open_cases(session, order.id)}
        if case_id not in open_ids:
            raise PageForbidden(user, "exceptions.resolve", scope=True)
    error = None
    if not resolution:
        error = N_("Say how the case was resolved.")
    else:
        try:
            async with database(request).transaction() as session:
                await holds.resolve_case(session, case_id, f"user:{user.username}", resolution)
        except OrdertallyError as exc:
            error = _error_text(exc)
    context = await _order_context(request, user, order_no)
    context["case_error"] = error
    if request.headers.get("hx-target") == "cases":
        return render(request, "order.html", context, block="cases")
    if error is None:
        return RedirectResponse(f"/ui/orders/{order_no}?done=resolved", status_code=303)
    return render(request, "order.html", context, status=409)


# --- users ------------------------------------------------------------------------------------


async def _users_context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        people = await users.list_users(session)
        attempts = await users.recent_attempts(session, 20)
    return _common(
        request,
        user,
        active="users",
        people=people,
        attempts=attempts,
        outcome_labels=OUTCOME_LABELS,
        roles=ROLES,
        **({"error": None, "form": {}} | extra),
    )


def _codes(text: str) -> list[str]:
    """Codes typed into one field, separated by commas or spaces (the empty field: none)."""
    return [c for c in re.split(r"[,\s，]+", text) if c]


@router.get("/ui/users")
async def users_page(request: Request) -> Response:
    """Users and the latest sign-in attempts (admins)."""
    user = await signed_in(request, "users.manage")
    return render(request, "users.html", await _users_context(request, user))


@router.post("/ui/users")
async def create_user(request: Request) -> Response:
    """Create a user (admins)."""
    user = await signed_in(request, "users.manage")
    await check_csrf(request, user)
    form = await request.form()
    values = {
        k: str(form.get(k, ""))[:200]
        for k in ("username", "role", "password", "warehouses", "channels")
    }
    try:
        async with database(request).transaction() as session:
            await users.create_user(
                session,
                values["username"],
                values["password"],
                values["role"],
                warehouses=_codes(values["warehouses"]),
                channels=_codes(values["channels"]),
            )
    except OrdertallyError as exc:
        form_back = {k: values[k] for k in ("username", "warehouses", "channels")}
        context = await _users_context(request, user, error=_error_text(exc), form=form_back)
        return render(request, "users.html", context, status=exc.status)
    return RedirectResponse("/ui/users?done=user_created", status_code=303)
