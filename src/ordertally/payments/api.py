"""HTTP routes of the payments domain: start a payment, read an order's payments, manual
recovery by two finance users, statement reconciliation. Thin; one transaction per step."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.errors import Forbidden
from ordertally.core.money import format_minor
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.http import replay_response
from ordertally.orders import service as orders_service
from ordertally.orders.errors import OrderOutOfScope
from ordertally.payments import gateway, reconcile, service
from ordertally.payments import manual as manual_service
from ordertally.payments.errors import ProviderUnavailable
from ordertally.payments.models import ManualPayment, Payment
from ordertally.payments.providers import ProviderCallFailed, ProviderRefused
from ordertally.payments.schemas import (
    DecisionIn,
    ManualPaymentIn,
    ManualPaymentOut,
    ManualStateFilter,
    OrderPaymentsOut,
    PaymentCreate,
    PaymentOut,
    Provider,
    ReconciliationOut,
)

router = APIRouter(prefix="/api/v1", tags=["payments"])

JSON = "application/json"
MAX_DISCREPANCIES = 1000


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


def payment_doc(p: Payment) -> dict[str, Any]:
    """An attempt's JSON: amounts as decimal strings."""
    return {
        "out_trade_no": p.out_trade_no,
        "order_no": p.order_no,
        "provider": p.provider,
        "state": p.state,
        "amount": format_minor(p.amount_minor, p.currency),
        "currency": p.currency,
        "paid_amount": (
            format_minor(p.paid_amount_minor, p.currency)
            if p.paid_amount_minor is not None
            else None
        ),
        "refunded": format_minor(p.refunded_minor, p.currency),
        "provider_txn_id": p.provider_txn_id,
        "paid_at": _iso(p.paid_at),
        "settles_order": p.settles_order,
        "provider_params": p.provider_params,
        "next_query_at": _iso(p.next_query_at),
        "query_count": p.query_count,
        "last_query_state": p.last_query_state,
        "created_at": _iso(p.created_at),
    }


async def _manual_in_scope(session: Any, manual_id: int, principal: Principal) -> None:
    """Refuse a channel-scoped caller a 补单 request of another account's order."""
    if principal.channels is not None:
        manual = await manual_service.get_manual(session, manual_id)
        await orders_service.check_order_id_in_scope(session, manual.order_id, principal.channels)


def manual_doc(m: ManualPayment) -> dict[str, Any]:
    """A manual payment request's JSON."""
    return {
        "id": m.id,
        "order_no": m.order_no,
        "amount": format_minor(m.amount_minor, m.currency),
        "currency": m.currency,
        "reference": m.reference,
        "paid_at": _iso(m.paid_at),
        "reason": m.reason,
        "state": m.state,
        "requested_by": m.requested_by,
        "requested_at": _iso(m.requested_at),
        "decided_by": m.decided_by,
        "decided_at": _iso(m.decided_at),
        "decision_note": m.decision_note,
        "query_outcome": m.query_outcome,
    }


@router.post(
    "/orders/{order_no}/payments",
    status_code=201,
    response_model=PaymentOut,
    summary="Start paying an order through a provider (QR code)",
    responses={200: {"description": "The order's open attempt with this provider"}},
)
async def create_payment(
    request: Request,
    order_no: str,
    body: PaymentCreate,
    principal: Annotated[Principal, Depends(require("payments.create"))],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
    """Open an attempt (`out_trade_no`, amount) and ask the provider for its QR code.

    Repeating the request returns the order's open attempt with that provider, so a retry
    never opens a second payment; an Idempotency-Key also replays the stored response.
    """
    db = _db(request)
    scope = principal.scope
    req_hash = idempotency_service.request_hash(
        "POST", request.url.path, body.model_dump_json().encode()
    )

    async def open_or_replay() -> tuple[Payment | None, bool, Response | None, datetime | None]:
        async with db.transaction() as session:
            if idempotency_key is not None:
                replay = await idempotency_service.check(session, scope, idempotency_key, req_hash)
                if replay is not None:
                    return None, False, replay_response(replay), None
            order = await orders_service.get_order_in_scope(session, order_no, principal.channels)
            payment, created = await service.open_attempt(
                session, order, body.provider, principal.name
            )
            return payment, created, None, order.payment_deadline_at

    try:
        payment, created, replayed, deadline = await open_or_replay()
    except IntegrityError:  # a concurrent request drew the same out_trade_no
        payment, created, replayed, deadline = await open_or_replay()
    if replayed is not None:
        return replayed
    assert payment is not None
    error: str | None = None
    refused: dict[str, str] = {}  # the provider's own error code, when it answered with one
    params = payment.provider_params
    if params is None:
        try:
            params = await gateway.request_provider_params(payment, deadline)
        except ProviderCallFailed as exc:
            params, error = None, str(exc)
            if isinstance(exc, ProviderRefused):
                refused = {"provider_code": exc.code, "provider_sub_code": exc.sub_code}
    status = 201 if created else 200
    async with db.transaction() as session:
        payment = await service.store_provider_params(session, payment.id, params, error)
        payload = orjson.dumps(payment_doc(payment))
        if idempotency_key is not None and error is None:
            await idempotency_service.store(
                session, scope, idempotency_key, req_hash, status, payload.decode()
            )
    if error is not None:
        raise ProviderUnavailable(error, out_trade_no=payment.out_trade_no, **refused)
    return Response(
        payload,
        status_code=status,
        media_type=JSON,
        headers={"Location": f"/api/v1/orders/{order_no}/payments"},
    )


@router.get(
    "/orders/{order_no}/payments",
    response_model=OrderPaymentsOut,
    summary="An order's payment attempts, notifications and refunds",
)
async def order_payments(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("payments.read"))],
) -> Response:
    """Everything the payments domain knows about an order."""
    async with _db(request).transaction(write=False) as session:
        await orders_service.get_order_in_scope(session, order_no, principal.channels)
        found = await service.payments_of(session, order_no)
    by_id = {p.id: p for p in found["payments"]}
    return _json(
        {
            "order_no": found["order"].order_no,
            "status": found["order"].status,
            "payments": [payment_doc(p) for p in found["payments"]],
            "notifications": [
                {
                    "id": n.id,
                    "provider": n.provider,
                    "source": n.source,
                    "event_type": n.event_type,
                    "out_trade_no": n.out_trade_no,
                    "trade_state": n.trade_state,
                    "verification": n.verification,
                    "outcome": n.outcome,
                    "received_at": _iso(n.received_at),
                    "applied_at": _iso(n.applied_at),
                }
                for n in found["notifications"]
            ],
            "refunds": [
                {
                    "out_trade_no": by_id[r.payment_id].out_trade_no,
                    "out_refund_no": r.out_refund_no,
                    "refund_id": r.refund_id,
                    "amount": format_minor(r.amount_minor, by_id[r.payment_id].currency),
                    "status": r.status,
                    "refunded_at": _iso(r.refunded_at),
                }
                for r in found["refunds"]
            ],
        }
    )


@router.post(
    "/orders/{order_no}/manual-payment",
    status_code=201,
    response_model=ManualPaymentOut,
    summary="补单: vouch for a payment with evidence (needs a second finance user)",
)
async def request_manual_payment(
    request: Request,
    order_no: str,
    body: ManualPaymentIn,
    principal: Annotated[Principal, Depends(require("payments.manual"))],
) -> Response:
    """Record the evidence; nothing changes on the order until another person approves."""
    async with _db(request).transaction() as session:
        await orders_service.get_order_in_scope(session, order_no, principal.channels)
        manual = await manual_service.request_manual(
            session,
            order_no,
            reference=body.reference,
            amount=body.amount,
            paid_at=body.paid_at,
            reason=body.reason,
            requested_by=principal.name,
        )
    return _json(manual_doc(manual), 201)


@router.get(
    "/manual-payments",
    response_model=list[ManualPaymentOut],
    summary="Manual payment requests (补单), newest first: by default those awaiting approval",
)
async def list_manual_payments(
    request: Request,
    principal: Annotated[Principal, Depends(require("payments.read"))],
    state: ManualStateFilter = "pending_approval",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The requests of a state (`all`: every one), pageable by `before_id`."""
    async with _db(request).transaction(write=False) as session:
        found = await manual_service.list_manual(
            session, None if state == "all" else state, limit=limit, before_id=before_id
        )
        if principal.channels is not None:  # a channel-scoped caller sees its accounts' only
            mine = []
            for manual in found:
                try:
                    await orders_service.check_order_id_in_scope(
                        session, manual.order_id, principal.channels
                    )
                except OrderOutOfScope:
                    continue
                mine.append(manual)
            found = mine
    return _json([manual_doc(m) for m in found])


@router.post(
    "/manual-payments/{manual_id}/approve",
    response_model=ManualPaymentOut,
    summary="Approve a manual payment (a second, different finance user)",
)
async def approve_manual_payment(
    request: Request,
    manual_id: int,
    principal: Annotated[Principal, Depends(require("payments.manual"))],
) -> Response:
    """Query the providers first; if the order is still unpaid, mark it paid on the evidence."""
    db = _db(request)
    async with db.transaction(write=False) as session:
        await _manual_in_scope(session, manual_id, principal)
        _, queryable = await manual_service.manual_for_decision(session, manual_id, principal.name)
    answers = await gateway.query_many(queryable)
    async with db.transaction() as session:
        manual = await manual_service.approve_manual(
            session, manual_id, principal.name, list(zip(queryable, answers, strict=True))
        )
    return _json(manual_doc(manual))


@router.post(
    "/manual-payments/{manual_id}/reject",
    response_model=ManualPaymentOut,
    summary="Reject a manual payment (a second, different finance user)",
)
async def reject_manual_payment(
    request: Request,
    manual_id: int,
    body: DecisionIn,
    principal: Annotated[Principal, Depends(require("payments.manual"))],
) -> Response:
    """Refuse the request; the order is untouched."""
    async with _db(request).transaction() as session:
        await _manual_in_scope(session, manual_id, principal)
        manual = await manual_service.reject_manual(session, manual_id, principal.name, body.note)
    return _json(manual_doc(manual))


@router.post(
    "/payments/reconciliations",
    response_model=ReconciliationOut,
    summary="Reconcile a provider's trade bill (CSV body) against ordertally",
)
async def reconcile_statement(
    request: Request,
    provider: Provider,
    principal: Annotated[Principal, Depends(require("payments.reconcile"))],
    output: Annotated[str, Query(alias="format", pattern="^(json|csv)$")] = "json",
) -> Response:
    """Send the statement file as the request body; a platform-only payment is applied once the
    platform's query confirms it, else it becomes a manual-payment request by the caller."""
    if principal.channels is not None:
        raise Forbidden("a trade bill covers every channel account: a channel-scoped key cannot")
    data = await request.body()
    statement = reconcile.parse(provider, reconcile.decode_statement(data, provider))
    report = await reconcile.run(
        _db(request),
        statement,
        file_name=request.headers.get("x-file-name", "upload"),
        sha256=hashlib.sha256(data).hexdigest(),
        run_by=principal.name,
    )
    if output == "csv":
        return Response(
            "".join(reconcile.iter_csv(report)).encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="reconcile-{provider}.csv"'},
        )
    return _json(
        {
            "id": report.reconciliation_id,
            "provider": provider,
            "rows": report.rows,
            "counts": report.counts,
            "discrepancies": report.discrepancies[:MAX_DISCREPANCIES],
            "truncated": len(report.discrepancies) > MAX_DISCREPANCIES,
        }
    )
