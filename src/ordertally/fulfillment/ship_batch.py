"""Shipping in batches (ADR 0050): the warehouse's concurrent "shipped" scans of one process
applied in one transaction of set-based statements, each exactly as `shipping.ship` would apply
it alone, one after the other in arrival order.

Only the common case is taken here: a shipment waiting to leave, of an order allocated or
fulfilling and free of holds, with a waybill number no other shipment holds and no scan pushed
before it left. Anything else (not found, out of the caller's scope, shipped already, no waybill
yet, a waybill clash, a replacement parcel, a held order, early scans, the same shipment twice)
is answered None and runs alone on `shipping.ship`, which raises its own problem or does the
rare work; being the later of the two, it sees everything the batch did.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import repository
from ordertally.fulfillment import tracking_page as tracking
from ordertally.fulfillment.events import ShipmentShipped
from ordertally.fulfillment.state_machine import NOT_SHIPPED, SHIP, ShipmentStatus
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import Event, Status

# Order statuses a shipment of the order leaves from on the batch path (not a replacement).
_SHIPPABLE_ORDERS = frozenset({Status.ALLOCATED.value, Status.FULFILLING.value})


@dataclass(frozen=True, slots=True)
class ShipRequest:
    """One `POST /shipments/{id}/ship`: the caller's warehouse and channel scopes (None: not
    scoped) and the body's optional waybill number and carrier company."""

    shipment_id: int
    actor: Actor
    waybill_no: str | None = None
    company: str | None = None
    warehouses: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None


def _in_scope(request: ShipRequest, warehouse_code: str, channel: str | None) -> bool:
    if request.warehouses is not None and warehouse_code not in request.warehouses:
        return False
    return request.channels is None or channel in request.channels


async def ship_many(session: AsyncSession, requests: list[ShipRequest]) -> list[Any | None]:
    """`shipping.ship` for several requests in one transaction, in a fixed number of statements:
    the orders locked once in id order, their shipments read after the locks, the shipments
    updated, the orders' waybill numbers written, their `start_fulfillment` and `ship`
    transitions taken through the transition table (`orders.service.transition_many`: audit
    rows, events, the stock consumed last), one ShipmentShipped per parcel. Returns per request
    the shipment as shipped (its columns as attributes), or None: run that one alone."""
    results: list[Any | None] = [None] * len(requests)
    if not requests:
        return results
    order_of = await repository.order_ids_of(session, {r.shipment_id for r in requests})
    if not order_of:
        return results
    # One order, one writer: every order concerned is held until COMMIT, locked in id order.
    orders = {o.id: o for o in await orders_queries.lock(session, list(order_of.values()))}
    rows = await repository.rows_of_orders(session, list(orders))
    by_id = {row["id"]: row for row in rows}
    held = await exceptions_service.held_orders(session, sorted(orders))
    early = await repository.with_tracking_events(session, set(order_of) & set(by_id))
    holders: dict[tuple[str, str], set[int]] = defaultdict(set)
    wanted = {r.waybill_no for r in requests if r.waybill_no}
    wanted |= {row["waybill_no"] for row in rows if row["waybill_no"]}
    for holder in await repository.waybill_holders(session, wanted):
        holders[(holder.company, holder.waybill_no or "")].add(holder.id)

    now = clock.now()
    taken: list[tuple[int, ShipRequest]] = []
    updates: list[dict[str, Any]] = []
    for i, request in enumerate(requests):
        row = by_id.get(request.shipment_id)
        if row is None or row["status"] not in SHIP.sources or row["id"] in early:
            continue  # gone, shipped already (or twice in this batch), or scans came first
        order = orders[row["order_id"]]
        if order.status not in _SHIPPABLE_ORDERS or order.id in held:
            continue
        if not _in_scope(request, row["warehouse_code"], order.channel):
            continue
        company = request.company or row["company"]
        number = request.waybill_no or row["waybill_no"]
        if not number or holders[(company, number)] - {row["id"]}:
            continue
        if row["waybill_no"]:
            holders[(row["company"], row["waybill_no"])].discard(row["id"])
        holders[(company, number)].add(row["id"])
        changes: dict[str, Any] = {
            "company": company,
            "waybill_no": number,
            "status": SHIP.target.value,
            "shipped_at": now,
            "shipped_by": request.actor.id,
            "confirmed_at": row["confirmed_at"] or now,
            "next_waybill_at": None,
            "updated_at": now,
        }
        if row["carrier"] != "manual" and row["subscribed_at"] is None:
            changes["next_subscribe_at"] = now
        row.update(changes)
        updates.append({"id": row["id"], **changes})
        taken.append((i, request))
    if not taken:
        return results

    by_order: dict[int, list[tuple[int, ShipRequest]]] = defaultdict(list)
    for i, request in taken:
        by_order[by_id[request.shipment_id]["order_id"]].append((i, request))
    # The first parcel of an allocated order starts its fulfilment, under its own actor.
    starting = {
        order_id: items[0][1].actor
        for order_id, items in by_order.items()
        if orders[order_id].status == Status.ALLOCATED.value
    }
    order_nos = {order_id: orders[order_id].order_no for order_id in by_order}
    if starting:
        started = await orders_service.transition_many(
            session, sorted(starting), Event.START_FULFILLMENT, starting, holds_checked=True
        )
        _all_moved(started, starting, Event.START_FULFILLMENT)
    # The orders are locked: these writers are the only ones moving their shipments.
    await repository.update_each(session, updates)
    siblings: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        siblings[row["order_id"]].append(row)
    await orders_queries.set_waybills_many(
        session,
        {
            order_id: [
                s["waybill_no"]
                for s in siblings[order_id]
                if s["waybill_no"] and s["status"] != ShipmentStatus.PLANNED
            ]
            for order_id in by_order
        },
        now,
    )
    events: list[dict[str, Any]] = []
    for _, request in taken:
        row = by_id[request.shipment_id]
        order_no = order_nos[row["order_id"]]
        payload = ShipmentShipped(
            shipment_id=row["id"],
            order_id=row["order_id"],
            order_no=order_no,
            warehouse=row["warehouse_code"],
            carrier=row["company"],
            waybill_no=row["waybill_no"],
            tracking_url=tracking.url_for(order_no),
            shipped_at=now,
        )
        events.append(
            outbox.build_row(
                SHIP.event_type, payload, aggregate_type="order", aggregate_id=order_no
            )
        )
    await outbox.publish_rows(session, events)
    # An order whose parcels have all left ships, under the actor of its last parcel.
    leaving = {
        order_id: items[-1][1].actor
        for order_id, items in by_order.items()
        if all(s["status"] not in NOT_SHIPPED for s in siblings[order_id])
    }
    if leaving:
        shipped = await orders_service.transition_many(
            session, sorted(leaving), Event.SHIP, leaving, holds_checked=True
        )
        _all_moved(shipped, leaving, Event.SHIP)
    for i, request in taken:
        results[i] = SimpleNamespace(**by_id[request.shipment_id])
    return results


def _all_moved(moved: set[int], wanted: dict[int, Actor], name: str) -> None:
    """Under the orders' locks every order read movable moves; if one did not, the batch is
    wrong about it: fail the batch (rolled back), so that each request runs alone."""
    if moved != set(wanted):
        raise RuntimeError(f"{name} moved {sorted(moved)} of {sorted(wanted)}")
