"""The channel simulator's HTTP server (`ordertally channelsim serve`): Amazon SP-API Orders
v0 and Reports 2021-06-30 (the seller-fulfilled returns report), the Pinduoduo POP router
(orders, refunds, decrypt), the after-sale lists of Taobao (/taobao/router/rest), JD
(/jd/routerjson) and Douyin (/douyin/afterSale/List), and control endpoints under /sim (Shopify
webhooks are sent from here to the configured target; Pinduoduo orders are added with
POST /sim/pinduoduo/orders and after-sale records with POST /sim/pinduoduo/refunds, Taobao /
JD / Douyin ones with POST /sim/{platform}/aftersales, Amazon returns with POST
/sim/amazon/returns; report documents are downloaded from /sim/amazon/documents/{id})."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.simkit.app import simulator_app
from ordertally.simkit.errors import SimError


def _sim(request: Request) -> ChannelSim:
    sim: ChannelSim = request.app.state.sim
    return sim


def _amazon_error(exc: SimError) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"code": exc.code, "message": exc.message}]},
        status_code=exc.status,
        headers={"x-amzn-RateLimit-Limit": "0.0167"} if exc.status == 429 else None,
    )


amazon = APIRouter(prefix="/orders/v0", tags=["amazon"])


@amazon.get("/orders")
async def get_orders(request: Request) -> JSONResponse:
    try:
        doc = _sim(request).amazon.get_orders(
            dict(request.query_params), request.headers.get("x-amz-access-token")
        )
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc)


@amazon.get("/orders/{order_id}/orderItems")
async def get_order_items(request: Request, order_id: str) -> JSONResponse:
    try:
        doc = _sim(request).amazon.get_order_items(
            order_id, request.headers.get("x-amz-access-token")
        )
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc)


reports = APIRouter(prefix="/reports/2021-06-30", tags=["amazon"])


@reports.post("/reports")
async def create_report(request: Request) -> JSONResponse:
    try:
        body = await request.json()
        doc = _sim(request).amazon.create_report(
            body if isinstance(body, dict) else {}, request.headers.get("x-amz-access-token")
        )
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc, status_code=202)


@reports.get("/reports/{report_id}")
async def get_report(request: Request, report_id: str) -> JSONResponse:
    try:
        doc = _sim(request).amazon.get_report(report_id, request.headers.get("x-amz-access-token"))
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc)


@reports.get("/documents/{document_id}")
async def get_report_document(request: Request, document_id: str) -> JSONResponse:
    try:
        doc = _sim(request).amazon.get_report_document(
            document_id,
            request.headers.get("x-amz-access-token"),
            str(request.base_url).rstrip("/"),
        )
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc)


lwa = APIRouter(tags=["amazon"])


@lwa.post("/tokens/2021-03-01/restrictedDataToken")
async def restricted_data_token(request: Request) -> JSONResponse:
    try:
        body = await request.json()
        doc = _sim(request).amazon.restricted_data_token(
            request.headers.get("x-amz-access-token"), body if isinstance(body, dict) else {}
        )
    except SimError as exc:
        return _amazon_error(exc)
    return JSONResponse(doc)


@lwa.post("/auth/o2/token")
async def lwa_token(request: Request) -> JSONResponse:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        return JSONResponse(_sim(request).amazon.lwa_token(form))
    except SimError as exc:
        return JSONResponse(
            {"error": exc.code, "error_description": exc.message}, status_code=exc.status
        )


pdd = APIRouter(tags=["pinduoduo"])


@pdd.post("/api/router")
async def pdd_router(request: Request) -> JSONResponse:
    form = {k: str(v) for k, v in (await request.form()).items()}
    return JSONResponse(_sim(request).pdd.call(form))


@pdd.post("/decrypt-relay/api/router")
async def pdd_decrypt_relay(request: Request) -> JSONResponse:
    """A merchant's decrypt hook: a relay inside Pinduoduo's cloud that takes the same signed
    pdd.open.decrypt.batch request and answers as the platform does (only that API)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    if form.get("type") != "pdd.open.decrypt.batch":
        return JSONResponse(_sim(request).pdd.error(20031, "the relay answers decrypt only"))
    _sim(request).pdd.relay_calls += 1
    return JSONResponse(_sim(request).pdd.call(form))


lists = APIRouter(tags=["after-sale lists"])


@lists.post("/taobao/router/rest")
async def taobao_router(request: Request) -> JSONResponse:
    """TOP's gateway: taobao.refunds.receive.get, form-posted and signed."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    return JSONResponse(_sim(request).lists.taobao(form))


@lists.post("/jd/routerjson")
async def jd_router(request: Request) -> JSONResponse:
    """JOS's gateway: jingdong.pop.afs.soa.refundapply.queryPageList, form-posted and signed."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    return JSONResponse(_sim(request).lists.jd(form))


@lists.post("/douyin/afterSale/List")
async def douyin_after_sale_list(request: Request) -> JSONResponse:
    """Douyin's open platform: afterSale/List, its public parameters signed in the query."""
    query = {k: str(v) for k, v in request.query_params.items()}
    return JSONResponse(_sim(request).lists.douyin(query))


control = APIRouter(prefix="/sim", tags=["control"])


class ShopifyTarget(BaseModel):
    url: str
    secret: str


class ShopifyNew(BaseModel):
    sku: str = "TEA-LJ-250"
    quantity: int = 1
    price: str = "59.90"
    financial_status: str = "paid"
    # The buyer: the shipping address's phone and the Shopify customer id (both identify a
    # buyer to customers/; the defaults are the platform example's one buyer).
    phone: str = "+8613812345678"
    customer_id: int = 207119551
    topic: str = "orders/create"
    copies: int = 1


class ShopifySend(BaseModel):
    order_id: str
    topic: str = "orders/updated"
    copies: int = 1
    changes: dict[str, Any] = {}
    webhook_id: str | None = None


class PddRefundNew(BaseModel):
    """An after-sale record for pdd.refund.list.increment.get (a later one with the same id is
    its next version); `updated_at` ISO 8601 with an offset, default now."""

    id: int
    order_sn: str
    updated_at: str | None = None
    after_sales_type: int = 2
    after_sales_status: int = 10
    refund_amount: str = "59.90"
    sku: str = "TEA-LJ-250"
    quantity: int = 1
    reason: str = "不想要了"


class PddOrderNew(BaseModel):
    """An order awaiting shipment for pdd.order.number.list.increment.get (the same order_sn
    again is its next version); `updated_at` ISO 8601 with an offset, default now. The buyer's
    phone is sealed as the platform seals it (decrypt answers it) and shown masked."""

    order_sn: str
    updated_at: str | None = None
    sku: str = "TEA-LJ-250"
    quantity: int = 1
    price: str = "59.90"
    phone: str = "13812341234"


class AmazonReturnNew(BaseModel):
    """A returned item of a seller-fulfilled order for the returns report; `requested` ISO 8601
    with an offset, default now."""

    order_id: str
    rma: str
    requested: str | None = None
    sku: str = "TEA-LJ-250"
    quantity: int = 1
    status: str = "Approved"
    resolution: str = "StandardRefund"
    refunded: str = ""
    currency: str = "USD"


class Behaviour(BaseModel):
    amazon_throttle_next: int | None = None
    pdd_throttle_next: int | None = None
    shopify_fail_next: int | None = None
    lists_throttle_next: int | None = None


def _zoned(value: str | None, name: str) -> datetime:
    """A control request's time: ISO 8601 with an offset (ValueError saying what is wrong),
    default now."""
    if not value:
        return clock.now()
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name} is not ISO 8601") from exc
    if at.tzinfo is None:
        raise ValueError(f"{name} needs an offset")
    return at


@control.post("/shopify/target")
async def shopify_target(request: Request, target: ShopifyTarget) -> dict[str, str]:
    sim = _sim(request).shopify
    sim.target_url, sim.secret = target.url, target.secret
    return {"status": "ok"}


@control.post("/shopify/orders")
async def shopify_new(request: Request, new: ShopifyNew) -> dict[str, Any]:
    sim = _sim(request).shopify
    doc = sim.new_order(
        sku=new.sku,
        quantity=new.quantity,
        price=new.price,
        phone=new.phone,
        customer_id=new.customer_id,
        financial_status=new.financial_status,
    )
    webhook_id = sim.send(new.topic, str(doc["id"]), copies=new.copies)
    return {"order_id": str(doc["id"]), "webhook_id": webhook_id}


@control.post("/shopify/send")
async def shopify_send(request: Request, send: ShopifySend) -> dict[str, Any]:
    sim = _sim(request).shopify
    if send.changes:
        sim.update(send.order_id, **send.changes)
    webhook_id = sim.send(send.topic, send.order_id, copies=send.copies, webhook_id=send.webhook_id)
    return {"order_id": send.order_id, "webhook_id": webhook_id}


@control.post("/shopify/settle")
async def shopify_settle(request: Request) -> dict[str, Any]:
    sim = _sim(request).shopify
    await sim.settle()
    return {
        "deliveries": [
            {
                "webhook_id": d.webhook_id,
                "topic": d.topic,
                "order_id": d.order_id,
                "attempt": d.attempt,
                "status": d.status,
                "error": d.error,
            }
            for d in sim.deliveries
        ]
    }


@control.post("/pinduoduo/orders")
async def pdd_order(request: Request, new: PddOrderNew) -> dict[str, Any]:
    """Hold an order (or its next version) for the increment API."""
    try:
        updated = _zoned(new.updated_at, "updated_at")
    except ValueError as exc:
        return {"error": str(exc)}
    if len(new.phone) != 11 or not new.phone.isdigit():
        return {"error": "phone must be an 11-digit mainland mobile"}
    sim = _sim(request).pdd
    sim.add(
        new.order_sn,
        updated,
        sku=new.sku,
        quantity=new.quantity,
        price=new.price,
        phone=f"{new.phone[:3]}****{new.phone[-4:]}",
        receiver_phone=new.phone,
    )
    return {"order_sn": new.order_sn, "orders": len(sim.orders)}


@control.post("/pinduoduo/refunds")
async def pdd_refund(request: Request, new: PddRefundNew) -> dict[str, Any]:
    """Hold an after-sale record (or its next version) for the refund list API."""
    try:
        updated = _zoned(new.updated_at, "updated_at")
    except ValueError as exc:
        return {"error": str(exc)}
    _sim(request).pdd.add_refund(
        new.id,
        new.order_sn,
        updated,
        after_sales_type=new.after_sales_type,
        after_sales_status=new.after_sales_status,
        refund_amount=new.refund_amount,
        sku=new.sku,
        quantity=new.quantity,
        reason=new.reason,
    )
    return {"id": new.id, "refunds": len(_sim(request).pdd.refunds)}


class ListedRecord(BaseModel):
    item: dict[str, Any]
    at: str | None = None  # ISO 8601 with an offset; default now


@control.post("/{platform}/aftersales")
async def hold_listed(request: Request, platform: str, new: ListedRecord) -> dict[str, Any]:
    """Hold a Taobao / JD / Douyin after-sale record (or its next version: same id) for the
    platform's list API, as the record it serves; the time the list filters on is stamped."""
    try:
        at = datetime.fromisoformat(new.at) if new.at else None
    except ValueError:
        return {"error": "at is not ISO 8601"}
    try:
        key = _sim(request).lists.hold(platform, new.item, at)
    except (KeyError, TypeError, ValueError) as exc:
        return {"error": f"not a {platform} after-sale record: {exc!r}"}
    return {"id": key, "held": len(_sim(request).lists.held.get(platform, {}))}


@control.post("/amazon/returns")
async def amazon_return(request: Request, new: AmazonReturnNew) -> dict[str, Any]:
    """Hold a returned item for the returns report."""
    try:
        requested = _zoned(new.requested, "requested")
    except ValueError as exc:
        return {"error": str(exc)}
    sim = _sim(request).amazon
    sim.add_return(
        new.order_id,
        new.rma,
        requested,
        sku=new.sku,
        quantity=new.quantity,
        status=new.status,
        resolution=new.resolution,
        refunded=new.refunded,
        currency=new.currency,
    )
    return {"rma": new.rma, "returns": len(sim.returns)}


@control.get("/amazon/documents/{document_id}")
async def amazon_document(request: Request, document_id: str) -> Response:
    """A report document's content (where getReportDocument's `url` points)."""
    text = _sim(request).amazon.documents.get(document_id)
    if text is None:
        return Response("NoSuchKey", status_code=404, media_type="text/plain")
    return Response(text.encode(), media_type="text/plain; charset=UTF-8")


@control.post("/behaviour")
async def behaviour(request: Request, patch: Behaviour) -> dict[str, int]:
    sim = _sim(request)
    if patch.amazon_throttle_next is not None:
        sim.amazon.throttle.fail_next(patch.amazon_throttle_next)
    if patch.pdd_throttle_next is not None:
        sim.pdd.throttle.fail_next(patch.pdd_throttle_next)
    if patch.shopify_fail_next is not None:
        sim.shopify.failures.fail_next(patch.shopify_fail_next)
    if patch.lists_throttle_next is not None:
        sim.lists.throttle.fail_next(patch.lists_throttle_next)
    return {
        "amazon_throttle_next": sim.amazon.throttle.remaining,
        "pdd_throttle_next": sim.pdd.throttle.remaining,
        "shopify_fail_next": sim.shopify.failures.remaining,
        "lists_throttle_next": sim.lists.throttle.remaining,
    }


@control.get("/status")
async def status(request: Request) -> dict[str, Any]:
    sim = _sim(request)
    return {
        "shopify_orders": len(sim.shopify.orders),
        "shopify_deliveries": len(sim.shopify.deliveries),
        "amazon_orders": len(sim.amazon.orders),
        "amazon_requests": len(sim.amazon.requests),
        "amazon_returns": len(sim.amazon.returns),
        "pdd_orders": len(sim.pdd.orders),
        "pdd_requests": len(sim.pdd.requests),
        "pdd_refunds": len(sim.pdd.refunds),
    }


@control.post("/amazon/expire-tokens")
async def amazon_expire_tokens(request: Request) -> dict[str, int]:
    """Every LWA access token issued so far expires now."""
    sim = _sim(request).amazon
    sim.expire_tokens()
    return {"expired": len(sim.issued)}


@control.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    _sim(request).reset()
    return {"status": "reset"}


def create_channel_sim_app(*, time_scale: float = 1000.0) -> FastAPI:
    """The simulator as an ASGI app; `time_scale` divides Shopify's retry schedule."""
    sim = ChannelSim()
    sim.shopify.time_scale = time_scale

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for task in list(sim.shopify.tasks):
            task.cancel()

    return simulator_app(
        sim,
        [amazon, reports, lwa, pdd, lists, control],
        title="ordertally channel simulator",
        description="Shopify webhooks, Amazon SP-API Orders v0 and Pinduoduo increment, played "
        "locally with test credentials.",
        lifespan=lifespan,
    )
