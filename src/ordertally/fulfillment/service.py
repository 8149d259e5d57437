"""Fulfillment use cases: shipments from the allocation, the warehouse's confirm and ship, the
carrier's waybills and tracking, and the order moving with them.

Session functions never commit (the caller's boundary does). `carrier_work` is the exception: it
talks to the carrier, so it takes the database and opens short transactions around each call,
never holding one while the carrier thinks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database, dialect_of, upsert_insert
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.fulfillment import metrics
from ordertally.fulfillment import tracking_page as tracking
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.carriers.base import (
    CarrierAdapter,
    CarrierRejected,
    CarrierUnavailable,
    Party,
    Subscription,
    TrackingStatus,
    TrackingUpdate,
    WaybillRequest,
)
from ordertally.fulfillment.errors import (
    AlreadyShipped,
    ShipmentNotFound,
    ShipmentNotReady,
    WaybillInUse,
    WaybillMissing,
)
from ordertally.fulfillment.events import (
    ShipmentDelivered,
    ShipmentShipped,
    ShipmentTrackingException,
)
from ordertally.fulfillment.models import (
    NOT_SHIPPED,
    ON_THE_ROAD,
    Shipment,
    ShipmentLine,
    TrackingEvent,
)
from ordertally.inventory import repository as inventory_repository
from ordertally.orders import repository as orders_repository
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import PII_ADDRESS, Actor
from ordertally.orders.state_machine import ActorKind, Status

log = logging.getLogger(__name__)

ALLOCATOR = Actor(ActorKind.ALLOCATOR, "fulfillment")
CARRIER = Actor(ActorKind.CARRIER, "carrier")

# Kuaidi100 state codes behind an exception, named the way ShipmentTrackingException names them.
_EXCEPTION_REASONS = {
    "2": "problem",
    "4": "rejected",
    "6": "returned",
    "13": "customs",
    "14": "rejected",
}
TERMINAL: frozenset[str] = frozenset({"delivered", "returned"})


# --- planning: paid order -> shipments -------------------------------------------------------


def company_for(warehouse_code: str, settings: Settings | None = None) -> str:
    """The carrier company a warehouse ships with."""
    settings = settings or get_settings()
    return settings.fulfillment_company_by_warehouse.get(
        warehouse_code, settings.fulfillment_default_company
    )


async def shipments_of(session: AsyncSession, order_id: int) -> list[Shipment]:
    """An order's shipments in plan order."""
    rows = await session.scalars(
        select(Shipment)
        .where(Shipment.order_id == order_id)
        .order_by(Shipment.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def plan_shipments(session: AsyncSession, order: SalesOrder) -> list[Shipment]:
    """One planned shipment per warehouse of the order's committed reservations (idempotent:
    an order that has shipments keeps them)."""
    existing = await shipments_of(session, order.id)
    if existing:
        return existing
    lines = {line.id: line for line in await orders_repository.lines_of(session, order.id)}
    per_warehouse: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for reservation, code in await inventory_repository.reservations_of(session, order.id):
        if reservation.state == "committed":
            per_warehouse[code][reservation.order_line_id] += reservation.quantity
    now = clock.now()
    carrier = registry.code()
    planned: list[Shipment] = []
    for code, quantities in sorted(per_warehouse.items()):
        shipment = Shipment(
            order_id=order.id,
            order_no=order.order_no,
            warehouse_code=code,
            seq=1,
            status="planned",
            carrier=carrier,
            company=company_for(code),
            waybill_no=None,
            waybill_label="",
            waybill_attempts=0,
            next_waybill_at=now if carrier != "manual" else None,
            last_error="",
            confirmed_by="",
            shipped_by="",
            subscribe_attempts=0,
            tracking_state_code="",
            created_at=now,
            updated_at=now,
        )
        session.add(shipment)
        await session.flush()
        session.add_all(
            ShipmentLine(
                shipment_id=shipment.id,
                order_line_id=line_id,
                line_no=lines[line_id].line_no,
                sku=lines[line_id].sku,
                quantity=quantity,
            )
            for line_id, quantity in sorted(quantities.items(), key=lambda i: lines[i[0]].line_no)
        )
        planned.append(shipment)
    await session.flush()
    return planned


async def allocate(session: AsyncSession, order_id: int) -> bool:
    """Turn a paid order's reservations into shipments and move it to `allocated`; False when
    the order is not ready (not paid, on hold, nothing committed) and nothing changed."""
    locked = await orders_repository.lock_many(session, [order_id])
    if not locked or locked[0].status != Status.PAID.value:
        return False
    order = locked[0]
    if await exceptions_service.has_hold(session, order.id):
        return False
    shipments = await plan_shipments(session, order)
    if not shipments:
        return False
    await orders_service.transition(session, order.order_no, "allocate", ALLOCATOR)
    return True


async def allocate_waiting(session: AsyncSession, limit: int) -> int:
    """Allocate paid orders the event path missed (a hold was resolved since, a lost event)."""
    held = select(ExceptionCase.id).where(
        ExceptionCase.order_id == SalesOrder.id,
        ExceptionCase.blocking.is_(True),
        ExceptionCase.status == "open",
    )
    ids = await session.scalars(
        select(SalesOrder.id)
        .where(SalesOrder.status == Status.PAID.value, ~held.exists())
        .order_by(SalesOrder.id)
        .limit(limit)
    )
    done = 0
    for order_id in ids.all():
        async with session.begin_nested():
            done += await allocate(session, order_id)
    return done


# --- warehouse side: confirm and ship ---------------------------------------------------------


async def _lock_shipment(session: AsyncSession, shipment_id: int) -> tuple[Shipment, SalesOrder]:
    """The shipment and its order, the order row locked first (one order, one writer)."""
    order_id = await session.scalar(select(Shipment.order_id).where(Shipment.id == shipment_id))
    if order_id is None:
        raise ShipmentNotFound(f"shipment {shipment_id} does not exist")
    order = (await orders_repository.lock_many(session, [order_id]))[0]
    shipment = await session.scalar(
        select(Shipment).where(Shipment.id == shipment_id).execution_options(populate_existing=True)
    )
    assert shipment is not None
    return shipment, order


async def _start_fulfillment(session: AsyncSession, order: SalesOrder, actor: Actor) -> None:
    if order.status == Status.ALLOCATED.value:
        await orders_service.transition(session, order.order_no, "start_fulfillment", actor)
    elif order.status != Status.FULFILLING.value:
        raise ShipmentNotReady(
            f"order {order.order_no} is {order.status}", order_status=order.status
        )


async def confirm(session: AsyncSession, shipment_id: int, actor: Actor) -> Shipment:
    """The warehouse picked and packed the shipment; its order starts fulfilling."""
    shipment, order = await _lock_shipment(session, shipment_id)
    if shipment.confirmed_at is not None or shipment.status not in NOT_SHIPPED:
        return shipment
    await _start_fulfillment(session, order, actor)
    now = clock.now()
    shipment.confirmed_at = now
    shipment.confirmed_by = actor.id
    shipment.updated_at = now
    await session.flush()
    return shipment


async def ship(
    session: AsyncSession,
    shipment_id: int,
    actor: Actor,
    *,
    waybill_no: str | None = None,
    company: str | None = None,
) -> tuple[Shipment, bool]:
    """The shipment left the warehouse: its waybill is written to the shipment and the order,
    the order moves (fulfilling, then shipped once every shipment is), ShipmentShipped is
    published. Shipping again with the same waybill changes nothing (False)."""
    shipment, order = await _lock_shipment(session, shipment_id)
    if shipment.status not in NOT_SHIPPED:
        if waybill_no is None or waybill_no == shipment.waybill_no:
            return shipment, False
        raise AlreadyShipped(
            f"shipment {shipment_id} left with waybill {shipment.waybill_no}",
            waybill_no=shipment.waybill_no,
        )
    company = company or shipment.company
    number = waybill_no or shipment.waybill_no
    if not number:
        raise WaybillMissing(f"shipment {shipment_id} has no waybill number yet")
    clash = await session.scalar(
        select(Shipment.id).where(
            Shipment.company == company, Shipment.waybill_no == number, Shipment.id != shipment.id
        )
    )
    if clash is not None:
        raise WaybillInUse(f"waybill {company} {number} belongs to shipment {clash}")
    await _start_fulfillment(session, order, actor)
    now = clock.now()
    shipment.company = company
    shipment.waybill_no = number
    shipment.status = "shipped"
    shipment.shipped_at = now
    shipment.shipped_by = actor.id
    shipment.confirmed_at = shipment.confirmed_at or now
    shipment.next_waybill_at = None
    shipment.updated_at = now
    if shipment.carrier != "manual" and shipment.subscribed_at is None:
        shipment.next_subscribe_at = now
    await session.flush()
    siblings = await shipments_of(session, order.id)
    numbers = sorted({s.waybill_no for s in siblings if s.waybill_no and s.status != "planned"})
    await session.execute(
        update(SalesOrder)
        .where(SalesOrder.id == order.id)
        .values(waybill_nos=" ".join(numbers)[:500], updated_at=now)
    )
    url = tracking.url_for(order.order_no)
    await outbox.publish(
        session,
        "ShipmentShipped",
        ShipmentShipped(
            shipment_id=shipment.id,
            order_id=order.id,
            order_no=order.order_no,
            warehouse=shipment.warehouse_code,
            carrier=company,
            waybill_no=number,
            tracking_url=url,
            shipped_at=now,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )
    if all(s.status not in NOT_SHIPPED for s in siblings):
        await orders_service.transition(session, order.order_no, "ship", actor)
    # Events pushed before the warehouse said "shipped" were kept: apply them now.
    await _refresh_tracking_status(session, shipment, order, now)
    return shipment, True


# --- carrier side: tracking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackingOutcome:
    known: bool  # a shipment has this waybill
    stored: int  # events new to us
    status: str | None  # the shipment's status afterwards


async def apply_tracking(
    session: AsyncSession, update_: TrackingUpdate, *, source: str, now: datetime | None = None
) -> TrackingOutcome:
    """Store what a push or a query says (each event once) and move the shipment to the status
    of its newest event by event time, so a late or repeated push never moves it backwards."""
    now = now or clock.now()
    rows = await session.execute(
        select(Shipment.id, Shipment.company)
        .where(Shipment.waybill_no == update_.waybill_no)
        .order_by(Shipment.id)
    )
    matches = rows.all()
    if not matches:
        return TrackingOutcome(False, 0, None)
    chosen = next((m for m in matches if m.company == update_.company), matches[0])
    shipment, order = await _lock_shipment(session, chosen.id)
    stored = 0
    if update_.events:
        values = [
            {
                "shipment_id": shipment.id,
                "company": shipment.company,
                "waybill_no": update_.waybill_no,
                "occurred_at": event.occurred_at,
                "status": event.status.value,
                "state_code": event.state_code,
                "description": event.description[:2000],
                "location": event.location[:200],
                "source": source,
                "received_at": now,
            }
            for event in update_.events
        ]
        result = await session.execute(
            upsert_insert(session, TrackingEvent).values(values).on_conflict_do_nothing()
        )
        stored = max(int(result.rowcount or 0), 0)  # type: ignore[attr-defined]
        newest = max(event.occurred_at for event in update_.events)
        metrics.TRACKING_LAG.observe(max((now - newest).total_seconds(), 0.0))
        metrics.TRACKING_EVENTS.labels(source).inc(stored)
    shipment.last_news_at = now
    if update_.finished:
        shipment.next_poll_at = None
    elif shipment.subscribed_at is not None:
        shipment.next_poll_at = now + timedelta(seconds=_poll_every(shipment.carrier))
    await _refresh_tracking_status(session, shipment, order, now)
    return TrackingOutcome(True, stored, shipment.status)


def _poll_every(carrier: str) -> int:
    settings = get_settings()
    adapter = registry.current(settings)
    floor = registry.min_query_interval(adapter) if adapter and adapter.code == carrier else 0
    return max(settings.fulfillment_poll_interval_seconds, floor)


async def _refresh_tracking_status(
    session: AsyncSession, shipment: Shipment, order: SalesOrder, now: datetime
) -> None:
    """Set a shipped shipment's status from its newest stored event and act on the change."""
    if shipment.status in NOT_SHIPPED or shipment.status in TERMINAL:
        await session.flush()
        return
    newest = (
        await session.execute(
            select(TrackingEvent.status, TrackingEvent.state_code, TrackingEvent.occurred_at)
            .where(TrackingEvent.shipment_id == shipment.id)
            .order_by(TrackingEvent.occurred_at.desc(), TrackingEvent.id.desc())
            .limit(1)
        )
    ).first()
    if newest is None:
        await session.flush()
        return
    before = shipment.status
    shipment.status = newest.status
    shipment.tracking_state_code = newest.state_code
    shipment.last_event_at = newest.occurred_at
    shipment.updated_at = now
    await session.flush()
    if shipment.status == before:
        return
    url = tracking.url_for(order.order_no)
    if shipment.status == TrackingStatus.DELIVERED.value:
        shipment.delivered_at = newest.occurred_at
        shipment.next_poll_at = None
        if shipment.shipped_at is not None:
            metrics.DELIVERY_TIME.observe(
                max((newest.occurred_at - clock.as_utc(shipment.shipped_at)).total_seconds(), 0)
            )
        await outbox.publish(
            session,
            "ShipmentDelivered",
            ShipmentDelivered(
                shipment_id=shipment.id,
                order_id=order.id,
                order_no=order.order_no,
                carrier=shipment.company,
                waybill_no=shipment.waybill_no or "",
                tracking_url=url,
                delivered_at=newest.occurred_at,
            ),
            aggregate_type="order",
            aggregate_id=order.order_no,
        )
        siblings = await shipments_of(session, order.id)
        if order.status == Status.SHIPPED.value and all(s.status == "delivered" for s in siblings):
            await orders_service.transition(session, order.order_no, "deliver", CARRIER)
    elif shipment.status in ("exception", "returned"):
        reason = (
            "returned"
            if shipment.status == "returned"
            else _EXCEPTION_REASONS.get(newest.state_code, "carrier_exception")
        )
        await _raise_tracking_exception(session, shipment, order, reason, newest.state_code, now)
    await session.flush()


async def _raise_tracking_exception(
    session: AsyncSession,
    shipment: Shipment,
    order: SalesOrder,
    reason: str,
    detail: str,
    now: datetime,
) -> None:
    await exceptions_service.open_case(
        session,
        order_id=order.id,
        category="fulfillment",
        type="tracking_stale" if reason == "tracking_stale" else "tracking_exception",
        blocking=False,
        detail={
            "shipment_id": shipment.id,
            "carrier": shipment.company,
            "waybill_no": shipment.waybill_no,
            "reason": reason,
            "detail": detail,
        },
    )
    await outbox.publish(
        session,
        "ShipmentTrackingException",
        ShipmentTrackingException(
            shipment_id=shipment.id,
            order_id=order.id,
            order_no=order.order_no,
            carrier=shipment.company,
            waybill_no=shipment.waybill_no or "",
            tracking_url=tracking.url_for(order.order_no),
            reason=reason,
            detail=detail,
            occurred_at=now,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )


async def flag_stale(session: AsyncSession, now: datetime, limit: int = 500) -> int:
    """Shipped parcels without a single scan after the threshold become `tracking_stale`
    exceptions, once each."""
    cutoff = now - timedelta(seconds=get_settings().fulfillment_stale_after_seconds)
    stale = (
        await session.scalars(
            select(Shipment)
            .where(
                Shipment.status == "shipped",
                Shipment.last_event_at.is_(None),
                Shipment.shipped_at <= cutoff,
                Shipment.stale_flagged_at.is_(None),
            )
            .order_by(Shipment.id)
            .limit(limit)
        )
    ).all()
    for shipment in stale:
        order = await orders_repository.get_by_id(session, shipment.order_id)
        assert order is not None
        shipment.stale_flagged_at = now
        hours = get_settings().fulfillment_stale_after_seconds / 3600
        await _raise_tracking_exception(
            session,
            shipment,
            order,
            "tracking_stale",
            f"no tracking {hours:g} h after shipping",
            now,
        )
    total = await session.scalar(
        select(func.count())
        .select_from(Shipment)
        .where(Shipment.status == "shipped", Shipment.stale_flagged_at.is_not(None))
    )
    metrics.STALE_SHIPMENTS.set(total or 0)
    await session.flush()
    return len(stale)


# --- talking to the carrier (outside transactions) --------------------------------------------


def _backoff(attempts: int) -> timedelta:
    settings = get_settings()
    seconds = min(
        settings.fulfillment_retry_base_seconds * 2 ** max(attempts - 1, 0),
        settings.fulfillment_retry_cap_seconds,
    )
    return timedelta(seconds=seconds)


def _lease() -> timedelta:
    # A claimed row is invisible to other workers this long: longer than a carrier call can take.
    return timedelta(seconds=max(60.0, 4 * get_settings().kuaidi100_timeout_seconds))


async def _claim(
    db: Database,
    column: Any,
    statuses: frozenset[str] | tuple[str, ...],
    carrier: str,
    now: datetime,
) -> list[Shipment]:
    """Due shipments (their `column` in the past), leased by pushing `column` forward."""
    async with db.transaction() as session:
        stmt = (
            select(Shipment)
            .where(
                Shipment.status.in_(sorted(statuses)),
                Shipment.carrier == carrier,
                column <= now,
            )
            .order_by(column, Shipment.id)
            .limit(get_settings().fulfillment_batch)
        )
        if dialect_of(session) == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        shipments = list((await session.scalars(stmt)).all())
        if shipments:
            await session.execute(
                update(Shipment)
                .where(Shipment.id.in_([s.id for s in shipments]))
                .values({column.key: now + _lease()})
            )
        for shipment in shipments:
            session.expunge(shipment)
        return shipments


def _recipient(order: SalesOrder) -> Party:
    doc = orjson.loads(get_cipher().decrypt(order.shipping_address_enc, PII_ADDRESS))
    return Party(
        name=doc["name"],
        phone=doc["phone"],
        province=doc["province"],
        city=doc["city"],
        district=doc.get("district", ""),
        address=doc["line1"],
    )


async def _recipients(db: Database, shipments: list[Shipment]) -> dict[int, Party]:
    """Each shipment's order's recipient (decrypted for the carrier call; a read, no locks)."""
    async with db.transaction(write=False) as session:
        orders = await session.scalars(
            select(SalesOrder).where(SalesOrder.id.in_({s.order_id for s in shipments}))
        )
        return {order.id: _recipient(order) for order in orders}


def _sender(settings: Settings) -> Party:
    return Party(
        name=settings.fulfillment_sender_name,
        phone=settings.fulfillment_sender_phone,
        province="",
        city="",
        district="",
        address=settings.fulfillment_sender_address,
    )


async def _request_waybills(db: Database, adapter: CarrierAdapter, now: datetime) -> dict[str, int]:
    settings = get_settings()
    claimed = await _claim(
        db, Shipment.next_waybill_at, ("planned", "waybill_requested"), adapter.code, now
    )
    if not claimed:
        return {}
    async with db.transaction() as session:
        await session.execute(
            update(Shipment)
            .where(Shipment.id.in_([s.id for s in claimed]), Shipment.status == "planned")
            .values(status="waybill_requested", updated_at=now)
        )
        orders = {
            o.id: o
            for o in await orders_repository.lock_many(
                session, sorted({s.order_id for s in claimed})
            )
        }
        lines: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for row in await session.execute(
            select(ShipmentLine.shipment_id, ShipmentLine.sku, ShipmentLine.quantity)
            .where(ShipmentLine.shipment_id.in_([s.id for s in claimed]))
            .order_by(ShipmentLine.shipment_id, ShipmentLine.line_no)
        ):
            lines[row.shipment_id].append((row.sku, row.quantity))
    requests = {
        s.id: WaybillRequest(
            reference=f"S{s.id}",
            company=s.company,
            sender=_sender(settings),
            recipient=_recipient(orders[s.order_id]),
            items=tuple(lines[s.id]),
        )
        for s in claimed
    }
    gate = asyncio.Semaphore(settings.fulfillment_carrier_concurrency)

    async def call(shipment_id: int) -> tuple[int, Any]:
        async with gate:
            try:
                return shipment_id, await adapter.create_waybill(requests[shipment_id])
            except (CarrierUnavailable, CarrierRejected) as exc:
                return shipment_id, exc

    results = await asyncio.gather(*(call(s.id) for s in claimed))
    counts: dict[str, int] = defaultdict(int)
    by_id = {s.id: s for s in claimed}
    async with db.transaction() as session:
        for shipment_id, result in results:
            shipment = by_id[shipment_id]
            if isinstance(result, CarrierUnavailable | CarrierRejected):
                outcome = "rejected" if isinstance(result, CarrierRejected) else "unavailable"
                attempts = shipment.waybill_attempts + 1
                changed = await session.execute(
                    update(Shipment)
                    .where(Shipment.id == shipment_id, Shipment.status == "waybill_requested")
                    .values(
                        waybill_attempts=attempts,
                        next_waybill_at=(
                            None if outcome == "rejected" else clock.now() + _backoff(attempts)
                        ),
                        last_error=f"{outcome}: {result}"[:2000],
                        updated_at=now,
                    )
                )
                if changed.rowcount and (  # type: ignore[attr-defined]
                    outcome == "rejected" or attempts == settings.fulfillment_waybill_alert_attempts
                ):
                    await exceptions_service.open_case(
                        session,
                        order_id=shipment.order_id,
                        category="fulfillment",
                        type="waybill_rejected" if outcome == "rejected" else "waybill_failing",
                        blocking=False,
                        detail={
                            "shipment_id": shipment_id,
                            "carrier": adapter.code,
                            "company": shipment.company,
                            "attempts": attempts,
                            "error": str(result),
                            "code": result.code,
                        },
                    )
            else:
                outcome = "created"
                await session.execute(
                    update(Shipment)
                    .where(Shipment.id == shipment_id, Shipment.status == "waybill_requested")
                    .values(
                        status="ready",
                        waybill_no=result.waybill_no,
                        waybill_label=result.label[:200],
                        waybill_attempts=shipment.waybill_attempts + 1,
                        next_waybill_at=None,
                        last_error="",
                        updated_at=now,
                    )
                )
            metrics.WAYBILL_REQUESTS.labels(adapter.code, outcome).inc()
            counts[outcome] += 1
    return dict(counts)


async def _subscribe_due(db: Database, adapter: CarrierAdapter, now: datetime) -> dict[str, int]:
    settings = get_settings()
    claimed = await _claim(db, Shipment.next_subscribe_at, ON_THE_ROAD, adapter.code, now)
    if not claimed:
        return {}
    recipients = await _recipients(db, claimed)
    callback = f"{settings.public_base_url.rstrip('/')}/callbacks/carriers/{adapter.code}"
    gate = asyncio.Semaphore(settings.fulfillment_carrier_concurrency)

    async def call(shipment: Shipment) -> tuple[Shipment, Exception | None]:
        async with gate:
            try:
                await adapter.subscribe(
                    Subscription(
                        company=shipment.company,
                        waybill_no=shipment.waybill_no or "",
                        callback_url=callback,
                        phone=recipients[shipment.order_id].phone,
                    )
                )
                return shipment, None
            except (CarrierUnavailable, CarrierRejected) as exc:
                return shipment, exc

    results = await asyncio.gather(*(call(s) for s in claimed))
    counts: dict[str, int] = defaultdict(int)
    async with db.transaction() as session:
        for shipment, error in results:
            attempts = shipment.subscribe_attempts + 1
            if error is None:
                outcome = "subscribed"
                values: dict[str, Any] = {
                    "subscribed_at": now,
                    "subscribe_attempts": attempts,
                    "next_subscribe_at": None,
                    "next_poll_at": now + timedelta(seconds=_poll_every(adapter.code)),
                }
            else:
                outcome = "rejected" if isinstance(error, CarrierRejected) else "unavailable"
                values = {
                    "subscribe_attempts": attempts,
                    # A refused subscription is still polled: the parcel is not left untracked.
                    "next_subscribe_at": (
                        None if outcome == "rejected" else clock.now() + _backoff(attempts)
                    ),
                    "next_poll_at": (
                        now + timedelta(seconds=_poll_every(adapter.code))
                        if outcome == "rejected"
                        else None
                    ),
                    "last_error": f"subscribe {outcome}: {error}"[:2000],
                }
            await session.execute(update(Shipment).where(Shipment.id == shipment.id).values(values))
            metrics.SUBSCRIPTIONS.labels(adapter.code, outcome).inc()
            counts[outcome] += 1
    return dict(counts)


async def _poll_due(db: Database, adapter: CarrierAdapter, now: datetime) -> dict[str, int]:
    settings = get_settings()
    claimed = await _claim(db, Shipment.next_poll_at, ON_THE_ROAD, adapter.code, now)
    if not claimed:
        return {}
    recipients = await _recipients(db, claimed)
    gate = asyncio.Semaphore(settings.fulfillment_carrier_concurrency)

    async def call(shipment: Shipment) -> tuple[Shipment, TrackingUpdate | Exception]:
        async with gate:
            try:
                answer = await adapter.query(
                    shipment.company,
                    shipment.waybill_no or "",
                    recipients[shipment.order_id].phone,
                )
                return shipment, answer
            except (CarrierUnavailable, CarrierRejected) as exc:
                return shipment, exc

    results = await asyncio.gather(*(call(s) for s in claimed))
    counts: dict[str, int] = defaultdict(int)
    every = timedelta(seconds=_poll_every(adapter.code))
    for shipment, answer in results:
        async with db.transaction() as session:
            if isinstance(answer, Exception):
                outcome = "rejected" if isinstance(answer, CarrierRejected) else "unavailable"
                await session.execute(
                    update(Shipment)
                    .where(Shipment.id == shipment.id)
                    .values(
                        last_polled_at=now,
                        next_poll_at=now + every,
                        last_error=f"query {outcome}: {answer}"[:2000],
                    )
                )
            else:
                outcome = "answered"
                await apply_tracking(session, answer, source="query", now=now)
                await session.execute(
                    update(Shipment)
                    .where(Shipment.id == shipment.id, Shipment.next_poll_at.is_not(None))
                    .values(last_polled_at=now, next_poll_at=now + every)
                )
        metrics.TRACKING_QUERIES.labels(adapter.code, outcome).inc()
        counts[outcome] += 1
    return dict(counts)


async def carrier_work(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Everything due with the carrier: waybills to request, parcels to subscribe, parcels to
    ask about. Safe to run from several workers (rows are leased) and after a crash (the due
    times are durable; a lost answer means the request is made again, idempotent by reference)."""
    adapter = registry.current()
    if adapter is None:
        return {"carrier": "manual"}
    now = now or clock.now()
    return {
        "carrier": adapter.code,
        "waybills": await _request_waybills(db, adapter, now),
        "subscriptions": await _subscribe_due(db, adapter, now),
        "queries": await _poll_due(db, adapter, now),
    }


# --- reads ------------------------------------------------------------------------------------


async def lines_by_shipment(
    session: AsyncSession, shipment_ids: list[int]
) -> dict[int, list[ShipmentLine]]:
    """Each shipment's lines."""
    out: dict[int, list[ShipmentLine]] = defaultdict(list)
    if not shipment_ids:
        return out
    for line in await session.scalars(
        select(ShipmentLine)
        .where(ShipmentLine.shipment_id.in_(shipment_ids))
        .order_by(ShipmentLine.shipment_id, ShipmentLine.line_no)
    ):
        out[line.shipment_id].append(line)
    return out


async def timelines(
    session: AsyncSession, shipment_ids: list[int]
) -> dict[int, list[TrackingEvent]]:
    """Each shipment's tracking events, newest first by event time."""
    out: dict[int, list[TrackingEvent]] = defaultdict(list)
    if not shipment_ids:
        return out
    for event in await session.scalars(
        select(TrackingEvent)
        .where(TrackingEvent.shipment_id.in_(shipment_ids))
        .order_by(TrackingEvent.shipment_id, TrackingEvent.occurred_at.desc(), TrackingEvent.id)
    ):
        out[event.shipment_id].append(event)
    return out


async def get_shipment(session: AsyncSession, shipment_id: int) -> Shipment:
    """One shipment, or a 404 problem."""
    shipment = await session.get(Shipment, shipment_id, populate_existing=True)
    if shipment is None:
        raise ShipmentNotFound(f"shipment {shipment_id} does not exist")
    return shipment


async def ship_rows(session: AsyncSession, rows: list[Any], actor: Actor) -> list[dict[str, Any]]:
    """Apply a shipped list (see shiplist.parse), each row in a savepoint: one result per row
    (`shipped`, `unchanged` or the error code)."""
    results: list[dict[str, Any]] = []
    for row in rows:
        outcome: dict[str, Any] = {"line": row.line, "order_no": row.order_no}
        try:
            async with session.begin_nested():
                order = await orders_repository.get_by_no(session, row.order_no)
                if order is None:
                    raise ShipmentNotFound(f"order {row.order_no} does not exist")
                candidates = await shipments_of(session, order.id)
                if row.shipment_id is not None:
                    chosen = next((s for s in candidates if s.id == row.shipment_id), None)
                else:
                    chosen = next(
                        (s for s in candidates if s.waybill_no == row.waybill_no), None
                    ) or next((s for s in candidates if s.status in NOT_SHIPPED), None)
                if chosen is None:
                    raise ShipmentNotFound(f"order {row.order_no} has no shipment to ship")
                shipment, changed = await ship(
                    session,
                    chosen.id,
                    actor,
                    waybill_no=row.waybill_no,
                    company=row.company or None,
                )
                outcome.update(
                    shipment_id=shipment.id,
                    waybill_no=shipment.waybill_no,
                    result="shipped" if changed else "unchanged",
                )
        except OrdertallyError as exc:
            outcome.update(result="error", code=exc.code, message=exc.detail)
        results.append(outcome)
    return results
