"""HTTP routes of the orders domain: thin, one transaction per request."""

from __future__ import annotations

import base64
import collections
import functools
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from ordertally.auth.api import authorize, require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.batching import GroupCommit
from ordertally.core.db import Database, folded_inserts
from ordertally.core.errors import InvalidRequest, OrdertallyError
from ordertally.core.http import JSON, client_ip, database, json_response
from ordertally.core.money import format_minor
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.http import run_idempotent
from ordertally.orders import closing, creation, fx, holds, service, transitions
from ordertally.orders.contact import reveal_contact
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.schemas import (
    CancelIn,
    ContactOut,
    OrderCreate,
    OrderEventOut,
    OrderOut,
    OrderPage,
    ResolveIn,
)
from ordertally.orders.snapshot import OrderSnapshot, load_snapshot
from ordertally.orders.state_machine import STATUSES, Actor, ActorKind, Event

router = APIRouter(prefix="/api/v1", tags=["orders"])
log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "ordertally_order_batch_size",
    "POST /orders requests per creation batch (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BATCH_QUEUED = Histogram(
    "ordertally_order_batch_queued_seconds",
    "POST /orders: from joining the creation queue until its batch starts",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
BATCH_SECONDS = Histogram(
    "ordertally_order_batch_seconds",
    "Creation batches: from the start of the batch until its transaction has committed",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
BATCH_ALONE = Counter(
    "ordertally_order_batch_alone_total",
    "POST /orders requests of a batch that ran on the one-order path, by why",
    ["reason"],  # unusual: replay, duplicate, shortage...; raced: stock moved; error: other
)

MAX_PAGE = 200


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


DocumentPart = Callable[[SalesOrder], tuple[str, Any]]
# Parts other domains add to every order's JSON from the order alone (fulfillment: the customer's
# "tracking_url"), registered by their register(): orders imports none of them.
DOCUMENT_PARTS: list[DocumentPart] = []


def register_document_part(part: DocumentPart) -> DocumentPart:
    """Add `(key, value)` from `part` to every order's JSON, new or stored."""
    if part not in DOCUMENT_PARTS:
        DOCUMENT_PARTS.append(part)
    return part


def order_doc(snapshot: OrderSnapshot) -> dict[str, Any]:
    """The order's JSON: amounts as decimal strings, personal data masked."""
    order, lines, holds, inventory = (
        snapshot.order,
        snapshot.lines,
        snapshot.holds,
        snapshot.inventory,
    )
    cur = order.currency
    line_docs = [
        {
            "line_no": line.line_no,
            "sku": line.sku,
            "name": line.sku_name,
            "name_en": line.sku_name_en,
            "spec": line.sku_spec,
            "barcode": line.sku_barcode,
            "quantity": line.quantity,
            "unit_price": format_minor(line.unit_price_minor, cur),
            "discount": format_minor(line.discount_minor, cur),
            "total": format_minor(line.total_minor, cur),
        }
        for line in lines
    ]
    return {
        "order_no": order.order_no,
        "channel": order.channel,
        "external_id": order.external_id,
        "status": order.status,
        "version": order.version,
        "currency": cur,
        "subtotal": format_minor(order.subtotal_minor, cur),
        "discount": format_minor(order.discount_minor, cur),
        "total": format_minor(order.total_minor, cur),
        "base_currency": order.base_currency,
        "fx_rate": order.fx_rate,
        "shipping": format_minor(order.shipping_minor or 0, cur),
        "tax": format_minor(order.tax_minor or 0, cur),
        "fee": format_minor(order.fee_minor or 0, cur),
        "base_total": (
            None
            if order.base_total_minor is None
            else format_minor(order.base_total_minor, order.base_currency)
        ),
        "customer": {"name": order.customer_name_masked, "phone": order.customer_phone_masked},
        "shipping_address": {
            "name": order.ship_name_masked,
            "phone": order.ship_phone_masked,
            "province": order.ship_province,
            "city": order.ship_city,
            "district": order.ship_district,
        },
        "lines": line_docs,
        "holds": [
            {
                "id": h.id,
                "category": h.category,
                "type": h.type,
                "blocking": h.blocking,
                "detail": h.detail,
                "created_at": _iso(h.created_at),
            }
            for h in holds
        ],
        "reservations": [
            {**r, "expires_at": _iso(r["expires_at"])} for r in inventory["reservations"]
        ],
        "shipment_plan": inventory["shipment_plan"],
        "allocation": inventory["allocation"],
        "shipments": snapshot.extra.get("shipments", []),
        "cases": snapshot.extra.get("cases", []),
        "sub_status": order.sub_status,
        "waybill_nos": order.waybill_nos.split() if order.waybill_nos else [],
        **dict(part(order) for part in DOCUMENT_PARTS),
        "payment_deadline_at": _iso(order.payment_deadline_at),
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


@dataclass(frozen=True, slots=True)
class _Create:
    """One POST /orders waiting for its batch."""

    body: OrderCreate
    actor: Actor
    scope: str
    key: str | None
    req_hash: str


@dataclass(frozen=True, slots=True)
class _Created:
    payload: bytes
    order_no: str
    channel: str


async def _create_batch(db: Database, requests: list[_Create]) -> list[_Created | None]:
    """Create a batch of orders in one transaction: keys claimed, orders written, responses
    stored, stock taken last. None for a request left to the one-order path (replays, keys in
    flight, duplicates, shortages, invalid bodies), which runs after this commits."""
    created: dict[int, _Created] = {}
    # The batch's INSERTs, its stored responses and its stock UPDATE go as one statement when
    # the fold ends (PostgreSQL): nothing in it reads them back (ADR 0055, ADR 0057).
    async with db.transaction() as session, folded_inserts(session):
        specs: list[creation.OrderSpec | None] = []
        rates = await fx.rates_at(
            session, get_settings(), clock.now(), [r.body.currency for r in requests]
        )
        for r in requests:
            try:
                specs.append(
                    creation.spec_of(r.body, r.actor, check_fingerprint=r.key is None, rates=rates)
                )
            except (OrdertallyError, ValueError, ArithmeticError):
                specs.append(None)  # create_order raises the same error in its own transaction
        valid = [(r, s) for r, s in zip(requests, specs, strict=True) if s is not None]
        batch = await creation.create_many(
            session,
            [s for _, s in valid],
            defer_unusual=True,
            keys=[(r.scope, r.key) if r.key is not None else None for r, _ in valid],
        )
        outcomes = iter(batch.outcomes)
        keys = []
        for r, spec in zip(requests, specs, strict=True):
            outcome = next(outcomes) if spec is not None else None
            if not isinstance(outcome, creation.Created):
                continue
            snapshot = outcome.snapshot()
            payload = orjson.dumps(order_doc(snapshot))
            created[id(r)] = _Created(payload, snapshot.order.order_no, snapshot.order.channel)
            if r.key is not None:
                keys.append(
                    idempotency_service.response_row(
                        r.scope, r.key, r.req_hash, 201, payload.decode()
                    )
                )
        await idempotency_service.store_many(session, keys)
        await creation.take_batch_stock(session, batch)
    return [created.get(id(r)) for r in requests]


def _classify(exc: Exception) -> str | None:
    return "raced" if isinstance(exc, creation.BatchRaced) else None


_BATCHERS: weakref.WeakKeyDictionary[Database, GroupCommit[_Create, _Created]] = (
    weakref.WeakKeyDictionary()
)


def _batcher(db: Database) -> GroupCommit[_Create, _Created] | None:
    """Group commit for POST /orders (ADR 0022): a busy process writes many orders per
    transaction (one WAL flush, one lock on each hot stock row) instead of one."""
    size = get_settings().order_batch_max
    if size <= 0:
        return None
    batcher = _BATCHERS.get(db)
    if batcher is None:
        batcher = _BATCHERS[db] = GroupCommit(
            functools.partial(_create_and_count, db),
            size,
            on_batch=BATCH_SIZE.observe,
            on_alone=lambda reason, count: BATCH_ALONE.labels(reason).inc(count),
            classify=_classify,
            on_timing=_observe_timing,
        )
    return batcher


async def _create_and_count(db: Database, requests: list[_Create]) -> list[_Created | None]:
    """`_create_batch`, its committed orders counted once per channel (not once per request:
    a metric's increment costs a lock and a write to its file in multiprocess mode)."""
    results = await _create_batch(db, requests)
    created = collections.Counter(r.channel for r in results if r is not None)
    for channel, orders in created.items():
        creation.count_created(channel, orders)
    return results


def _observe_timing(queued: list[float], ran: float) -> None:
    for seconds in queued:
        BATCH_QUEUED.observe(seconds)
    BATCH_SECONDS.observe(ran)


async def create_order(
    request: Request,
    body: OrderCreate,
    principal: Annotated[Principal, Depends(require("orders.create"))],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
    """Create an order in pending_payment; replays the stored response for a repeated key."""
    return await _create(
        request.app, request.url.path, client_ip(request), body, principal, idempotency_key
    )


async def _create(
    app: Any,
    path: str,
    ip: str | None,
    body: OrderCreate,
    principal: Principal,
    idempotency_key: str | None,
) -> Response:
    """POST /orders once its caller is authorised and its body and key are valid (both ways a
    request arrives: `CreateOrderRoute`'s plain lane and FastAPI's)."""
    actor = Actor(ActorKind.API, principal.name, ip)
    created_channel: list[str] = []

    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        snapshot, created = await creation.create_order(
            session, body, actor, check_fingerprint=idempotency_key is None
        )
        if created:
            created_channel.append(snapshot.order.channel)
        headers = {"Location": f"/api/v1/orders/{snapshot.order.order_no}"}
        return (201 if created else 200), orjson.dumps(order_doc(snapshot)), headers

    req_hash = idempotency_service.request_hash("POST", path, body)
    db: Database = app.state.db
    batcher = _batcher(db)
    if batcher is not None:
        done = await batcher.submit(
            _Create(body, actor, principal.scope, idempotency_key, req_hash)
        )
        if done is not None:
            return Response(
                done.payload,
                status_code=201,
                media_type=JSON,
                headers={"Location": f"/api/v1/orders/{done.order_no}"},
            )
    run = functools.partial(
        run_idempotent,
        db,
        scope=principal.scope,
        key=idempotency_key,
        req_hash=req_hash,
        work=work,
    )
    try:
        response = await run()
    except IntegrityError:
        # A concurrent request with the same (channel, external_id) or a clashing order
        # number won the race; the retry returns that order or draws a new number.
        created_channel.clear()
        response = await run()
    for channel in created_channel:
        creation.count_created(channel)
    return response


_KEY_MAX = 255  # the Idempotency-Key's length bounds, as `create_order` declares them


class CreateOrderRoute(APIRoute):
    """`POST /api/v1/orders`, the hottest write: a request FastAPI would take without a
    question — a JSON body (`Content-Type: application/json`) that parses and validates as
    `OrderCreate`, at most one Idempotency-Key of 1 to 255 characters — is answered by plain
    calls: the caller authorised as `require` does, then `_create`. Dependency solving, the
    per-route exception and exit-stack layers and the body's second pass through the standard
    library's JSON parser are skipped (ADR 0058). Any other request goes to FastAPI as the route
    declares it, the body replayed, so it gets the same 422, 400 or 401 problem as before.
    The caller is authorised after the body parses and before it is validated, FastAPI's order:
    a bad key with a malformed body is a 422, with a body of the wrong shape a 401."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await super().handle(scope, receive, send)
            return
        received: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        plain = _plain_request(scope, received, b"".join(chunks))
        if plain is not None:
            data, authorization, key = plain
            app = scope["app"]
            principal = await authorize(app, authorization, "orders.create")
            try:
                body = OrderCreate.model_validate(data, from_attributes=True)
            except ValidationError:
                pass
            else:
                client = scope.get("client")
                response = await _create(
                    app, scope["path"], client[0] if client else None, body, principal, key
                )
                await response(scope, receive, send)
                return

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await super().handle(scope, replay, send)


def _plain_request(
    scope: Scope, received: list[Message], raw: bytes
) -> tuple[Any, str | None, str | None] | None:
    """The parsed body, the Authorization header and the Idempotency-Key of a request the lane
    may answer, or None."""
    if received[-1]["type"] != "http.request" or not raw:
        return None
    content_type = authorization = key = None
    keys = 0
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"authorization":
            authorization = value.decode("latin-1") if authorization is None else authorization
        elif name == b"idempotency-key":
            key = value.decode("latin-1")
            keys += 1
    if (
        content_type != b"application/json"
        or keys > 1
        or (keys and not 0 < len(key or "") <= _KEY_MAX)
    ):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data, authorization, key


router.add_api_route(
    "/orders",
    create_order,
    methods=["POST"],
    status_code=201,
    response_model=OrderOut,
    summary="Create an order (idempotent with Idempotency-Key)",
    responses={200: {"description": "The order this channel already sent under external_id"}},
    route_class_override=CreateOrderRoute,
)


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        at, _, order_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return clock.as_utc(datetime.fromisoformat(at)), int(order_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not valid", field="cursor") from exc


def _encode_cursor(order: SalesOrder) -> str:
    raw = f"{clock.as_utc(order.created_at).isoformat()}|{order.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


@router.get("/orders", response_model=OrderPage, summary="List orders, newest first")
async def list_orders(
    request: Request,
    principal: Annotated[Principal, Depends(require("orders.read"))],
    status: Annotated[str | None, Query(max_length=32)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Response:
    """Filter by status, channel and creation range; page with `next_cursor`. A
    channel-scoped caller sees its channel accounts' orders only."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"{name} needs a timezone offset", field=name)
    async with database(request).transaction(write=False) as session:
        orders = await service.list_orders(
            session,
            status=status,
            channel=channel,
            created_from=created_from,
            created_to=created_to,
            after=_decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
            channels=principal.channels,
        )
    page = orders[:limit]
    return json_response(
        {
            "items": [
                {
                    "order_no": o.order_no,
                    "channel": o.channel,
                    "external_id": o.external_id,
                    "status": o.status,
                    "currency": o.currency,
                    "total": format_minor(o.total_minor, o.currency),
                    "customer_name": o.customer_name_masked,
                    "customer_phone": o.customer_phone_masked,
                    "created_at": _iso(o.created_at),
                }
                for o in page
            ],
            "next_cursor": _encode_cursor(page[-1]) if len(orders) > limit else None,
        }
    )


@router.get("/orders/{order_no}", response_model=OrderOut, summary="One order")
async def get_order(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("orders.read"))],
) -> Response:
    """The order with its lines and open holds (403 `order.out_of_scope` for a channel-scoped
    caller and another account's order)."""
    async with database(request).transaction(write=False) as session:
        order = await service.get_order_in_scope(session, order_no, principal.channels)
        doc = order_doc(await load_snapshot(session, order))
    return json_response(doc)


@router.post("/orders/{order_no}/cancel", response_model=OrderOut, summary="Cancel an unpaid order")
async def cancel_order(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("orders.cancel"))],
    body: CancelIn | None = None,
) -> Response:
    """Close a pending-payment order on an operator's request (a repeat is a no-op)."""
    reason = body.reason if body else ""
    actor = Actor(ActorKind.OPERATOR, principal.name, client_ip(request), note=reason or None)
    async with database(request).transaction(write=False) as session:
        await service.get_order_in_scope(session, order_no, principal.channels)
    # "Keep open if paid", as at the timeout: the providers are asked with no transaction open.
    await closing.refuse_if_paid(database(request), order_no)

    async def cancel(session: AsyncSession) -> dict[str, Any]:
        result = await transitions.transition(session, order_no, Event.CANCEL, actor)
        return order_doc(await load_snapshot(session, result.order))

    # The order row then the stock rows it releases: run again after a deadlock.
    return json_response(await database(request).run(cancel))


@router.get(
    "/orders/{order_no}/events",
    response_model=list[OrderEventOut],
    summary="The order's audit trail, oldest first",
)
async def order_events(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("orders.events"))],
) -> Response:
    """Every state change: from, to, event, actor, source ip, evidence, time."""
    async with database(request).transaction(write=False) as session:
        await service.get_order_in_scope(session, order_no, principal.channels)
        events: list[OrderEvent] = await service.events_of(session, order_no)
    return json_response(
        [
            {
                "version": e.version,
                "event": e.event,
                "from_status": e.from_status,
                "to_status": e.to_status,
                "actor_kind": e.actor_kind,
                "actor_id": e.actor_id,
                "source_ip": e.source_ip,
                "evidence_ref": e.evidence_ref,
                "note": e.note,
                "at": _iso(e.occurred_at),
            }
            for e in events
        ]
    )


@router.get(
    "/orders/{order_no}/contact",
    response_model=ContactOut,
    summary="Unmasked customer contact (logged)",
)
async def order_contact(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("orders.contact"))],
    reason: Annotated[str, Query(min_length=3, max_length=200)],
) -> Response:
    """Decrypt the order's personal data; every call is recorded with its reason."""
    async with database(request).transaction() as session:
        contact = await reveal_contact(
            session,
            order_no,
            actor_id=principal.name,
            role=principal.role,
            reason=reason,
            source_ip=client_ip(request),
            warehouses=principal.warehouses,
            channels=principal.channels,
        )
    return json_response(contact)


@router.post("/exceptions/{case_id}/resolve", summary="Resolve an exception case (lift a hold)")
async def resolve_exception(
    request: Request,
    case_id: int,
    body: ResolveIn,
    principal: Annotated[Principal, Depends(require("exceptions.resolve"))],
) -> Response:
    """Close an open case with a resolution; a stock-shortage hold reserves the order's stock
    again first, or stays open (409 exceptions.still_short) while the stock is short."""
    async with database(request).transaction() as session:
        if principal.channels is not None:
            found = await exceptions_service.get_case(session, case_id)
            await service.check_order_id_in_scope(session, found.order_id, principal.channels)
        case = await holds.resolve_case(session, case_id, principal.name, body.resolution)
    return json_response(
        {
            "id": case.id,
            "type": case.type,
            "status": case.status,
            "resolved_by": case.resolved_by,
            "resolution": case.resolution,
            "resolved_at": _iso(case.resolved_at),
        }
    )
