"""HTTP routes of the fulfillment domain: shipments for warehouses and ERPs and the customer's
tracking page with its QR code; the carrier's push lives in `callbacks` (no API key, a signature
instead). Thin; one transaction per call."""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.batching import GroupCommit
from ordertally.core.db import Database
from ordertally.core.errors import Forbidden, PayloadTooLarge
from ordertally.core.settings import get_settings
from ordertally.fulfillment import callbacks, metrics, service, shiplist
from ordertally.fulfillment import tracking_page as tracking
from ordertally.fulfillment.models import Shipment, ShipmentLine, TrackingEvent
from ordertally.fulfillment.ship_batch import ShipRequest, ship_many
from ordertally.orders import queries as orders_queries
from ordertally.orders.errors import OrderNotFound, OrderOutOfScope
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind

router = APIRouter(tags=["fulfillment"])
router.include_router(callbacks.router)

JSON = "application/json"
MAX_LIST_BYTES = 20_000_000


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def shipment_doc(
    s: Shipment | Any,
    lines: list[ShipmentLine] | None = None,
    events: list[TrackingEvent] | None = None,
) -> dict[str, Any]:
    """A shipment's JSON (lines and timeline when given); `s` is a Shipment or anything with
    its columns as attributes (a shipping batch's result)."""
    doc: dict[str, Any] = {
        "id": s.id,
        "order_no": s.order_no,
        "warehouse": s.warehouse_code,
        "carrier": s.company,
        "carrier_adapter": s.carrier,
        "waybill_no": s.waybill_no,
        "status": s.status,
        "confirmed_at": _iso(s.confirmed_at),
        "shipped_at": _iso(s.shipped_at),
        "delivered_at": _iso(s.delivered_at),
        "last_event_at": _iso(s.last_event_at),
        "waybill_attempts": s.waybill_attempts,
        "last_error": s.last_error or None,
    }
    if lines is not None:
        doc["lines"] = [
            {"line_no": ln.line_no, "sku": ln.sku, "quantity": ln.quantity} for ln in lines
        ]
    if events is not None:
        doc["timeline"] = [
            {
                "at": _iso(ev.occurred_at),
                "status": ev.status,
                "state_code": ev.state_code,
                "description": ev.description,
                "location": ev.location,
            }
            for ev in events
        ]
    return doc


async def order_shipments(session: AsyncSession, order: SalesOrder) -> tuple[str, Any]:
    """The shipments part of an order's JSON."""
    return "shipments", [shipment_doc(s) for s in await service.shipments_of(session, order.id)]


class ShipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    waybill_no: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9-]{4,64}$")] = None
    company: Annotated[str | None, Field(pattern=r"^[a-z0-9_]{1,32}$")] = None


async def _own_shipment(session: AsyncSession, principal: Principal, shipment_id: int) -> None:
    """Refuse a warehouse-scoped caller another warehouse's shipment, and a channel-scoped
    caller another channel account's."""
    if principal.warehouses is not None or principal.channels is not None:
        shipment = await service.get_shipment(session, shipment_id)
        if not principal.may_act_for(shipment.warehouse_code):
            raise Forbidden(f"shipment {shipment_id} belongs to another warehouse")
        order = await orders_queries.get_by_id(session, shipment.order_id)
        if order is None or not principal.may_act_for_channel(order.channel):
            raise Forbidden(f"shipment {shipment_id} belongs to another channel account")


def _warehouse(principal: Principal) -> Actor:
    return Actor(ActorKind.WAREHOUSE, principal.name)


@router.get("/api/v1/shipments")
async def list_shipments(
    request: Request,
    principal: Annotated[Principal, Depends(require("fulfillment.read"))],
    order_no: Annotated[str, Query(min_length=1, max_length=32)],
) -> Response:
    async with _db(request).transaction() as session:
        order = await orders_queries.get_by_no(session, order_no)
        if order is None:
            raise OrderNotFound(f"order {order_no} does not exist")
        if not principal.may_act_for_channel(order.channel):
            raise OrderOutOfScope(f"order {order_no} does not come from your channel accounts")
        shipments = await service.shipments_of(session, order.id)
        ids = [s.id for s in shipments]
        lines = await service.lines_by_shipment(session, ids)
        events = await service.timelines(session, ids)
        docs = [shipment_doc(s, lines[s.id], events[s.id]) for s in shipments]
    return _json({"order_no": order_no, "tracking_url": tracking.url_for(order_no), "items": docs})


@router.get("/api/v1/shipments/{shipment_id}")
async def get_shipment(
    request: Request,
    shipment_id: int,
    principal: Annotated[Principal, Depends(require("fulfillment.read"))],
) -> Response:
    async with _db(request).transaction() as session:
        s = await service.get_shipment(session, shipment_id)
        if principal.channels is not None:
            order = await orders_queries.get_by_id(session, s.order_id)
            if order is None or not principal.may_act_for_channel(order.channel):
                raise Forbidden(f"shipment {shipment_id} belongs to another channel account")
        lines = await service.lines_by_shipment(session, [s.id])
        events = await service.timelines(session, [s.id])
        return _json(shipment_doc(s, lines[s.id], events[s.id]))


@router.post("/api/v1/shipments/{shipment_id}/confirm")
async def confirm_shipment(
    request: Request,
    shipment_id: int,
    principal: Annotated[Principal, Depends(require("fulfillment.ship"))],
) -> Response:
    async def confirm(session: AsyncSession) -> Response:
        await _own_shipment(session, principal, shipment_id)
        s = await service.confirm(session, shipment_id, _warehouse(principal))
        return _json(shipment_doc(s))

    # The order row then its stock rows: run again after a deadlock with a worker batch.
    return await _db(request).run(confirm)


_SHIP_BATCHERS: weakref.WeakKeyDictionary[Database, GroupCommit[ShipRequest, Any]] = (
    weakref.WeakKeyDictionary()
)


def _ship_batcher(db: Database) -> GroupCommit[ShipRequest, Any] | None:
    """Group commit for ship requests (ADR 0050): a warehouse scanning many parcels out at once
    has them applied in a few transactions of set-based statements; a lone request waits for
    nothing, and each is answered only after its batch has committed."""
    size = get_settings().ship_batch_max
    if size <= 0:
        return None
    batcher = _SHIP_BATCHERS.get(db)
    if batcher is None:

        async def run(requests: list[ShipRequest]) -> list[Any | None]:
            return await db.run(lambda session: ship_many(session, requests))

        batcher = _SHIP_BATCHERS[db] = GroupCommit(
            run,
            size,
            on_batch=metrics.SHIP_BATCH_SIZE.observe,
            on_alone=lambda reason, count: metrics.SHIP_BATCH_ALONE.labels(reason).inc(count),
        )
    return batcher


@router.post("/api/v1/shipments/{shipment_id}/ship")
async def ship_shipment(
    request: Request,
    shipment_id: int,
    principal: Annotated[Principal, Depends(require("fulfillment.ship"))],
    body: ShipIn | None = None,
) -> Response:
    given = body or ShipIn()
    batcher = _ship_batcher(_db(request))
    if batcher is not None:
        shipped = await batcher.submit(
            ShipRequest(
                shipment_id,
                _warehouse(principal),
                waybill_no=given.waybill_no,
                company=given.company,
                warehouses=principal.warehouses,
                channels=principal.channels,
            )
        )
        if shipped is not None:
            return _json(shipment_doc(shipped))
    # Alone: the batch is off, or left this request to the one-request path (an error to
    # answer, or rare work), which then runs after the batch has committed.

    async def ship(session: AsyncSession) -> Response:
        await _own_shipment(session, principal, shipment_id)
        s, _changed = await service.ship(
            session,
            shipment_id,
            _warehouse(principal),
            waybill_no=given.waybill_no,
            company=given.company,
        )
        return _json(shipment_doc(s))

    # The order row then the stock rows it consumes: a worker batch holding one of those stock
    # rows and wanting the order's row is a deadlock PostgreSQL breaks by failing one side; the
    # request runs again rather than answering 500 (issue 21's drill).
    return await _db(request).run(ship)


@router.post("/api/v1/shipments/import")
async def import_shipped_list(
    request: Request,
    principal: Annotated[Principal, Depends(require("fulfillment.ship"))],
) -> Response:
    """A shipped list as the request body (text/csv or an XLSX file); one result per row."""
    if principal.warehouses is not None or principal.channels is not None:
        raise Forbidden("a scoped key ships parcel by parcel, not by list")
    data = await request.body()
    if len(data) > MAX_LIST_BYTES:
        raise PayloadTooLarge(f"a shipped list may not exceed {MAX_LIST_BYTES} bytes")
    rows, refused = shiplist.parse(data)
    actor = _warehouse(principal)
    results = await _db(request).run(lambda session: service.ship_rows(session, rows, actor))
    results += [
        {"line": e.line, "result": "error", "code": f"row.{e.code}", "message": e.message}
        for e in refused
    ]
    results.sort(key=lambda r: int(r["line"]))
    summary: dict[str, int] = {}
    for r in results:
        summary[r["result"]] = summary.get(r["result"], 0) + 1
    return _json({"summary": summary, "rows": results})


# --- the customer's tracking page -----------------------------------------------------------


async def _page(db: Database, token: str) -> tracking.PageData:
    order_no = tracking.order_no_of(token)
    async with db.transaction() as session:
        order = await orders_queries.get_by_no(session, order_no)
        if order is None:
            raise OrderNotFound(f"order {order_no} does not exist")
        shipments = await service.shipments_of(session, order.id)
        ids = [s.id for s in shipments]
        lines = await service.lines_by_shipment(session, ids)
        events = await service.timelines(session, ids)
        order_lines = await orders_queries.lines_of(session, order.id)
        verifying = order.status == "pending_payment" and await tracking.verifying(
            session, order.id
        )
    names = {
        ln.sku: (ln.sku_name, ln.sku_name_en or ln.sku_name) for ln in order_lines if ln.sku_name
    }
    parcels = [
        tracking.PageParcel(
            company=s.company,
            waybill_no=s.waybill_no if s.status not in ("planned",) else None,
            status=s.status,
            items=[(ln.sku, ln.quantity) for ln in lines[s.id]],
            events=[
                tracking.PageEvent(ev.occurred_at, ev.description, ev.location, ev.status)
                for ev in events[s.id]
            ],
        )
        for s in shipments
    ]
    if not shipments:
        parcels = [
            tracking.PageParcel(
                company="",
                waybill_no=None,
                status=order.status,
                items=[(ln.sku, ln.quantity) for ln in order_lines],
                events=[],
            )
        ]
    place = " ".join(p for p in (order.ship_province, order.ship_city, order.ship_district) if p)
    return tracking.PageData(
        order_no=order.order_no,
        status=order.status,
        recipient=order.ship_name_masked,
        place=place,
        parcels=parcels,
        url=tracking.url_for(order.order_no),
        qr_path=f"/t/{token}/qr.svg",
        names=names,
        verifying=verifying,
        sub_status=order.sub_status,
    )


_PAGE_HEADERS = {
    "Cache-Control": "private, max-age=60",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
}


@router.get("/t/{token}", include_in_schema=False)
async def tracking_page(
    request: Request, token: str, lang: Annotated[str | None, Query(max_length=5)] = None
) -> Response:
    page = await _page(_db(request), token)
    chosen = tracking.pick_lang(lang, request.headers.get("accept-language"))
    return Response(
        tracking.render(page, chosen),
        media_type="text/html; charset=utf-8",
        headers=_PAGE_HEADERS,
    )


@router.get("/t/{token}/qr.{kind}", include_in_schema=False)
async def tracking_qr(request: Request, token: str, kind: str) -> Response:
    order_no = tracking.order_no_of(token)
    url = tracking.url_for(order_no)
    if kind == "svg":
        return Response(tracking.qr_svg(url), media_type="image/svg+xml", headers=_PAGE_HEADERS)
    if kind == "png":
        return Response(tracking.qr_png(url), media_type="image/png", headers=_PAGE_HEADERS)
    return Response(status_code=404)
