"""The warehouse side: a shipment confirmed (picked and packed), then shipped with its waybill;
the order moves with its shipments (fulfilling, then shipped once every one has left). A
replacement shipment of an order that has left already (replacement.py) moves no order: shipping
it consumes its own committed units."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.errors import OrdertallyError
from ordertally.events import outbox
from ordertally.fulfillment import repository, state_machine
from ordertally.fulfillment import tracking_page as tracking
from ordertally.fulfillment.errors import (
    AlreadyShipped,
    ShipmentNotFound,
    ShipmentNotReady,
    WaybillInUse,
    WaybillMissing,
)
from ordertally.fulfillment.events import ShipmentShipped
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.replacement import SENT
from ordertally.fulfillment.shipments import lock_shipment, shipments_of
from ordertally.fulfillment.state_machine import NOT_SHIPPED, SHIP
from ordertally.fulfillment.tracking_updates import refresh_tracking_status
from ordertally.inventory import service as inventory_service
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import Event, Status

if TYPE_CHECKING:
    from ordertally.orders.models import SalesOrder


async def _start_fulfillment(session: AsyncSession, order: SalesOrder, actor: Actor) -> None:
    if order.status in SENT:  # a replacement shipment: the order has left already
        return
    if order.status == Status.ALLOCATED.value:
        await orders_service.transition(session, order.order_no, Event.START_FULFILLMENT, actor)
    elif order.status != Status.FULFILLING.value:
        raise ShipmentNotReady(
            f"order {order.order_no} is {order.status}", order_status=order.status
        )


async def confirm(session: AsyncSession, shipment_id: int, actor: Actor) -> Shipment:
    """The warehouse picked and packed the shipment; its order starts fulfilling."""
    shipment, order = await lock_shipment(session, shipment_id)
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
    shipment, order = await lock_shipment(session, shipment_id)
    if shipment.status not in SHIP.sources:
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
    clash = await repository.waybill_owner(session, company, number, other_than=shipment.id)
    if clash is not None:
        raise WaybillInUse(f"waybill {company} {number} belongs to shipment {clash}")
    replacement = order.status in SENT
    await _start_fulfillment(session, order, actor)
    now = clock.now()
    shipment.company = company
    shipment.waybill_no = number
    # The order row is locked (lock_shipment): this writer is the only one moving the shipment.
    shipment.status = SHIP.target.value
    shipment.shipped_at = now
    shipment.shipped_by = actor.id
    shipment.confirmed_at = shipment.confirmed_at or now
    shipment.next_waybill_at = None
    shipment.updated_at = now
    if shipment.carrier != "manual" and shipment.subscribed_at is None:
        shipment.next_subscribe_at = now
    await session.flush()
    siblings = await shipments_of(session, order.id)
    await orders_queries.set_waybills(
        session,
        order.id,
        [
            s.waybill_no
            for s in siblings
            if s.waybill_no and s.status != state_machine.ShipmentStatus.PLANNED
        ],
        now,
    )
    await outbox.publish(
        session,
        SHIP.event_type,
        ShipmentShipped(
            shipment_id=shipment.id,
            order_id=order.id,
            order_no=order.order_no,
            warehouse=shipment.warehouse_code,
            carrier=company,
            waybill_no=number,
            tracking_url=tracking.url_for(order.order_no),
            shipped_at=now,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )
    if replacement:
        # The order row is locked; its only committed units are its replacements', one
        # replacement shipment per warehouse: this one's are those at its warehouse.
        await inventory_service.consume_order(
            session, order.id, actor.id, warehouse_code=shipment.warehouse_code
        )
    elif all(s.status not in NOT_SHIPPED for s in siblings):
        await orders_service.transition(session, order.order_no, Event.SHIP, actor)
    # Events pushed before the warehouse said "shipped" were kept: apply them now.
    await refresh_tracking_status(session, shipment, order, now)
    return shipment, True


async def ship_rows(session: AsyncSession, rows: list[Any], actor: Actor) -> list[dict[str, Any]]:
    """Apply a shipped list (see shiplist.parse), each row in a savepoint: one result per row
    (`shipped`, `unchanged` or the error code).

    The list's orders are locked first in id order, then the stock rows they will consume in
    stock id order: shipping row after row would otherwise take order A's rows, then order
    B's, which is no lock order (issue 21's deadlock)."""
    results: list[dict[str, Any]] = []
    if len(rows) > 1:
        found = [await orders_queries.get_by_no(session, no) for no in {r.order_no for r in rows}]
        order_ids = sorted(o.id for o in found if o is not None)
        await orders_queries.lock(session, order_ids)
        await inventory_service.lock_stock_to_ship(session, order_ids)
    for row in rows:
        outcome: dict[str, Any] = {"line": row.line, "order_no": row.order_no}
        try:
            async with session.begin_nested():
                order = await orders_queries.get_by_no(session, row.order_no)
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
