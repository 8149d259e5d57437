"""The order review queue (审单): paid orders the auto-review strategy held, with its reasons,
for customer service (and finance, when a rule asked for its review) to pass. The queue and
the pass are orders' review service, exactly as the API calls them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ordertally.core.errors import OrdertallyError
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import review
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
}
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
