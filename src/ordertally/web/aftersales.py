"""The after-sales screen (售后): the queue of cases with filters and keyset pages, a case with
its lines, evidence, refunds and state history, and the steps of the case table, each offered
to the roles the API allows it to (customer service decides, the warehouse receives and
inspects, finance refunds). The after-sales domain's services do the work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from ordertally.aftersales import goods, refunds
from ordertally.aftersales import service as aftersales_service
from ordertally.aftersales.policy import current as current_policy
from ordertally.aftersales.schemas import (
    CaseCreate,
    Inspection,
    ParcelIn,
    PlatformRefundIn,
    ReturnWaybill,
)
from ordertally.aftersales.state_machine import (
    MOVES_MONEY,
    RETURNS_GOODS,
    TRANSITIONS,
    CaseStatus,
    CaseType,
)
from ordertally.core.errors import OrdertallyError
from ordertally.core.money import format_minor
from ordertally.inventory import service as inventory_service
from ordertally.orders import service as orders_service
from ordertally.orders.errors import OrderNotFound
from ordertally.web import pages
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50

TYPE_LABELS = pages.AFTERSALE_TYPE_LABELS
CASE_STATUS_LABELS = pages.AFTERSALE_STATUS_LABELS
RESPONSIBILITY_LABELS: dict[str, str] = {
    "buyer": N_("Buyer"),
    "merchant": N_("Merchant"),
    "warehouse": N_("Warehouse"),
    "carrier": N_("Carrier"),
    "supplier": N_("Supplier"),
}
GOODS_LABELS: dict[str, str] = {
    "buyer_not_received": N_("Buyer has not received the goods"),
    "buyer_received": N_("Buyer received the goods"),
    "buyer_returned": N_("Buyer sent the goods back"),
    "seller_received": N_("Goods back at the warehouse"),
}
REFUND_STATE_LABELS: dict[str, str] = {
    "pending": N_("Waiting to be sent"),
    "sent": N_("Sent, waiting for the provider"),
    "succeeded": N_("Refunded by the provider"),
    "failed": N_("Failed"),
}
STEP_LABELS: dict[str, str] = {
    "request": N_("Requested"),
    "approve": N_("Approved"),
    "reject": N_("Rejected"),
    "await_return": N_("Waiting for the goods"),
    "receive": N_("Goods received"),
    "inspect": N_("Inspected"),
    "refund": N_("Refunded"),
    "reship": N_("Reshipped"),
    "exchange": N_("Exchange sent"),
    "close": N_("Closed"),
}
# The reason codes customer service uses, as people read them. A platform record's code is
# "<platform>:<the platform's own words>" (pdd:不想要了): shown as the platform and its words.
REASON_LABELS: dict[str, str] = {
    "damaged": N_("Damaged"),
    "damaged_in_transit": N_("Damaged in transit"),
    "wrong_item": N_("Wrong item sent"),
    "wrong_size": N_("Wrong size"),
    "size": N_("Size does not fit"),
    "not_as_described": N_("Not as described"),
    "quality": N_("Quality problem"),
    "missing_item": N_("Item missing from the parcel"),
    "missing": N_("Item missing from the parcel"),
    "late": N_("Delivered late"),
    "lost": N_("Lost in transit"),
    "no_longer_wanted": N_("No longer wanted"),
    "refused": N_("Refused on delivery"),
}
REASON_PLATFORMS: dict[str, str] = {"pdd": "pinduoduo", "shopify": "shopify", "amazon": "amazon"}


def reason_parts(code: str) -> tuple[str, str | None]:
    """A reason code as (label to translate, platform words or None): a known code's label, a
    platform record's platform name and words, else the code itself."""
    if code in REASON_LABELS:
        return REASON_LABELS[code], None
    prefix, sep, words = code.partition(":")
    if sep and prefix in REASON_PLATFORMS:
        return pages.CHANNEL_LABELS[REASON_PLATFORMS[prefix]], words
    return code, None


FLASHES: dict[str, str] = {
    "opened": N_("The after-sales case was opened."),
    "approved": N_("The case was approved."),
    "rejected": N_("The case was rejected."),
    "waybill": N_("The return waybill was recorded."),
    "received": N_("The returned parcel was recorded."),
    "inspected": N_("The inspection was recorded: the stock ledger has the units."),
    "refund": N_("The refund was requested: the provider confirms it."),
    "platform_refund": N_("The platform's refund was recorded."),
    "reshipped": N_("The replacement shipment was planned."),
    "exchanged": N_("The exchange's replacement shipment was planned."),
    "closed": N_("The case was closed."),
    "withdrawn": N_("The request was withdrawn: the case is closed, nothing was refunded."),
}
ERROR_MESSAGES: dict[str, str] = {
    "aftersales.illegal_transition": N_("This step is not possible in the case's current state."),
    "aftersales.return_first": N_("This case is refunded once the warehouse has the goods."),
    "aftersales.finance_approval_required": N_("A refund this large is made by finance."),
    "aftersales.refund_exceeds_paid": N_("That is more than is left to refund."),
    "aftersales.waiting_for_stock": N_("Not enough stock to send the replacement yet."),
    "aftersales.conflict": N_("The case changed meanwhile. Reload the page and try again."),
}
# The order statuses in which a case of some type may be opened.
OPENABLE = frozenset().union(*aftersales_service.OPENS_FROM.values())


def actor_name(user: SignedIn) -> str:
    """The name a signed-in person acts under (as in the audit trail)."""
    return f"user:{user.username}"


def _error_text(exc: OrdertallyError) -> str:
    return ERROR_MESSAGES.get(exc.code) or pages._error_text(exc)


def _labels() -> dict[str, Any]:
    return {
        "type_labels": TYPE_LABELS,
        "case_status_labels": CASE_STATUS_LABELS,
        "responsibility_labels": RESPONSIBILITY_LABELS,
        "goods_labels": GOODS_LABELS,
        "refund_state_labels": REFUND_STATE_LABELS,
        "step_labels": STEP_LABELS,
        "reason_labels": REASON_LABELS,
        "reason_parts": reason_parts,
    }


def _pick(value: str | None, known: dict[str, str]) -> str:
    return value if value in known else ""


def queue_link(**params: str) -> str:
    """The queue's address with these filters (empty ones left out)."""
    kept = {k: v for k, v in params.items() if v}
    return "/ui/aftersales" + (f"?{urlencode(kept)}" if kept else "")


# --- the queue ----------------------------------------------------------------------------------


@router.get("/ui/aftersales")
async def queue_page(request: Request) -> Response:
    """Cases, newest first, filtered by type, state, channel, responsibility and the day they
    were opened (the merchant's days); htmx asks for the table block alone."""
    user = await signed_in(request, "aftersales.read")
    q = request.query_params
    filters = {
        "type": _pick(q.get("type"), TYPE_LABELS),
        "status": _pick(q.get("status"), CASE_STATUS_LABELS),
        "channel": (q.get("channel") or "").strip()[:32],
        "responsibility": _pick(q.get("responsibility"), RESPONSIBILITY_LABELS),
        "created_from": (q.get("created_from") or "")[:10],
        "created_to": (q.get("created_to") or "")[:10],
    }
    wanted = aftersales_service.CaseFilter(
        status=filters["status"] or None,
        type=filters["type"] or None,
        channel=filters["channel"] or None,
        responsibility=filters["responsibility"] or None,
        since=pages._parse_moment(filters["created_from"] or None, end=False),
        until=pages._parse_moment(filters["created_to"] or None, end=True),
    )
    after = q.get("after", "")
    before_id = int(after) if after.isdigit() and len(after) < 19 else None
    async with database(request).transaction(write=False) as session:
        cases, next_id = await aftersales_service.page_cases(session, wanted, before_id, PAGE_SIZE)
    context = pages._common(
        request,
        user,
        active="aftersales",
        cases=cases,
        filters=filters,
        amount=lambda case: format_minor(case.refund_minor, case.currency),
        next_link=queue_link(**filters, after=str(next_id)) if next_id else None,
        first_link=queue_link(**filters) if before_id else None,
        **_labels(),
    )
    block = "table" if request.headers.get("hx-target") == "aftersales-table" else None
    return render(request, "aftersales.html", context, block=block)


# --- opening a case -----------------------------------------------------------------------------


async def _new_context(
    request: Request, user: SignedIn, order_no: str, **extra: Any
) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        order = await orders_service.get_order(session, order_no)
        lines = await orders_service.lines_of(session, order)
    return pages._common(
        request,
        user,
        active="aftersales",
        path="/ui/aftersales/new",
        query=urlencode({"order": order_no}),
        order=order,
        lines=lines,
        types=[t for t in CaseType if order.status in aftersales_service.OPENS_FROM[t]],
        **_labels(),
        **({"error": None, "form": {}} | extra),
    )


@router.get("/ui/aftersales/new")
async def new_case_page(request: Request, order: str = "") -> Response:
    """The form that opens a case on an order (customer service)."""
    user = await signed_in(request, "aftersales.manage")
    try:
        context = await _new_context(request, user, order[:32])
    except OrderNotFound:
        missing = pages._common(request, user, reason="missing", permission=None, order_no=order)
        return render(request, "forbidden.html", missing, status=404)
    return render(request, "aftersale_new.html", context)


def _case_body(form: FormData, order_no: str) -> dict[str, Any]:
    """The API's case body from the form: the lines with a quantity, one evidence reference
    per line of the text box."""
    lines = []
    for key, value in form.multi_items():
        if key.startswith("qty_") and str(value).strip() not in ("", "0"):
            lines.append({"line_no": key[4:], "quantity": str(value).strip()})
    evidence = [r.strip() for r in str(form.get("evidence", "")).splitlines() if r.strip()]
    return {
        "order_no": order_no,
        "type": str(form.get("type", "")),
        "reason_code": str(form.get("reason_code", ""))[:64],
        "lines": lines,
        "refund_goods": str(form.get("refund_goods", "")).strip() or "0",
        "refund_postage": str(form.get("refund_postage", "")).strip() or "0",
        "refund_other": str(form.get("refund_other", "")).strip() or "0",
        "goods_status": str(form.get("goods_status", "buyer_received")),
        "evidence": evidence,
        "buyer_message": str(form.get("buyer_message", "")).strip()[:600] or None,
    }


@router.post("/ui/aftersales")
async def open_case(request: Request) -> Response:
    """Open a case (the API's checks: the order's status, each line's quantity left, the
    amounts within the order's total); a refusal shows the form again and writes nothing."""
    user = await signed_in(request, "aftersales.manage")
    await check_csrf(request, user)
    form = await request.form()
    order_no = str(form.get("order_no", ""))[:32]
    body = _case_body(form, order_no)
    try:
        cmd = CaseCreate.model_validate(body)
        async with database(request).transaction() as session:
            case, _ = await aftersales_service.open_case(session, cmd, actor_name(user))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return await _new_refused(request, user, order_no, body, f"{where}: {first['msg']}", 422)
    except OrdertallyError as exc:
        return await _new_refused(request, user, order_no, body, _error_text(exc), exc.status)
    return RedirectResponse(f"/ui/aftersales/{case.case_no}?done=opened", status_code=303)


async def _new_refused(
    request: Request, user: SignedIn, order_no: str, body: dict[str, Any], error: str, status: int
) -> Response:
    try:
        context = await _new_context(request, user, order_no, error=error, form=body)
    except OrderNotFound:
        missing = pages._common(request, user, reason="missing", permission=None, order_no=order_no)
        return render(request, "forbidden.html", missing, status=404)
    return render(request, "aftersale_new.html", context, status=status)


# --- one case -----------------------------------------------------------------------------------


def _steps(case_type: str, status: str) -> set[str]:
    """The case table's steps that leave this status for this type."""
    return {
        t.name
        for t in TRANSITIONS
        if CaseStatus(status) in t.sources and CaseType(case_type) in t.types
    }


async def _case_context(
    request: Request, user: SignedIn, case_no: str, **extra: Any
) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        found = await aftersales_service.view(session, case_no)
        case_refunds = await refunds.refunds_of(session, found.case)
        warehouses = (
            await inventory_service.list_warehouses(session)
            if may(user, "aftersales.receive")
            else []
        )
    case = found.case
    steps = _steps(case.type, case.status)
    manage = may(user, "aftersales.manage")
    moves_money = CaseType(case.type) in MOVES_MONEY
    asked = sum(r.amount_minor for r in case_refunds if r.state != "failed")
    return pages._common(
        request,
        user,
        active="aftersales",
        # A page rendered after a POST switches language back to the case itself.
        path=f"/ui/aftersales/{case.case_no}",
        query="",
        case=case,
        buyer_message=aftersales_service.buyer_message(case, reveal=manage),
        lines=found.lines,
        names=found.names,
        events=found.events,
        refunds=case_refunds,
        warehouses=warehouses,
        refund_left=case.refund_minor - asked if moves_money else 0,
        refund_left_text=format_minor(case.refund_minor - asked, case.currency),
        refunds_moving=any(r.state in ("pending", "sent") for r in case_refunds),
        returns_goods=CaseType(case.type) in RETURNS_GOODS,
        can_decide=manage and "approve" in steps,
        can_waybill=manage and case.status == CaseStatus.AWAITING_RETURN,
        can_receive=may(user, "aftersales.receive") and case.status == CaseStatus.AWAITING_RETURN,
        can_inspect=may(user, "aftersales.receive") and "inspect" in steps,
        can_refund=may(user, "aftersales.refund")
        and moves_money
        and "refund" in steps
        and case.refund_minor - asked > 0
        and (
            case.status != CaseStatus.AWAITING_RETURN
            or current_policy().refunds_before_return(case.type)
        ),
        can_reship=manage and "reship" in steps,
        can_exchange=manage and "exchange" in steps,
        can_close=manage and "close" in steps,
        can_withdraw=manage
        and "withdraw" in steps
        and aftersales_service.withdrawal_blocked_by(case_refunds) is None,
        case_flash=FLASHES.get(request.query_params.get("done", "")),
        **_labels(),
        **({"error": None} | extra),
    )


@router.get("/ui/aftersales/{case_no}")
async def case_page(request: Request, case_no: str) -> Response:
    """A case: what was asked, its lines as the goods come back, evidence, refunds with their
    state at the provider or platform, the state history, and the steps the role may take."""
    user = await signed_in(request, "aftersales.read")
    try:
        context = await _case_context(request, user, case_no[:32])
    except OrdertallyError as exc:
        if exc.status != 404:
            raise
        missing = pages._common(request, user, reason="missing", permission=None, order_no=case_no)
        return render(request, "forbidden.html", missing, status=404)
    return render(request, "aftersale.html", context)


@router.get("/ui/aftersales/{case_no}/refunds")
async def refunds_block(request: Request, case_no: str) -> Response:
    """The refunds block alone, polled by htmx while a refund waits for the provider."""
    user = await signed_in(request, "aftersales.read")
    context = await _case_context(request, user, case_no[:32])
    return render(request, "aftersale.html", context, block="refunds")


Step = Callable[[AsyncSession, FormData, str], Awaitable[None]]


async def _step(request: Request, case_no: str, permission: str, done: str, work: Step) -> Response:
    """Check the role and the token, run one step in one transaction, and show the case again
    (with the refusal, and nothing written, when the domain refuses)."""
    user = await signed_in(request, permission)
    await check_csrf(request, user)
    form = await request.form()
    try:
        async with database(request).transaction() as session:
            await work(session, form, actor_name(user))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        context = await _case_context(request, user, case_no, error=f"{where}: {first['msg']}")
        return render(request, "aftersale.html", context, status=422)
    except OrdertallyError as exc:
        if exc.status == 404:
            raise
        context = await _case_context(request, user, case_no, error=_error_text(exc))
        return render(request, "aftersale.html", context, status=exc.status)
    return RedirectResponse(f"/ui/aftersales/{case_no}?done={done}", status_code=303)


def _text(form: FormData, name: str, limit: int) -> str | None:
    return str(form.get(name, "")).strip()[:limit] or None


@router.post("/ui/aftersales/{case_no}/approve")
async def approve(request: Request, case_no: str) -> Response:
    """Approve, with whose responsibility it is when already known."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        responsibility = _pick(str(form.get("responsibility", "")), RESPONSIBILITY_LABELS)
        await aftersales_service.approve(
            session,
            case_no,
            actor,
            responsibility=responsibility or None,
            note=_text(form, "note", 500),
        )

    return await _step(request, case_no[:32], "aftersales.manage", "approved", work)


@router.post("/ui/aftersales/{case_no}/reject")
async def reject(request: Request, case_no: str) -> Response:
    """Reject a requested case."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        await aftersales_service.reject(session, case_no, actor, note=_text(form, "note", 500))

    return await _step(request, case_no[:32], "aftersales.manage", "rejected", work)


@router.post("/ui/aftersales/{case_no}/return-waybill")
async def return_waybill(request: Request, case_no: str) -> Response:
    """Record the waybill the goods come back under."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        body = ReturnWaybill.model_validate(
            {"carrier": str(form.get("carrier", "")), "waybill_no": str(form.get("waybill_no", ""))}
        )
        await aftersales_service.set_return_waybill(
            session, case_no, body.carrier, body.waybill_no, actor
        )

    return await _step(request, case_no[:32], "aftersales.manage", "waybill", work)


@router.post("/ui/aftersales/{case_no}/receive")
async def receive(request: Request, case_no: str) -> Response:
    """The warehouse records the case's parcel as arrived (the case counts as returned)."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        body = ParcelIn.model_validate(
            {
                "warehouse": str(form.get("warehouse", "")),
                "carrier": _text(form, "carrier", 64),
                "waybill_no": _text(form, "waybill_no", 80),
                "case_no": case_no,
                "note": _text(form, "note", 500),
            }
        )
        await goods.receive_parcel(session, body, actor)

    return await _step(request, case_no[:32], "aftersales.receive", "received", work)


@router.post("/ui/aftersales/{case_no}/inspect")
async def inspect(request: Request, case_no: str) -> Response:
    """Per line: good units back to sellable stock, damaged ones written off with a reason."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        lines = []
        for key, value in form.multi_items():
            if key.startswith("good_"):
                no = key[5:]
                lines.append(
                    {
                        "line_no": no,
                        "good": str(value).strip() or "0",
                        "damaged": str(form.get(f"damaged_{no}", "")).strip() or "0",
                        "reason": _text(form, f"reason_{no}", 200),
                    }
                )
        responsibility = _pick(str(form.get("responsibility", "")), RESPONSIBILITY_LABELS)
        body = Inspection.model_validate(
            {
                "warehouse": str(form.get("warehouse", "")),
                "lines": lines,
                "responsibility": responsibility or None,
            }
        )
        await goods.inspect(session, case_no, body, actor)

    return await _step(request, case_no[:32], "aftersales.receive", "inspected", work)


@router.post("/ui/aftersales/{case_no}/refund")
async def refund(request: Request, case_no: str) -> Response:
    """Ask for the case's refund through the order's payment provider (the refund job sends
    it; the provider's notification or a query confirms it)."""
    user = await signed_in(request, "aftersales.refund")

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        case = await aftersales_service.get_case(session, case_no)
        text = _text(form, "amount", 32)
        amount = refunds.parse_amount(text, case.currency) if text else None
        await refunds.request_refund(session, case_no, actor, role=user.role, amount_minor=amount)

    return await _step(request, case_no[:32], "aftersales.refund", "refund", work)


@router.post("/ui/aftersales/{case_no}/platform-refund")
async def platform_refund(request: Request, case_no: str) -> Response:
    """Record the refund a platform made on a platform order."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        case = await aftersales_service.get_case(session, case_no)
        body = PlatformRefundIn.model_validate(
            {
                "platform_refund_id": str(form.get("platform_refund_id", "")).strip(),
                "amount": str(form.get("amount", "")).strip(),
            }
        )
        await refunds.record_platform_refund(
            session,
            case_no,
            body.platform_refund_id,
            refunds.parse_amount(body.amount, case.currency),
            actor,
        )

    return await _step(request, case_no[:32], "aftersales.refund", "platform_refund", work)


@router.post("/ui/aftersales/{case_no}/reship")
async def reship(request: Request, case_no: str) -> Response:
    """Send an approved reship case's lines again (a replacement shipment, no charge)."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        await aftersales_service.reship(session, case_no, actor)

    return await _step(request, case_no[:32], "aftersales.manage", "reshipped", work)


@router.post("/ui/aftersales/{case_no}/exchange")
async def exchange(request: Request, case_no: str) -> Response:
    """Send an inspected exchange's replacement."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        await aftersales_service.exchange(session, case_no, actor)

    return await _step(request, case_no[:32], "aftersales.manage", "exchanged", work)


@router.post("/ui/aftersales/{case_no}/withdraw")
async def withdraw(request: Request, case_no: str) -> Response:
    """Close a case the buyer took back before any money or goods moved."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        await aftersales_service.withdraw(session, case_no, actor)

    return await _step(request, case_no[:32], "aftersales.manage", "withdrawn", work)


@router.post("/ui/aftersales/{case_no}/close")
async def close(request: Request, case_no: str) -> Response:
    """Close a finished case."""

    async def work(session: AsyncSession, form: FormData, actor: str) -> None:
        await aftersales_service.close(session, case_no, actor)

    return await _step(request, case_no[:32], "aftersales.manage", "closed", work)
