"""HTTP routes of after-sales: cases (customer service), refunds (customer service, finance
above the threshold), returned parcels and inspection (warehouse), receipt confirmation,
refund totals (finance). Thin; one transaction per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import goods, lifecycle, platforms, refunds, service
from ordertally.aftersales.errors import ReportRefused
from ordertally.aftersales.models import AftersaleCase, AftersaleRefund, ReturnParcel
from ordertally.aftersales.schemas import (
    CaseCreate,
    Decision,
    Inspection,
    ParcelIn,
    PlatformRefundIn,
    ReturnWaybill,
)
from ordertally.aftersales.state_machine import CASE_STATUSES, CASE_TYPES, as_rows
from ordertally.auth.api import require
from ordertally.auth.service import PERMISSIONS, Principal
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.errors import Forbidden, InvalidRequest
from ordertally.core.inputs import Amount
from ordertally.core.money import format_minor
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.http import replay_response
from ordertally.orders import service as orders_service

router = APIRouter(prefix="/api/v1", tags=["aftersales"])
JSON = "application/json"
CaseNo = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount | None = None  # default: what the case still has to refund


class ReceiptConfirmation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Literal["platform", "buyer"]
    evidence_ref: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


async def _own_case(request: Request, principal: Principal, case_no: str) -> None:
    """Refuse a channel-scoped caller a case of another channel account (403, as for its
    orders)."""
    if principal.channels is None:
        return
    async with _db(request).transaction(write=False) as session:
        case = await service.get_case(session, case_no)
    if not principal.may_act_for_channel(case.channel):
        raise Forbidden(f"after-sales case {case_no} belongs to another channel account")


async def _own_order(request: Request, principal: Principal, order_no: str) -> None:
    """Refuse a channel-scoped caller another channel account's order."""
    if principal.channels is None:
        return
    async with _db(request).transaction(write=False) as session:
        await orders_service.get_order_in_scope(session, order_no, principal.channels)


def case_doc(case: AftersaleCase) -> dict[str, Any]:
    """A case's JSON (amounts as decimal strings in the order's currency)."""
    cur = case.currency
    return {
        "case_no": case.case_no,
        "order_no": case.order_no,
        "channel": case.channel,
        "platform_refund_id": case.platform_refund_id,
        "type": case.type,
        "status": case.status,
        "version": case.version,
        "reason_code": case.reason_code,
        "responsibility": case.responsibility,
        "goods_status": case.goods_status,
        "evidence": case.evidence,
        "currency": cur,
        "refund": {
            "goods": format_minor(case.refund_goods_minor, cur),
            "postage": format_minor(case.refund_postage_minor, cur),
            "other": format_minor(case.refund_other_minor, cur),
            "total": format_minor(case.refund_minor, cur),
        },
        "return_waybill": (
            {"carrier": case.return_carrier, "waybill_no": case.return_waybill_no}
            if case.return_waybill_no
            else None
        ),
        "created_by": case.created_by,
        "created_at": _iso(case.created_at),
        "updated_at": _iso(case.updated_at),
    }


def refund_doc(r: AftersaleRefund) -> dict[str, Any]:
    """A refund's JSON."""
    return {
        "id": r.id,
        "order_no": r.order_no,
        "source": r.source,
        "provider": r.provider,
        "out_refund_no": r.out_refund_no,
        "provider_refund_id": r.provider_refund_id,
        "amount": format_minor(r.amount_minor, r.currency),
        "currency": r.currency,
        "state": r.state,
        "attempts": r.attempts,
        "last_error": r.last_error,
        "created_at": _iso(r.created_at),
        "confirmed_at": _iso(r.confirmed_at),
    }


def parcel_doc(p: ReturnParcel) -> dict[str, Any]:
    """A returned parcel's JSON."""
    return {
        "id": p.id,
        "warehouse": p.warehouse_code,
        "carrier": p.carrier,
        "waybill_no": p.waybill_no,
        "matched": p.case_id is not None,
        "received_at": _iso(p.received_at),
        "matched_at": _iso(p.matched_at),
    }


def view_doc(
    found: service.CaseView, case_refunds: list[AftersaleRefund], *, reveal: bool
) -> dict[str, Any]:
    """A case's JSON with its lines (asked, received, restocked, written off), audit trail and
    refunds (the API's and the command line's); the buyer's message in clear only when
    `reveal` (the roles that manage cases), masked otherwise."""
    doc = case_doc(found.case)
    doc["buyer_message"] = service.buyer_message(found.case, reveal=reveal)
    doc["lines"] = [
        {
            "line_no": line.line_no,
            "sku": line.sku,
            # the product as the order line sold it (its snapshot), Chinese and English
            "name": found.names[line.line_no].name if line.line_no in found.names else None,
            "name_en": found.names[line.line_no].name_en if line.line_no in found.names else None,
            "quantity": line.quantity,
            "received": line.received_quantity,
            "restocked": line.restocked_quantity,
            "written_off": line.written_off_quantity,
        }
        for line in found.lines
    ]
    doc["events"] = [
        {
            "version": e.version,
            "event": e.event,
            "from": e.from_status,
            "to": e.to_status,
            "actor": e.actor,
            "detail": e.detail,
            "at": _iso(e.occurred_at),
        }
        for e in found.events
    ]
    doc["refunds"] = [refund_doc(r) for r in case_refunds]
    return doc


@router.get("/aftersales/states", summary="The after-sales case state table")
async def case_states(_: Annotated[Principal, Depends(require("aftersales.read"))]) -> Response:
    """Every allowed change of a case, as data."""
    return _json({"items": as_rows()})


@router.post("/aftersales", status_code=201, summary="Open an after-sales case (售后单)")
async def open_case(
    request: Request,
    body: CaseCreate,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
    """Open a case on an order (201); a platform refund id already opened answers 200 with that
    case. An Idempotency-Key replays the stored response."""
    await _own_order(request, principal, body.order_no)
    req_hash = idempotency_service.request_hash(
        "POST", request.url.path, body.model_dump_json().encode()
    )
    async with _db(request).transaction() as session:
        if idempotency_key is not None:
            replay = await idempotency_service.check(
                session, principal.scope, idempotency_key, req_hash
            )
            if replay is not None:
                return replay_response(replay)
        case, created = await service.open_case(session, body, principal.name)
        status = 201 if created else 200
        payload = orjson.dumps(case_doc(case))
        if idempotency_key is not None:
            await idempotency_service.store(
                session, principal.scope, idempotency_key, req_hash, status, payload.decode()
            )
    return Response(
        payload,
        status_code=status,
        media_type=JSON,
        headers={"Location": f"/api/v1/aftersales/{case.case_no}"},
    )


@router.get("/aftersales", summary="After-sales cases")
async def list_cases(
    request: Request,
    principal: Annotated[Principal, Depends(require("aftersales.read"))],
    status: Annotated[str | None, Query(max_length=16)] = None,
    type: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Newest first, optionally of one status and type."""
    if status is not None and status not in CASE_STATUSES:
        raise InvalidRequest(f"unknown status {status!r}", field="status")
    if type is not None and type not in CASE_TYPES:
        raise InvalidRequest(f"unknown type {type!r}", field="type")
    async with _db(request).transaction(write=False) as session:
        cases = await service.list_cases(session, status, type, limit)
    # A channel-scoped caller sees its channel accounts' cases only.
    return _json(
        {"items": [case_doc(c) for c in cases if principal.may_act_for_channel(c.channel)]}
    )


@router.get("/aftersales/{case_no}", summary="An after-sales case with lines, trail, refunds")
async def get_case(
    request: Request,
    case_no: CaseNo,
    principal: Annotated[Principal, Depends(require("aftersales.read"))],
) -> Response:
    """A case, its lines (asked, received, restocked, written off), audit trail and refunds."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction(write=False) as session:
        found = await service.view(session, case_no)
        case_refunds = await refunds.refunds_of(session, found.case)
    reveal = principal.role in PERMISSIONS["aftersales.manage"]
    return _json(view_doc(found, case_refunds, reveal=reveal))


@router.post("/aftersales/{case_no}/approve", summary="Approve a case")
async def approve(
    request: Request,
    case_no: CaseNo,
    body: Decision,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Approve (a case whose goods come back then waits for them)."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await service.approve(
            session,
            case_no,
            principal.name,
            responsibility=body.responsibility.value if body.responsibility else None,
            note=body.note,
        )
    return _json(case_doc(case))


@router.post("/aftersales/{case_no}/reject", summary="Reject a case")
async def reject(
    request: Request,
    case_no: CaseNo,
    body: Decision,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Reject a requested case."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await service.reject(session, case_no, principal.name, note=body.note)
    return _json(case_doc(case))


@router.put("/aftersales/{case_no}/return-waybill", summary="The waybill the goods come back under")
async def return_waybill(
    request: Request,
    case_no: CaseNo,
    body: ReturnWaybill,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Record the return waybill of a case waiting for its goods."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await service.set_return_waybill(
            session, case_no, body.carrier, body.waybill_no, principal.name
        )
    return _json(case_doc(case))


@router.post("/aftersales/{case_no}/refunds", status_code=202, summary="Refund a case")
async def refund(
    request: Request,
    case_no: CaseNo,
    body: RefundIn,
    principal: Annotated[Principal, Depends(require("aftersales.refund"))],
) -> Response:
    """Ask for the case's refund through the order's payment provider (202: the refund job
    sends it; notification or query confirms it)."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await service.get_case(session, case_no)
        amount = refunds.parse_amount(body.amount, case.currency) if body.amount else None
        made = await refunds.request_refund(
            session, case_no, principal.name, role=principal.role, amount_minor=amount
        )
    return _json(refund_doc(made), 202)


@router.post(
    "/aftersales/{case_no}/platform-refunds", summary="Record the platform's refund of a case"
)
async def platform_refund(
    request: Request,
    case_no: CaseNo,
    body: PlatformRefundIn,
    principal: Annotated[Principal, Depends(require("aftersales.refund"))],
) -> Response:
    """A platform order's refund, made by the platform (201 when new, 200 when recorded)."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await service.get_case(session, case_no)
        made, created = await refunds.record_platform_refund(
            session,
            case_no,
            body.platform_refund_id,
            refunds.parse_amount(body.amount, case.currency),
            principal.name,
        )
    return _json(refund_doc(made), 201 if created else 200)


async def _step(
    request: Request,
    principal: Principal,
    case_no: str,
    step: Callable[[AsyncSession, str, str], Awaitable[AftersaleCase]],
) -> Response:
    """One step of the case table that takes no body, in its own transaction: the case after."""
    await _own_case(request, principal, case_no)
    async with _db(request).transaction() as session:
        case = await step(session, case_no, principal.name)
    return _json(case_doc(case))


@router.post("/aftersales/{case_no}/reship", summary="Send an approved reship case's goods again")
async def reship(
    request: Request,
    case_no: CaseNo,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Reserve the case's lines again and plan their replacement shipment (补发); 409
    `aftersales.waiting_for_stock` while the stock is not there."""
    return await _step(request, principal, case_no, service.reship)


@router.post("/aftersales/{case_no}/exchange", summary="Send an inspected exchange's replacement")
async def exchange(
    request: Request,
    case_no: CaseNo,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Reserve the returned units again and plan their replacement shipment (换货); 409
    `aftersales.waiting_for_stock` while the stock is not there."""
    return await _step(request, principal, case_no, service.exchange)


@router.post(
    "/aftersales/{case_no}/withdraw", summary="Close a case the buyer took back (撤销申请)"
)
async def withdraw(
    request: Request,
    case_no: CaseNo,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Close a requested, approved or awaiting-return case before any money or goods moved."""
    return await _step(request, principal, case_no, service.withdraw)


@router.post("/aftersales/{case_no}/close", summary="Close a finished case")
async def close(
    request: Request,
    case_no: CaseNo,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Close a refunded, reshipped, exchanged or inspected case."""
    return await _step(request, principal, case_no, service.close)


@router.post(
    "/aftersales/platform-files/amazon-returns",
    summary="Import an Amazon returns report (GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE)",
)
async def import_amazon_returns(
    request: Request,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
    account: Annotated[str, Query(min_length=1, max_length=32)],
) -> Response:
    """The request body is the report as Amazon serves it (tab-separated, header row first).
    Each decided return becomes a case once per Amazon RMA ID (a report sent again changes
    nothing); a file that is not such a report answers 400 `aftersales.report_refused` and
    stores nothing."""
    report = platforms.read_amazon_returns(await request.body())
    async with _db(request).transaction() as session:
        result = await platforms.import_amazon_returns(
            session, account, report, f"{principal.name}:upload"
        )
    return _json(platforms.amazon_import_doc(report, result))


@router.post(
    "/aftersales/platform-files/after-sale-list",
    summary="Import a Douyin, JD or Taobao after-sale list answer",
)
async def import_after_sale_list(
    request: Request,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
    account: Annotated[str, Query(min_length=1, max_length=32)],
) -> Response:
    """The request body is one answer of the account's platform's after-sale list API, as it
    served it (Douyin `afterSale/List`, JD `jingdong.pop.afs.soa.refundapply.queryPageList`,
    Taobao `taobao.refunds.receive.get`). Each record's stage (agreed, refunded, closed) is
    applied once per refund id (a later stage moves the case the first opened); a body that is
    not such an answer answers 400 `aftersales.report_refused` and stores nothing."""
    try:
        doc = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ReportRefused(f"not a JSON after-sale list answer: {exc}") from exc
    async with _db(request).transaction() as session:
        page, result = await platforms.import_listed(
            session, account, doc, f"{principal.name}:upload"
        )
    return _json(platforms.listed_doc(page, result))


@router.post("/aftersales/parcels", status_code=201, summary="A returned parcel arrived")
async def receive_parcel(
    request: Request,
    body: ParcelIn,
    principal: Annotated[Principal, Depends(require("aftersales.receive"))],
) -> Response:
    """Record a parcel that came back; matched to its case (case number or return waybill)
    or kept unmatched (无主件)."""
    if not principal.may_act_for(body.warehouse):
        raise InvalidRequest(f"this key may not act for {body.warehouse}", field="warehouse")
    async with _db(request).transaction() as session:
        got = await goods.receive_parcel(session, body, principal.name)
    doc = parcel_doc(got.parcel)
    doc["case"] = case_doc(got.case) if got.case else None
    return _json(doc, 201)


@router.get("/aftersales/parcels/unmatched", summary="Returned parcels without a case (无主件)")
async def unmatched_parcels(
    request: Request,
    _: Annotated[Principal, Depends(require("aftersales.read"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Oldest first."""
    async with _db(request).transaction(write=False) as session:
        parcels = await goods.unmatched(session, limit)
    return _json({"items": [parcel_doc(p) for p in parcels]})


class MatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_no: CaseNo


@router.post("/aftersales/parcels/{parcel_id}/match", summary="Match a returned parcel to a case")
async def match_parcel(
    request: Request,
    parcel_id: int,
    body: MatchIn,
    principal: Annotated[Principal, Depends(require("aftersales.receive"))],
) -> Response:
    """Tie an unmatched parcel to its case (the case counts as returned)."""
    await _own_case(request, principal, body.case_no)
    async with _db(request).transaction() as session:
        got = await goods.match_parcel(session, parcel_id, body.case_no, principal.name)
    doc = parcel_doc(got.parcel)
    doc["case"] = case_doc(got.case) if got.case else None
    return _json(doc)


@router.post("/aftersales/{case_no}/inspection", summary="Inspect a returned case per line")
async def inspect(
    request: Request,
    case_no: CaseNo,
    body: Inspection,
    principal: Annotated[Principal, Depends(require("aftersales.receive"))],
) -> Response:
    """Good units back to sellable stock, damaged ones written off with a reason."""
    await _own_case(request, principal, case_no)
    if not principal.may_act_for(body.warehouse):
        raise InvalidRequest(f"this key may not act for {body.warehouse}", field="warehouse")
    async with _db(request).transaction() as session:
        case = await goods.inspect(session, case_no, body, principal.name)
    return _json(case_doc(case))


@router.post(
    "/aftersales/orders/{order_no}/confirm-receipt",
    summary="The platform or buyer confirmed receipt",
)
async def confirm_receipt(
    request: Request,
    order_no: Annotated[str, StringConstraints(min_length=1, max_length=32)],
    body: ReceiptConfirmation,
    principal: Annotated[Principal, Depends(require("aftersales.manage"))],
) -> Response:
    """Complete a delivered order before its window ends (the platform's confirmation needs
    its record as evidence)."""
    await _own_order(request, principal, order_no)
    async with _db(request).transaction() as session:
        order = await lifecycle.confirm_receipt(
            session,
            order_no,
            by=body.by,
            actor_id=principal.name,
            evidence_ref=body.evidence_ref,
        )
    return _json({"order_no": order.order_no, "status": order.status})


@router.get("/aftersales/refunds/daily", summary="Refunded amounts per day (finance)")
async def refunds_daily(
    request: Request,
    _: Annotated[Principal, Depends(require("payments.read"))],
    start: Annotated[date, Query()],
    end: Annotated[date, Query()],
) -> Response:
    """Confirmed refunds per UTC day and currency in [start, end]: the sum of refund records."""
    if end < start or (end - start).days > 366:
        raise InvalidRequest("end must be within a year after start", field="end")
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    async with _db(request).transaction(write=False) as session:
        days = await refunds.refunded_per_day(session, begin, stop)
    return _json(
        {
            "items": [
                {
                    "day": d.day.isoformat(),
                    "currency": d.currency,
                    "refunds": d.refunds,
                    "amount": format_minor(d.amount_minor, d.currency),
                }
                for d in days
            ]
        }
    )


@router.get("/aftersales/orders/{order_no}/money", summary="An order's paid and refunded amounts")
async def order_money(
    request: Request,
    order_no: Annotated[str, StringConstraints(min_length=1, max_length=32)],
    _: Annotated[Principal, Depends(require("payments.read"))],
) -> Response:
    """What the order paid, what its refunds have committed and what is confirmed refunded
    (equal to the sum of its refund records)."""
    async with _db(request).transaction(write=False) as session:
        money = await refunds.order_money_of(session, order_no)
    if money is None:
        return _json({"order_no": order_no, "refunds": None})
    cur = money.pop("currency")
    return _json(
        {
            "order_no": order_no,
            "currency": cur,
            **{k.removesuffix("_minor"): format_minor(int(v), str(cur)) for k, v in money.items()},
        }
    )
