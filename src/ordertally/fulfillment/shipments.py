"""Reading shipments: an order's shipments, their lines and timelines, and the lock taken
before changing one (its order's row first: one order, one writer)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.fulfillment import repository
from ordertally.fulfillment.errors import ShipmentNotFound
from ordertally.fulfillment.models import Shipment, ShipmentLine, TrackingEvent
from ordertally.orders import queries as orders_queries

if TYPE_CHECKING:
    from ordertally.orders.models import SalesOrder


async def shipments_of(session: AsyncSession, order_id: int) -> list[Shipment]:
    """An order's shipments in plan order."""
    return await repository.of_order(session, order_id)


async def shipments_of_orders(session: AsyncSession, order_ids: list[int]) -> list[Shipment]:
    """The shipments of several orders, by order then plan order."""
    return await repository.of_orders(session, order_ids)


async def lines_by_shipment(
    session: AsyncSession, shipment_ids: list[int]
) -> dict[int, list[ShipmentLine]]:
    """Each shipment's lines."""
    out: dict[int, list[ShipmentLine]] = defaultdict(list)
    if not shipment_ids:
        return out
    for line in await repository.lines_of_many(session, shipment_ids):
        out[line.shipment_id].append(line)
    return out


async def timelines(
    session: AsyncSession, shipment_ids: list[int]
) -> dict[int, list[TrackingEvent]]:
    """Each shipment's tracking events, newest first by event time."""
    out: dict[int, list[TrackingEvent]] = defaultdict(list)
    if not shipment_ids:
        return out
    for event in await repository.events_of_many(session, shipment_ids):
        out[event.shipment_id].append(event)
    return out


async def get_shipment(session: AsyncSession, shipment_id: int) -> Shipment:
    """One shipment, or a 404 problem."""
    shipment = await repository.get(session, shipment_id)
    if shipment is None:
        raise ShipmentNotFound(f"shipment {shipment_id} does not exist")
    return shipment


async def lock_shipment(session: AsyncSession, shipment_id: int) -> tuple[Shipment, SalesOrder]:
    """The shipment and its order, the order row locked first (one order, one writer)."""
    order_id = await repository.order_id_of(session, shipment_id)
    if order_id is None:
        raise ShipmentNotFound(f"shipment {shipment_id} does not exist")
    order = (await orders_queries.lock(session, [order_id]))[0]
    shipment = await repository.get_fresh(session, shipment_id)
    assert shipment is not None
    return shipment, order
