"""The order review queue (审单): paid orders the auto-review strategy held, with its reasons,
for customer service (and finance, when a rule asked for its review) to pass, hold (挂起) or
edit (address, remark, warehouse). The queue and each decision are orders' review service,
exactly as the API calls them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ordertally.core.errors import OrdertallyError
from ordertally.core.http import client_ip
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.orders import review
from ordertally.orders.schemas import ReviewEditIn, ReviewHoldIn
from ordertally.web import pages
from ordertally.web.case_desk import actor_name, say
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_csrf, database, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

STAGE_LABELS: dict[str, str] = {
    "cs": N_("Customer service review"),
    "finance": N_("Finance review"),
}
REASON_LABELS: dict[str, str] = {
    "outside_window": N_("Outside the auto-review hours"),
    "paid_too_recently": N_("Paid too recently (room for an address change)"),
    "too_many_lines": N_("Too many lines"),
    "too_many_units": N_("Too many units"),
    "excluded_sku": N_("Contains an excluded SKU"),
    "unmatched_sku": N_("Contains an unmatched SKU"),
    "below_minimum_price": N_("A unit price is below the minimum"),
    "stock_insufficient": N_("Stock is short"),
    "rule_asks_review": N_("A rule asks for review"),
    "open_blocking_case": N_("Another case holds the order"),
    "finance_review_requested": N_("A rule asks finance to review"),
}
FLASHES: dict[str, str] = {
    "passed": N_("The order passed review: it allocates once nothing else holds it."),
    "finance": N_("Customer service passed the order: it now waits for finance."),
    "held": N_("The order is held in review with your reason."),
    "edited": N_("The order was edited; it still waits in review."),
}
REFUSALS: dict[str, str] = {
    "held": N_("The order is held already."),
    "not_waiting": N_("The order is not waiting in review."),
    "inventory.insufficient": N_(
        "That warehouse does not hold every unit of the order: nothing was changed."
    ),
    "inventory.warehouse_not_found": N_("There is no such warehouse."),
    "customer.invalid_phone": N_("The phone number is not valid."),
}
ADDRESS_LABELS: dict[str, str] = {
    "name": N_("Recipient"),
    "phone": N_("Phone"),
    "province": N_("Province"),
    "city": N_("City"),
    "district": N_("District"),
    "line1": N_("Street address"),
}
ADDRESS_FIELDS = tuple(ADDRESS_LABELS)
QUEUE_SIZE = 200
# The case each stage's orders wait under (counted for the tabs without reading the orders).
STAGE_CASES: dict[str, str] = {"cs": review.CS_CASE, "finance": review.FINANCE_CASE}


def _stage_of(user: SignedIn, asked: str | None) -> str:
    """The queue to show: the one asked for, else finance's for finance, else cs's."""
    if asked in STAGE_LABELS:
        return asked
    return "finance" if user.role == "finance" else "cs"


async def _page(
    request: Request, user: SignedIn, stage: str, *, status: int = 200, **extra: Any
) -> Response:
    async with database(request).transaction(write=False) as session:
        items = await review.queue(session, stage, QUEUE_SIZE)
        warehouses = [w.code for w in await inventory_service.list_warehouses(session) if w.active]
        counts = {
            s: len(await exceptions_service.orders_with_open_case(session, case_type))
            for s, case_type in STAGE_CASES.items()
        }
    passes = review.CS_ROLES if stage == "cs" else review.FINANCE_ROLES
    context = pages._common(
        request,
        user,
        active="review",
        stage=stage,
        items=items,
        counts=counts,
        can_pass=user.role in passes,
        stage_labels=STAGE_LABELS,
        reason_labels=REASON_LABELS,
        warehouses=warehouses,
        address_fields=ADDRESS_FIELDS,
        address_labels=ADDRESS_LABELS,
        review_flash=FLASHES.get(request.query_params.get("done", "")),
        path="/ui/review",
        query=f"stage={stage}",
        **({"error": None, "error_order": None} | extra),
    )
    return render(request, "review.html", context, status=status)


@router.get("/ui/review")
async def review_page(request: Request) -> Response:
    """The queue of one review stage, oldest first, with each order's reasons."""
    user = await signed_in(request, "orders.review")
    return await _page(request, user, _stage_of(user, request.query_params.get("stage")))


@router.post("/ui/review/{order_no}/pass")
async def pass_order(request: Request, order_no: str) -> Response:
    """Pass an order's review stage (cs first; finance when a rule asked for it)."""
    user = await signed_in(request, "orders.review")
    await check_csrf(request, user)
    form = await request.form()
    stage = _stage_of(user, str(form.get("stage", "")))
    try:
        async with database(request).transaction() as session:
            now_at = await review.pass_review(session, order_no[:32], user.role, actor_name(user))
    except OrdertallyError as exc:
        if exc.status == 403:
            reason = say(request, N_("Your role may not pass this review stage."))
        elif exc.status == 409:
            reason = say(request, N_("The order is not waiting in review."))
        else:
            reason = say(request, pages._error_text(exc))
        return await _page(
            request, user, stage, status=exc.status, error=reason, error_order=order_no
        )
    return RedirectResponse(f"/ui/review?stage={stage}&done={now_at}", status_code=303)


async def _refused(
    request: Request, user: SignedIn, stage: str, order_no: str, exc: OrdertallyError
) -> Response:
    if exc.status == 403:
        reason = say(request, N_("Your role may not work this review stage."))
    elif exc.code == "conflict":
        held = "held already" in exc.detail
        reason = say(request, REFUSALS["held"] if held else REFUSALS["not_waiting"])
    elif exc.code in REFUSALS:
        reason = say(request, REFUSALS[exc.code])
    else:
        reason = say(request, pages._error_text(exc))
    return await _page(request, user, stage, status=exc.status, error=reason, error_order=order_no)


async def _invalid(
    request: Request, user: SignedIn, stage: str, order_no: str, exc: ValidationError
) -> Response:
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()) or "form"
    reason = say(request, N_("Please check these fields: %(fields)s"), fields=fields)
    return await _page(request, user, stage, status=422, error=reason, error_order=order_no)


@router.post("/ui/review/{order_no}/hold")
async def hold_order(request: Request, order_no: str) -> Response:
    """Hold an order waiting in review (挂起) with a reason; it stays in the queue, marked."""
    user = await signed_in(request, "orders.review")
    await check_csrf(request, user)
    form = await request.form()
    stage = _stage_of(user, str(form.get("stage", "")))
    try:
        body = ReviewHoldIn(reason=str(form.get("reason", "")))
    except ValidationError as exc:
        return await _invalid(request, user, stage, order_no, exc)
    try:
        async with database(request).transaction() as session:
            await review.hold_review(
                session, order_no[:32], user.role, actor_name(user), body.reason, client_ip(request)
            )
    except OrdertallyError as exc:
        return await _refused(request, user, stage, order_no, exc)
    return RedirectResponse(f"/ui/review?stage={stage}&done=held", status_code=303)


@router.post("/ui/review/{order_no}/edit")
async def edit_order(request: Request, order_no: str) -> Response:
    """Edit an order waiting in review: the remark, the warehouse, the address (all of its
    fields, or none)."""
    user = await signed_in(request, "orders.review")
    await check_csrf(request, user)
    form = await request.form()
    stage = _stage_of(user, str(form.get("stage", "")))
    address = {f: str(form.get(f"address_{f}", "")).strip() for f in ADDRESS_FIELDS}
    given: dict[str, Any] = {}
    if any(address.values()):
        given["shipping_address"] = address
    # The remark is sent as shown; it counts as an edit only when it differs from it.
    if "remark" in form and str(form.get("remark", "")) != str(form.get("remark_was", "")):
        given["remark"] = str(form.get("remark", ""))
    if str(form.get("warehouse", "")):
        given["warehouse"] = str(form.get("warehouse", ""))
    try:
        body = ReviewEditIn.model_validate(given)
    except ValidationError as exc:
        return await _invalid(request, user, stage, order_no, exc)
    edit = review.ReviewEdit(
        address=body.shipping_address.model_dump() if body.shipping_address else None,
        remark=body.remark,
        warehouse=body.warehouse,
    )
    try:
        async with database(request).transaction() as session:
            await review.edit_review(
                session, order_no[:32], user.role, actor_name(user), edit, client_ip(request)
            )
    except OrdertallyError as exc:
        return await _refused(request, user, stage, order_no, exc)
    return RedirectResponse(f"/ui/review?stage={stage}&done=edited", status_code=303)
