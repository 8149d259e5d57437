"""The finance screen (财务): manual payment requests (补单) decided by a second person, and
statement reconciliation with its four kinds of result. Each handler checks the role, each
write the CSRF token; the payments domain's services do the work."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from ordertally.core.errors import Forbidden, InvalidRequest, OrdertallyError
from ordertally.orders import service as orders_service
from ordertally.orders.errors import OrderOutOfScope
from ordertally.payments import gateway, reconcile
from ordertally.payments import manual as manual_service
from ordertally.payments.errors import SameApprover
from ordertally.payments.models import ManualPayment
from ordertally.web import pages
from ordertally.web.i18n import N_
from ordertally.web.pages import _common, _error_text
from ordertally.web.security import SignedIn, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

PROVIDERS: dict[str, str] = {"wechatpay": N_("WeChat Pay"), "alipay": N_("Alipay")}
CATEGORY_LABELS: dict[str, str] = {
    "matched": N_("Matched"),
    "platform_only": N_("Platform only"),
    "ordertally_only": N_("ordertally only"),
    "amount_mismatch": N_("Amount mismatch"),
    "status_mismatch": N_("Status mismatch"),
}
FLASHES: dict[str, str] = {
    "approved": N_("The manual payment was approved: the order is paid."),
    "rejected": N_("The manual payment was rejected."),
    "requested": N_("The manual payment was recorded: a second finance user must approve it."),
}
# A statement larger than this is reconciled from the CLI (`ordertally payments reconcile`).
MAX_STATEMENT_BYTES = 20 * 1024 * 1024
SHOWN_DISCREPANCIES = 200


def actor_name(user: SignedIn) -> str:
    """The name a signed-in person requests and decides under (as in the audit trail)."""
    return f"user:{user.username}"


async def _mine(session: Any, user: SignedIn, found: list[ManualPayment]) -> list[ManualPayment]:
    """The requests a channel-scoped user may see: its accounts' orders' only."""
    if user.channels is None:
        return found
    mine = []
    for manual in found:
        try:
            await orders_service.check_order_id_in_scope(session, manual.order_id, user.channels)
        except OrderOutOfScope:
            continue
        mine.append(manual)
    return mine


async def _manual_in_scope(session: Any, user: SignedIn, manual_id: int) -> None:
    """Refuse a channel-scoped user a request of another account's order (OrderOutOfScope)."""
    if user.channels is not None:
        manual = await manual_service.get_manual(session, manual_id)
        await orders_service.check_order_id_in_scope(session, manual.order_id, user.channels)


async def _context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        pending = await _mine(session, user, await manual_service.list_manual(session))
        decided = await _mine(
            session, user, await manual_service.list_manual(session, None, limit=20)
        )
    return _common(
        request,
        user,
        active="payments",
        # A page rendered after a POST switches language back to the screen itself.
        path="/ui/payments",
        query="",
        pending=pending,
        decided=[m for m in decided if m.state != "pending_approval"],
        me=actor_name(user),
        can_decide=may(user, "payments.manual"),
        can_reconcile=may(user, "payments.reconcile"),
        providers=PROVIDERS,
        category_labels=CATEGORY_LABELS,
        finance_flash=FLASHES.get(request.query_params.get("done", "")),
        **({"error": None, "report": None, "decision_error": {}} | extra),
    )


@router.get("/ui/payments")
async def payments_page(request: Request) -> Response:
    """补单 requests awaiting a second person, recent decisions, and the statement upload."""
    user = await signed_in(request, "payments.reconcile")
    return render(request, "payments.html", await _context(request, user))


@router.post("/ui/payments/manual/{manual_id}/approve")
async def approve(request: Request, manual_id: int) -> Response:
    """A second finance user approves: the providers are asked first (no transaction open),
    then the order is paid on the evidence."""
    user = await signed_in(request, "payments.manual")
    await check_csrf(request, user)
    db = database(request)
    try:
        async with db.transaction(write=False) as session:
            await _manual_in_scope(session, user, manual_id)
            _, queryable = await manual_service.manual_for_decision(
                session, manual_id, actor_name(user)
            )
        answers = await gateway.query_many(queryable)
        async with db.transaction() as session:
            await manual_service.approve_manual(
                session, manual_id, actor_name(user), list(zip(queryable, answers, strict=True))
            )
    except OrdertallyError as exc:
        return await _refused(request, user, manual_id, exc)
    return RedirectResponse("/ui/payments?done=approved", status_code=303)


@router.post("/ui/payments/manual/{manual_id}/reject")
async def reject(request: Request, manual_id: int) -> Response:
    """A second finance user refuses the request; the order is untouched."""
    user = await signed_in(request, "payments.manual")
    await check_csrf(request, user)
    form = await request.form()
    note = str(form.get("note", "")).strip()[:500]
    try:
        async with database(request).transaction() as session:
            await _manual_in_scope(session, user, manual_id)
            await manual_service.reject_manual(session, manual_id, actor_name(user), note)
    except OrdertallyError as exc:
        return await _refused(request, user, manual_id, exc)
    return RedirectResponse("/ui/payments?done=rejected", status_code=303)


async def _refused(
    request: Request, user: SignedIn, manual_id: int, exc: OrdertallyError
) -> Response:
    reason = (
        N_("You requested this manual payment: another finance user must decide it.")
        if isinstance(exc, SameApprover)
        else _error_text(exc)
    )
    context = await _context(request, user, decision_error={manual_id: reason})
    return render(request, "payments.html", context, status=exc.status)


@router.post("/ui/orders/{order_no}/manual-payment")
async def request_manual(request: Request, order_no: str) -> Response:
    """Finance vouches for a payment with evidence (补单); a second person decides it."""
    user = await signed_in(request, "payments.manual")
    await check_csrf(request, user)
    await pages._in_scope(request, user, order_no)
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:500] for k in ("reference", "amount", "reason")}
    paid_at = pages._parse_moment(str(form.get("paid_at", ""))[:40] or None, end=False)
    try:
        if paid_at is None:
            raise InvalidRequest("paid_at is not a time", field="paid_at")
        if len(values["reason"]) < 3 or not values["reference"]:
            raise InvalidRequest("reference and reason are needed", field="reason")
        async with database(request).transaction() as session:
            await manual_service.request_manual(
                session,
                order_no,
                reference=values["reference"][:128],
                amount=values["amount"],
                paid_at=paid_at,
                reason=values["reason"],
                requested_by=actor_name(user),
            )
    except (OrdertallyError, ArithmeticError, ValueError) as exc:
        context = await pages._order_context(request, user, order_no)
        context["path"] = f"/ui/orders/{order_no}"
        context["manual_error"] = (
            _error_text(exc) if isinstance(exc, OrdertallyError) else N_("Amount: a number.")
        )
        status = exc.status if isinstance(exc, OrdertallyError) else 422
        return render(request, "order.html", context, status=status)
    return RedirectResponse("/ui/payments?done=requested", status_code=303)


@router.post("/ui/payments/reconcile")
async def reconcile_upload(request: Request) -> Response:
    """Upload a provider's trade bill: matched / platform-only / ordertally-only / mismatched."""
    user = await signed_in(request, "payments.reconcile")
    await check_csrf(request, user)
    if user.channels is not None:
        raise Forbidden("a trade bill covers every channel account: a channel-scoped user cannot")
    form = await request.form(max_part_size=MAX_STATEMENT_BYTES)
    provider = str(form.get("provider", ""))
    upload = form.get("statement")
    error = None
    report = None
    if provider not in PROVIDERS:
        error = N_("Choose the statement's provider.")
    elif not isinstance(upload, UploadFile):
        error = N_("Choose the statement file.")
    else:
        data = await upload.read(MAX_STATEMENT_BYTES + 1)
        if len(data) > MAX_STATEMENT_BYTES:
            error = N_("The statement is too large for the page: use the command line.")
        else:
            try:
                statement = reconcile.parse(provider, reconcile.decode_statement(data, provider))
                report = await reconcile.run(
                    database(request),
                    statement,
                    file_name=(upload.filename or "upload")[:200],
                    sha256=hashlib.sha256(data).hexdigest(),
                    run_by=actor_name(user),
                )
            except OrdertallyError as exc:
                error = _error_text(exc)
    context = await _context(
        request,
        user,
        error=error,
        report=report,
        shown=report.discrepancies[:SHOWN_DISCREPANCIES] if report else [],
        provider=provider,
    )
    return render(request, "payments.html", context, status=422 if error else 200)
