"""Order use cases: idempotent creation, the one transition function, reads and the timeout.

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, ids, money, phones
from ordertally.core.crypto import PiiCipher, get_cipher
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.orders import repository
from ordertally.orders.errors import (
    ActorNotAllowed,
    ContactNotAllowed,
    EvidenceRequired,
    IllegalTransition,
    InvalidOrder,
    OrderNotFound,
    OrderOnHold,
    SuspectedDuplicate,
    TransitionConflict,
)
from ordertally.orders.events import OrderCreated, OrderStatusChanged
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import CREATION, ActorKind, Status, Transition, find

ORDERS_CREATED = Counter("ordertally_orders_created_total", "Orders created", ["channel"])
TRANSITIONS_TOTAL = Counter(
    "ordertally_order_transitions_total", "Order status changes", ["from", "to"]
)

PII_NAME = "sales_order.customer_name"
PII_PHONE = "sales_order.customer_phone"
PII_ADDRESS = "sales_order.shipping_address"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who triggers a change, from where, on what evidence."""

    kind: ActorKind
    id: str
    source_ip: str | None = None
    evidence_ref: str | None = None
    note: str | None = None


@dataclass(slots=True)
class OrderSnapshot:
    """An order with everything its JSON shows."""

    order: SalesOrder
    lines: list[OrderLine]
    holds: list[ExceptionCase]
    inventory: dict[str, Any]
    # Parts other domains add to a stored order's JSON (fulfillment: "shipments").
    extra: dict[str, Any] = field(default_factory=dict)


SnapshotPart = Callable[[AsyncSession, SalesOrder], Awaitable[tuple[str, Any]]]
SNAPSHOT_PARTS: list[SnapshotPart] = []


def register_snapshot_part(part: SnapshotPart) -> SnapshotPart:
    """Add `(key, value)` from `part` to every stored order's snapshot."""
    if part not in SNAPSHOT_PARTS:
        SNAPSHOT_PARTS.append(part)
    return part


@dataclass(frozen=True, slots=True)
class TransitionResult:
    order: SalesOrder
    applied: bool  # False: the order was already where this transition leads (a duplicate)


def mask_name(name: str) -> str:
    """Keep the first character of each word: 张三 -> 张*, Alice Smith -> A**** S****."""
    return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.split(" ") if part) or "*"


def _fingerprint(cmd: OrderCreate, phone_bidx: str, total_minor: int) -> str:
    lines = sorted((line.sku, line.quantity, line.unit_price) for line in cmd.lines)
    raw = orjson.dumps([cmd.channel, phone_bidx, cmd.currency, total_minor, lines])
    return hashlib.sha256(raw).hexdigest()


def _fx_rate(settings: Settings, currency: str) -> Decimal:
    if currency == settings.base_currency:
        return Decimal(1)
    rate = settings.fx_rates.get(currency)
    if rate is None or rate <= 0:
        raise money.FxRateUnavailable(
            f"no {currency}->{settings.base_currency} rate is configured", currency=currency
        )
    return money.quantize_rate(rate)


@dataclass(slots=True)
class _Built:
    """A new order's row and its lines' rows (without ids), computed before any statement."""

    values: dict[str, Any]
    lines: list[dict[str, Any]]


def _build(
    cmd: OrderCreate,
    actor: Actor,
    target: Status,
    settings: Settings,
    cipher: PiiCipher,
    now: datetime,
) -> _Built:
    """Amounts, personal data (encrypted, masked, blind-indexed) and the fingerprint of a new
    order; raises the order's validation errors."""
    currency = money.check_currency(cmd.currency)
    gross = [money.to_minor(line.unit_price, currency) * line.quantity for line in cmd.lines]
    subtotal = sum(gross)
    discount = money.to_minor(cmd.discount, currency)
    if discount > subtotal:
        raise InvalidOrder("discount exceeds the order's subtotal", field="discount")
    line_discounts = money.split_by_largest_remainder(discount, gross)
    total = subtotal - discount
    fx_rate = _fx_rate(settings, currency)

    phone = phones.normalise(cmd.customer.phone)
    ship_phone = phones.normalise(cmd.shipping_address.phone)
    phone_bidx = cipher.blind_index(phone, "phone")
    address = cmd.shipping_address
    address_doc = orjson.dumps(
        {
            "name": address.name,
            "phone": ship_phone,
            "province": address.province,
            "city": address.city,
            "district": address.district,
            "line1": address.line1,
            "postal_code": address.postal_code,
        }
    ).decode()
    values: dict[str, Any] = {
        "order_no": ids.order_no(now),
        "channel": cmd.channel,
        "external_id": cmd.external_id,
        "status": target.value,
        "version": 1,
        "currency": currency,
        "subtotal_minor": subtotal,
        "discount_minor": discount,
        "total_minor": total,
        "base_currency": settings.base_currency,
        "fx_rate": str(fx_rate),
        "customer_name_enc": cipher.encrypt(cmd.customer.name, PII_NAME),
        "customer_name_masked": mask_name(cmd.customer.name),
        "customer_phone_enc": cipher.encrypt(phone, PII_PHONE),
        "customer_phone_bidx": phone_bidx,
        "customer_phone_masked": phones.mask(phone),
        "customer_phone_last4": phones.last4(phone),
        "shipping_address_enc": cipher.encrypt(address_doc, PII_ADDRESS),
        "ship_name_masked": mask_name(address.name),
        "ship_phone_masked": phones.mask(ship_phone),
        "ship_province": address.province,
        "ship_city": address.city,
        "ship_district": address.district,
        "fingerprint": _fingerprint(cmd, phone_bidx, total),
        "created_by": actor.id,
        "waybill_nos": "",
        "payment_deadline_at": (
            now + timedelta(seconds=settings.payment_timeout_seconds)
            if target is Status.PENDING_PAYMENT
            else None
        ),
        "created_at": now,
        "updated_at": now,
    }
    lines = [
        {
            "line_no": n,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price_minor": gross[n - 1] // line.quantity,
            "discount_minor": line_discounts[n - 1],
            "total_minor": gross[n - 1] - line_discounts[n - 1],
        }
        for n, line in enumerate(cmd.lines, start=1)
    ]
    return _Built(values, lines)


def _created_event(order_id: int, values: dict[str, Any], line_count: int) -> dict[str, Any]:
    """The outbox row announcing a new order."""
    return outbox.build_row(
        "OrderCreated",
        OrderCreated(
            order_id=order_id,
            order_no=values["order_no"],
            channel=values["channel"],
            external_id=values["external_id"],
            status=values["status"],
            currency=values["currency"],
            total_minor=values["total_minor"],
            base_currency=values["base_currency"],
            fx_rate=values["fx_rate"],
            line_count=line_count,
            created_at=values["created_at"],
        ),
        aggregate_type="order",
        aggregate_id=values["order_no"],
    )


async def create_order(
    session: AsyncSession,
    cmd: OrderCreate,
    actor: Actor,
    *,
    check_fingerprint: bool,
    initial: str = "create",
    hold_on_shortage: bool = False,
) -> tuple[OrderSnapshot, bool]:
    """Create an order (or return the one this channel already sent); True when created.

    A stock shortage refuses the order unless the merchant's policy (or `hold_on_shortage`, for
    orders a platform already took from the buyer) creates it on hold instead.
    """
    settings = get_settings()
    if cmd.external_id is not None:
        existing = await repository.get_by_external(session, cmd.channel, cmd.external_id)
        if existing is not None:
            return await load_snapshot(session, existing), False
    target, creators = CREATION[initial]
    if actor.kind not in creators:
        raise ActorNotAllowed(f"{actor.kind} may not {initial} orders")

    cipher = get_cipher()
    now = clock.now()
    built = _build(cmd, actor, target, settings, cipher, now)
    values = built.values
    fingerprint = values["fingerprint"]

    duplicate_of: SalesOrder | None = None
    if check_fingerprint and settings.duplicate_window_seconds > 0:
        since = now - timedelta(seconds=settings.duplicate_window_seconds)
        duplicate_of = await repository.find_recent_by_fingerprint(session, fingerprint, since)
        if duplicate_of is not None and settings.duplicate_policy == "reject":
            raise SuspectedDuplicate(
                f"order {duplicate_of.order_no} has the same customer, lines and amount",
                duplicate_of=duplicate_of.order_no,
            )

    order_id = await repository.insert_order(session, values)
    line_rows = [{"order_id": order_id, **row} for row in built.lines]
    line_ids = await repository.insert_lines(session, line_rows)
    lines = [OrderLine(id=i, **row) for i, row in zip(line_ids, line_rows, strict=True)]
    holds: list[ExceptionCase] = []
    reserved = await _reserve_new_order(
        session,
        order_id,
        [inventory_service.LineDemand(ln.id, ln.line_no, ln.sku, ln.quantity) for ln in lines],
        values["ship_province"],
        values["payment_deadline_at"],
        committed=target is Status.PAID,
        holds=holds,
        hold=hold_on_shortage or settings.stock_shortage_policy == "hold",
    )
    await _audit(session, order_id, 1, initial, None, target.value, actor, now)
    await outbox.publish_rows(session, [_created_event(order_id, values, len(cmd.lines))])
    if duplicate_of is not None:
        holds.append(
            await exceptions_service.open_case_record(
                session,
                order_id=order_id,
                category="order",
                type="suspected_duplicate",
                blocking=True,
                detail={
                    "duplicate_of": duplicate_of.order_no,
                    "window_seconds": settings.duplicate_window_seconds,
                },
            )
        )
    order = SalesOrder(id=order_id, **values)
    inventory = inventory_service.view_of_new(reserved, {ln.id: ln.line_no for ln in lines})
    return OrderSnapshot(order, lines, holds, inventory), True


@dataclass(frozen=True, slots=True)
class NewOrder:
    """One request of a batch of order creations."""

    cmd: OrderCreate
    actor: Actor
    check_fingerprint: bool


@dataclass(slots=True)
class CreatedBatch:
    """What `create_orders` wrote: a snapshot per request (None: left to `create_order`) and
    the stock the batch still has to take (`take_batch_stock`, last before COMMIT)."""

    snapshots: list[OrderSnapshot | None]
    stock: dict[int, int]


class BatchRaced(Exception):
    """A stock row no longer had the units a batch planned; its transaction must roll back."""


async def create_orders(session: AsyncSession, items: list[NewOrder]) -> CreatedBatch:
    """Create many new orders in one transaction with a fixed number of statements: one read
    each for known external ids, recent fingerprints and availability, then multi-row INSERTs
    of orders, lines, audit rows, events, reservations and allocations.

    Only the plain case is done here: a request whose channel already sent its external id,
    that may duplicate a recent order, that is invalid or short of stock, or that repeats an
    earlier request of the batch gets None, and the caller runs `create_order` for it after
    this transaction commits, which answers exactly as it always does. The caller then calls
    `take_batch_stock` last before COMMIT.
    """
    settings = get_settings()
    cipher = get_cipher()
    now = clock.now()
    target, creators = CREATION["create"]
    built: list[_Built | None] = []
    for item in items:
        try:
            if item.actor.kind not in creators:
                raise ActorNotAllowed(f"{item.actor.kind} may not create orders")
            built.append(_build(item.cmd, item.actor, target, settings, cipher, now))
        except (OrdertallyError, ValueError, ArithmeticError):
            built.append(None)  # create_order raises the same error in its own transaction

    pairs = [
        (b.values["channel"], b.values["external_id"])
        for b in built
        if b is not None and b.values["external_id"] is not None
    ]
    known = await repository.existing_externals(session, pairs)
    checking = settings.duplicate_window_seconds > 0
    recent = (
        await repository.recent_fingerprints(
            session,
            [
                b.values["fingerprint"]
                for b, item in zip(built, items, strict=True)
                if b is not None and item.check_fingerprint
            ],
            now - timedelta(seconds=settings.duplicate_window_seconds),
        )
        if checking
        else set()
    )
    seen_fingerprints: set[str] = set()
    for index, (b, item) in enumerate(zip(built, items, strict=True)):
        if b is None:
            continue
        pair = (b.values["channel"], b.values["external_id"])
        fingerprint = b.values["fingerprint"]
        if (b.values["external_id"] is not None and pair in known) or (
            checking
            and item.check_fingerprint
            and (fingerprint in recent or fingerprint in seen_fingerprints)
        ):
            built[index] = None
            continue
        if b.values["external_id"] is not None:
            known.add(pair)  # a second request of the batch for it returns the first's order
        seen_fingerprints.add(fingerprint)

    planned = [i for i, b in enumerate(built) if b is not None]
    demands = []
    for i in planned:
        b = built[i]
        assert b is not None
        demand: dict[str, int] = {}
        for row in b.lines:
            demand[row["sku"]] = demand.get(row["sku"], 0) + row["quantity"]
        demands.append(inventory_service.BulkDemand(demand, b.values["ship_province"]))
    bulk = await inventory_service.plan_bulk(session, demands)
    plan_of = {i: n for n, i in enumerate(planned)}
    chosen = [i for n, i in enumerate(planned) if n not in bulk.shortfall]
    snapshots: list[OrderSnapshot | None] = [None] * len(items)
    if not chosen:
        return CreatedBatch(snapshots, {})
    rows = [built[i].values for i in chosen]  # type: ignore[union-attr]
    order_ids = await repository.insert_orders(session, rows)
    line_rows = [
        {"order_id": order_id, **line}
        for i, order_id in zip(chosen, order_ids, strict=True)
        for line in built[i].lines  # type: ignore[union-attr]
    ]
    line_ids = iter(await repository.insert_lines(session, line_rows))
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    reservations: list[dict[str, Any]] = []
    allocations: list[dict[str, Any]] = []
    for i, order_id in zip(chosen, order_ids, strict=True):
        b = built[i]
        assert b is not None
        values = b.values
        lines = [OrderLine(id=next(line_ids), order_id=order_id, **row) for row in b.lines]
        reserved, allocation = inventory_service.bulk_rows(
            bulk,
            plan_of[i],
            order_id,
            [inventory_service.LineDemand(ln.id, ln.line_no, ln.sku, ln.quantity) for ln in lines],
            inventory_service.reservation_expiry(values["payment_deadline_at"]),
            target is Status.PAID,
            now,
        )
        reservations.extend(reserved.rows)
        allocations.append(allocation)
        audit.append(_audit_row(order_id, 1, "create", None, target.value, items[i].actor, now))
        events.append(_created_event(order_id, values, len(lines)))
        inventory = inventory_service.view_of_new(reserved, {ln.id: ln.line_no for ln in lines})
        snapshots[i] = OrderSnapshot(SalesOrder(id=order_id, **values), lines, [], inventory)
    await repository.insert_events(session, audit)
    await outbox.publish_rows(session, events)
    await inventory_service.add_bulk_rows(session, reservations, allocations)
    return CreatedBatch(snapshots, dict(bulk.totals))


async def take_batch_stock(session: AsyncSession, batch: CreatedBatch) -> None:
    """Take the stock a batch reserved (the conditional UPDATEs, in stock id order); raises
    BatchRaced when a row no longer has it. Run it last before COMMIT: the hot rows stay
    locked only for the COMMIT."""
    if not await inventory_service.take_bulk(session, batch.stock):
        raise BatchRaced


async def load_snapshot(session: AsyncSession, order: SalesOrder) -> OrderSnapshot:
    """Read everything an order's JSON shows."""
    lines = await repository.lines_of(session, order.id)
    holds = await exceptions_service.open_cases(session, order.id)
    inventory = await inventory_service.order_view(
        session, order.id, {line.id: line.line_no for line in lines}
    )
    extra = dict([await part(session, order) for part in SNAPSHOT_PARTS])
    return OrderSnapshot(order, lines, holds, inventory, extra)


async def _reserve_new_order(
    session: AsyncSession,
    order_id: int,
    lines: list[inventory_service.LineDemand],
    ship_province: str,
    deadline: datetime | None,
    *,
    committed: bool,
    holds: list[ExceptionCase],
    hold: bool,
) -> inventory_service.Reserved | None:
    """Reserve stock for a new order; a shortage refuses it, or holds it by merchant policy."""
    try:
        return await inventory_service.reserve_for_order(
            session,
            order_id=order_id,
            lines=lines,
            ship_province=ship_province,
            expires_at=inventory_service.reservation_expiry(deadline),
            committed=committed,
        )
    except InsufficientStock as shortage:
        if not hold:
            raise
        holds.append(
            await exceptions_service.open_case_record(
                session,
                order_id=order_id,
                category="inventory",
                type="stock_shortage",
                blocking=True,
                detail={"skus": shortage.extra.get("skus", [])},
            )
        )
        return None


async def _line_demand(session: AsyncSession, order_id: int) -> list[inventory_service.LineDemand]:
    return [
        inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
        for line in await repository.lines_of(session, order_id)
    ]


async def _apply_stock_effects(
    session: AsyncSession, order: SalesOrder, name: str, actor: Actor
) -> None:
    """The inventory side of a transition, in the same transaction as the status change."""
    if name in ("payment_succeeded", "reopen_paid"):
        # A reopened order's reservation was released at close: commit_order reserves again.
        missing = await inventory_service.commit_order(
            session, order.id, await _line_demand(session, order.id), order.ship_province
        )
        if missing:
            await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="inventory",
                type="stock_shortage",
                blocking=True,
                detail={
                    "skus": [{"sku": s, "missing": q} for s, q in sorted(missing.items())],
                    "when": "payment",
                },
            )
    elif name in ("payment_timeout", "cancel", "refund"):
        await inventory_service.release_order(session, order.id)
    elif name == "ship":
        await inventory_service.consume_order(session, order.id, actor.id)


def _audit_row(
    order_id: int,
    version: int,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: Actor,
    at: datetime,
) -> dict[str, Any]:
    """The audit row of one status change (creation or transition)."""
    return {
        "order_id": order_id,
        "version": version,
        "event": event,
        "from_status": from_status,
        "to_status": to_status,
        "actor_kind": actor.kind.value,
        "actor_id": actor.id,
        "source_ip": actor.source_ip,
        "evidence_ref": actor.evidence_ref,
        "note": actor.note,
        "occurred_at": at,
    }


async def _audit(
    session: AsyncSession,
    order_id: int,
    version: int,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: Actor,
    at: datetime,
) -> None:
    await repository.insert_event(
        session, _audit_row(order_id, version, event, from_status, to_status, actor, at)
    )


def _status_event(
    spec: Transition, order: SalesOrder, from_status: str, version: int, actor: Actor, at: datetime
) -> dict[str, Any]:
    """The outbox row announcing one transition of an order."""
    return outbox.build_row(
        spec.event_type,
        OrderStatusChanged(
            order_id=order.id,
            order_no=order.order_no,
            transition=spec.name,
            from_status=from_status,
            to_status=spec.target.value,
            version=version,
            actor_kind=actor.kind.value,
            actor_id=actor.id,
            evidence_ref=actor.evidence_ref,
            occurred_at=at,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )


async def transition(
    session: AsyncSession, order_no: str, name: str, actor: Actor
) -> TransitionResult:
    """Apply one row of the transition table as a compare-and-set, with its audit row and event.

    A transition that finds the order already in its target status because the same
    transition happened before is a duplicate: nothing is written and `applied` is False.
    """
    spec = find(name)
    if spec is None:
        raise IllegalTransition(f"{name!r} is not a transition")
    if actor.kind not in spec.actors:
        raise ActorNotAllowed(f"{actor.kind} may not trigger {name}", transition=name)
    if actor.kind in spec.evidence_required_for and not actor.evidence_ref:
        raise EvidenceRequired(f"{actor.kind} must give evidence for {name}", transition=name)

    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    for _ in range(3):
        status = Status(order.status)
        if status not in spec.sources:
            if await _already_applied(session, order, spec):
                return TransitionResult(order, applied=False)
            raise IllegalTransition(
                f"cannot {name} an order that is {status}",
                order_status=status.value,
                transition=name,
            )
        if spec.blocked_by_holds and await exceptions_service.has_hold(session, order.id):
            raise OrderOnHold(f"order {order_no} has an open hold", transition=name)
        now = clock.now()
        # Read before the UPDATE: the ORM synchronises the loaded order with the new version.
        seen_version = order.version
        if await repository.compare_and_set_status(
            session,
            order.id,
            from_status=status.value,
            version=seen_version,
            to_status=spec.target.value,
            at=now,
        ):
            version = seen_version + 1
            await _apply_stock_effects(session, order, name, actor)
            await _audit(
                session, order.id, version, name, status.value, spec.target.value, actor, now
            )
            await outbox.publish_rows(
                session, [_status_event(spec, order, status.value, version, actor, now)]
            )
            TRANSITIONS_TOTAL.labels(status.value, spec.target.value).inc()
            refreshed = await repository.get_by_id(session, order.id)
            assert refreshed is not None
            return TransitionResult(refreshed, applied=True)
        # Someone else moved the order first: re-read and decide again.
        fresh = await repository.get_by_id(session, order.id)
        assert fresh is not None
        order = fresh
    raise TransitionConflict(f"order {order_no} kept changing; try again", transition=name)


async def transition_many(
    session: AsyncSession, order_ids: list[int], name: str, actors: dict[int, Actor]
) -> set[int]:
    """`transition` for many orders at once, in a fixed number of statements: the orders are
    locked, those in a source status move together (compare-and-set, stock effects, audit rows,
    events). Returns the ids moved; the caller decides about the others (typically by calling
    `transition` for each, which explains why). Only transitions without holds or evidence
    rules and with a batched stock effect are supported."""
    spec = find(name)
    if spec is None or spec.blocked_by_holds or name not in _BATCHED_STOCK_EFFECTS:
        raise ValueError(f"{name!r} cannot be applied in a batch")
    for actor in actors.values():
        if actor.kind not in spec.actors:
            raise ActorNotAllowed(f"{actor.kind} may not trigger {name}", transition=name)
        if actor.kind in spec.evidence_required_for and not actor.evidence_ref:
            raise EvidenceRequired(f"{actor.kind} must give evidence for {name}", transition=name)
    orders = [
        o
        for o in await repository.lock_many(session, sorted(set(order_ids)))
        if o.status in spec.sources and o.id in actors
    ]
    if not orders:
        return set()
    now = clock.now()
    by_source: dict[str, list[SalesOrder]] = {}
    for order in orders:
        by_source.setdefault(order.status, []).append(order)
    for source, group in by_source.items():
        await repository.set_status_many(
            session,
            [{"oid": o.id, "seen": o.version, "at": now} for o in group],
            from_status=source,
            to_status=spec.target.value,
        )
    await _BATCHED_STOCK_EFFECTS[name](session, orders)
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for order in orders:
        actor = actors[order.id]
        version = order.version + 1
        audit.append(
            _audit_row(order.id, version, name, order.status, spec.target.value, actor, now)
        )
        events.append(_status_event(spec, order, order.status, version, actor, now))
        TRANSITIONS_TOTAL.labels(order.status, spec.target.value).inc()
    await repository.insert_events(session, audit)
    await outbox.publish_rows(session, events)
    moved = {o.id for o in orders}
    # The ORM objects still show the old status: expire them so later reads see the new one.
    for order in orders:
        session.expire(order)
    return moved


async def _commit_paid_many(session: AsyncSession, orders: list[SalesOrder]) -> None:
    """The stock side of payment_succeeded for many orders (see `_apply_stock_effects`)."""
    lines: dict[int, list[inventory_service.LineDemand]] = {o.id: [] for o in orders}
    for line in await repository.lines_of_many(session, list(lines)):
        lines[line.order_id].append(
            inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
        )
    short = await inventory_service.commit_orders(
        session, {o.id: (lines[o.id], o.ship_province) for o in orders}
    )
    for order_id, missing in sorted(short.items()):
        await exceptions_service.open_case(
            session,
            order_id=order_id,
            category="inventory",
            type="stock_shortage",
            blocking=True,
            detail={
                "skus": [{"sku": s, "missing": q} for s, q in sorted(missing.items())],
                "when": "payment",
            },
        )


_BATCHED_STOCK_EFFECTS: dict[str, Callable[[AsyncSession, list[SalesOrder]], Awaitable[None]]] = {
    "payment_succeeded": _commit_paid_many,
}


async def _already_applied(session: AsyncSession, order: SalesOrder, spec: Transition) -> bool:
    if order.status != spec.target.value:
        return False
    events = await repository.events_of(session, order.id)
    return bool(events) and events[-1].event == spec.name


async def get_order(session: AsyncSession, order_no: str) -> SalesOrder:
    """An order by number, or OrderNotFound."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    return order


async def lines_of(session: AsyncSession, order: SalesOrder) -> list[OrderLine]:
    """An order's lines."""
    return await repository.lines_of(session, order.id)


async def events_of(session: AsyncSession, order_no: str) -> list[OrderEvent]:
    """An order's audit trail, oldest first."""
    order = await get_order(session, order_no)
    return await repository.events_of(session, order.id)


async def list_orders(
    session: AsyncSession,
    *,
    status: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[SalesOrder]:
    """A page of orders, newest first."""
    return await repository.list_page(
        session,
        status=status,
        channel=channel,
        created_from=created_from,
        created_to=created_to,
        after=after,
        limit=limit,
    )


# Where a parcel is being prepared or travels: the only time a warehouse needs the recipient.
LABEL_STATUSES = frozenset({Status.ALLOCATED, Status.FULFILLING, Status.SHIPPED})
LABEL_FIELDS = frozenset(
    {"name", "phone", "province", "city", "district", "line1", "postal_code", "country"}
)


async def reveal_contact(
    session: AsyncSession,
    order_no: str,
    *,
    actor_id: str,
    role: str,
    reason: str,
    source_ip: str | None,
    warehouses: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Decrypt an order's personal data for someone allowed to see it, and log that they did.

    The warehouse role and warehouse-scoped callers see it only once the order is allocated
    (to one of their warehouses, when scoped), and only what a label needs.
    """
    order = await get_order(session, order_no)
    label_only = role == "warehouse" or warehouses is not None
    if label_only:
        if order.status not in LABEL_STATUSES:
            raise ContactNotAllowed(
                f"order {order_no} is {order.status}: its contact is shown to warehouses only "
                "once it is allocated"
            )
        if warehouses is not None and not (
            await inventory_service.warehouses_of_order(session, order.id)
        ) & set(warehouses):
            raise ContactNotAllowed(f"order {order_no} is not allocated to your warehouse")
    cipher = get_cipher()
    await repository.add_pii_access(
        session,
        {
            "order_id": order.id,
            "actor_id": actor_id,
            "role": role,
            "reason": reason,
            "source_ip": source_ip,
            "accessed_at": clock.now(),
        },
    )
    address = orjson.loads(cipher.decrypt(order.shipping_address_enc, PII_ADDRESS))
    if label_only:  # the recipient on the label, nothing about the buyer
        return {
            "customer_name": None,
            "customer_phone": None,
            "shipping_address": {k: v for k, v in address.items() if k in LABEL_FIELDS},
        }
    return {
        "customer_name": cipher.decrypt(order.customer_name_enc, PII_NAME),
        "customer_phone": cipher.decrypt(order.customer_phone_enc, PII_PHONE),
        "shipping_address": address,
    }
