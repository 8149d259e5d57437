"""Talking to the carrier: waybills to request, parcels to subscribe, parcels to ask about.

Each step claims its due shipments in a short transaction (leased, SKIP LOCKED on PostgreSQL),
calls the carrier with no transaction open, and records the answers in a new one: a slow
carrier never holds a lock or, on SQLite, the single writer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import Settings, get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import metrics, repository
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.carriers.base import (
    CarrierAdapter,
    CarrierRejected,
    CarrierUnavailable,
    Party,
    Subscription,
    TrackingUpdate,
    WaybillRequest,
)
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.state_machine import (
    ON_THE_ROAD,
    REQUEST_WAYBILL,
    WAYBILL_CREATED,
)
from ordertally.fulfillment.tracking_updates import apply_tracking, poll_every
from ordertally.orders import queries as orders_queries

# A waybill is asked for while the shipment is planned or already asked for (a lost answer).
_WAYBILL_DUE = REQUEST_WAYBILL.sources | WAYBILL_CREATED.sources


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
    db: Database, column: str, statuses: Collection[str], carrier: str, now: datetime
) -> list[Shipment]:
    """Due shipments (their `column` in the past), leased by pushing `column` forward."""
    async with db.transaction() as session:
        return await repository.claim_due(
            session,
            column,
            statuses,
            carrier,
            now,
            lease_until=now + _lease(),
            limit=get_settings().fulfillment_batch,
        )


def _party(address: dict[str, Any]) -> Party:
    return Party(
        name=address["name"],
        phone=address["phone"],
        province=address["province"],
        city=address["city"],
        district=address.get("district", ""),
        address=address["line1"],
    )


async def _recipients(db: Database, shipments: list[Shipment]) -> dict[int, Party]:
    """Each shipment's order's recipient (decrypted for the carrier call; a read, no locks)."""
    async with db.transaction(write=False) as session:
        orders = await orders_queries.get_many(session, [s.order_id for s in shipments])
        return {order.id: _party(orders_queries.shipping_address(order)) for order in orders}


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
    claimed = await _claim(db, "next_waybill_at", _WAYBILL_DUE, adapter.code, now)
    if not claimed:
        return {}
    ids = [s.id for s in claimed]
    async with db.transaction() as session:
        await repository.move(session, ids, REQUEST_WAYBILL, {"updated_at": now})
        recipients = {
            o.id: _party(orders_queries.shipping_address(o))
            for o in await orders_queries.lock(session, [s.order_id for s in claimed])
        }
        lines: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for line in await repository.lines_of_many(session, ids):
            lines[line.shipment_id].append((line.sku, line.quantity))
    # The transaction is closed: the carrier is called with no lock held.
    requests = {
        s.id: WaybillRequest(
            reference=f"S{s.id}",
            company=s.company,
            sender=_sender(settings),
            recipient=recipients[s.order_id],
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
                changed = await repository.update_in_status(
                    session,
                    [shipment_id],
                    WAYBILL_CREATED.sources,
                    {
                        "waybill_attempts": attempts,
                        "next_waybill_at": (
                            None if outcome == "rejected" else clock.now() + _backoff(attempts)
                        ),
                        "last_error": f"{outcome}: {result}"[:2000],
                        "updated_at": now,
                    },
                )
                if changed and (
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
                await repository.move(
                    session,
                    [shipment_id],
                    WAYBILL_CREATED,
                    {
                        "waybill_no": result.waybill_no,
                        "waybill_label": result.label[:200],
                        "waybill_attempts": shipment.waybill_attempts + 1,
                        "next_waybill_at": None,
                        "last_error": "",
                        "updated_at": now,
                    },
                )
            counts[outcome] += 1
    # Counted once the answers are committed.
    for outcome, n in counts.items():
        metrics.WAYBILL_REQUESTS.labels(adapter.code, outcome).inc(n)
    return dict(counts)


async def _subscribe_due(db: Database, adapter: CarrierAdapter, now: datetime) -> dict[str, int]:
    settings = get_settings()
    claimed = await _claim(db, "next_subscribe_at", ON_THE_ROAD, adapter.code, now)
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
                    "next_poll_at": now + timedelta(seconds=poll_every(adapter.code)),
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
                        now + timedelta(seconds=poll_every(adapter.code))
                        if outcome == "rejected"
                        else None
                    ),
                    "last_error": f"subscribe {outcome}: {error}"[:2000],
                }
            await repository.update_one(session, shipment.id, values)
            counts[outcome] += 1
    for outcome, n in counts.items():
        metrics.SUBSCRIPTIONS.labels(adapter.code, outcome).inc(n)
    return dict(counts)


async def _poll_due(db: Database, adapter: CarrierAdapter, now: datetime) -> dict[str, int]:
    settings = get_settings()
    claimed = await _claim(db, "next_poll_at", ON_THE_ROAD, adapter.code, now)
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
    every = timedelta(seconds=poll_every(adapter.code))
    for shipment, answer in results:
        async with db.transaction() as session:
            if isinstance(answer, Exception):
                outcome = "rejected" if isinstance(answer, CarrierRejected) else "unavailable"
                await repository.update_one(
                    session,
                    shipment.id,
                    {
                        "last_polled_at": now,
                        "next_poll_at": now + every,
                        "last_error": f"query {outcome}: {answer}"[:2000],
                    },
                )
            else:
                outcome = "answered"
                await apply_tracking(session, answer, source="query", now=now)
                await repository.update_if_polled(
                    session, shipment.id, {"last_polled_at": now, "next_poll_at": now + every}
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
