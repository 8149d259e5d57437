"""Planning: a paid order's committed reservations become one shipment per warehouse, and the
order moves to `allocated`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import Settings, get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import repository, state_machine
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.shipments import shipments_of, shipments_of_orders
from ordertally.inventory import service as inventory_service
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Event, Status

if TYPE_CHECKING:
    from ordertally.orders.models import OrderLine, SalesOrder

ALLOCATOR = Actor(ActorKind.ALLOCATOR, "fulfillment")


def company_for(warehouse_code: str, settings: Settings | None = None) -> str:
    """The carrier company a warehouse ships with."""
    settings = settings or get_settings()
    return settings.fulfillment_company_by_warehouse.get(
        warehouse_code, settings.fulfillment_default_company
    )


async def add_shipments(
    session: AsyncSession,
    order: SalesOrder,
    per_warehouse: Mapping[str, Mapping[int, int]],
    lines: Mapping[int, OrderLine],
    last_seq: Mapping[str, int],
) -> list[Shipment]:
    """Plan one shipment per warehouse of `per_warehouse` (warehouse code -> order line id ->
    units), each numbered after the warehouse's `last_seq` (0 when absent), with its lines."""
    return (await _add_plans(session, [(order, per_warehouse, lines, last_seq)]))[0]


# An order, its units per warehouse and line, its lines by id, the last seq per warehouse.
Plan: TypeAlias = (
    "tuple[SalesOrder, Mapping[str, Mapping[int, int]], Mapping[int, OrderLine], Mapping[str, int]]"
)


async def _add_plans(session: AsyncSession, plans: list[Plan]) -> list[list[Shipment]]:
    """`add_shipments` for several orders: the shipments in one insert, their lines in
    another; each order's shipments, in the order of `plans`."""
    now = clock.now()
    carrier = registry.code()
    rows: list[dict[str, object]] = []
    owners: list[int] = []
    for index, (order, per_warehouse, _, last_seq) in enumerate(plans):
        for code in sorted(per_warehouse):
            rows.append(
                {
                    "order_id": order.id,
                    "order_no": order.order_no,
                    "warehouse_code": code,
                    "seq": last_seq.get(code, 0) + 1,
                    "status": state_machine.INITIAL.value,
                    "carrier": carrier,
                    "company": company_for(code),
                    "waybill_no": None,
                    "waybill_label": "",
                    "waybill_attempts": 0,
                    "next_waybill_at": now if carrier != "manual" else None,
                    "last_error": "",
                    "confirmed_by": "",
                    "shipped_by": "",
                    "subscribe_attempts": 0,
                    "tracking_state_code": "",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            owners.append(index)
    shipments = await repository.add_shipments(session, rows)
    planned: list[list[Shipment]] = [[] for _ in plans]
    line_rows: list[dict[str, object]] = []
    for shipment, index in zip(shipments, owners, strict=True):
        _, per_warehouse, lines, _ = plans[index]
        quantities = per_warehouse[shipment.warehouse_code]
        line_rows.extend(
            {
                "shipment_id": shipment.id,
                "order_line_id": line_id,
                "line_no": lines[line_id].line_no,
                "sku": lines[line_id].sku,
                "quantity": quantity,
            }
            for line_id, quantity in sorted(quantities.items(), key=lambda i: lines[i[0]].line_no)
        )
        planned[index].append(shipment)
    await repository.add_lines(session, line_rows)
    return planned


async def plan_shipments(session: AsyncSession, order: SalesOrder) -> list[Shipment]:
    """One planned shipment per warehouse of the order's committed reservations (idempotent:
    an order that has shipments keeps them)."""
    existing = await shipments_of(session, order.id)
    if existing:
        return existing
    lines = {line.id: line for line in await orders_queries.lines_of(session, order.id)}
    per_warehouse = await inventory_service.committed_by_warehouse(session, order.id)
    return await add_shipments(session, order, per_warehouse, lines, {})


async def allocate(session: AsyncSession, order_id: int) -> bool:
    """Turn a paid order's reservations into shipments and move it to `allocated`; False when
    the order is not ready (not paid, on hold, nothing committed) and nothing changed."""
    locked = await orders_queries.lock(session, [order_id])
    if not locked or locked[0].status != Status.PAID.value:
        return False
    order = locked[0]
    if await exceptions_service.has_hold(session, order.id):
        return False
    shipments = await plan_shipments(session, order)
    if not shipments:
        return False
    await orders_service.transition(session, order.order_no, Event.ALLOCATE, ALLOCATOR)
    return True


async def allocate_many(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """`allocate` for several orders in a fixed number of statements (the consumer's batch):
    the orders locked in id order, their holds, shipments, lines and committed reservations
    read once each, the new shipments and their lines inserted together, and the ready orders
    moved to `allocated` together. Returns the ids allocated."""
    locked = [
        o for o in await orders_queries.lock(session, order_ids) if o.status == Status.PAID.value
    ]
    held = await exceptions_service.held_orders(session, [o.id for o in locked])
    free = [o for o in locked if o.id not in held]
    if not free:
        return set()
    ids = [o.id for o in free]
    existing: set[int] = {s.order_id for s in await shipments_of_orders(session, ids)}
    lines: dict[int, dict[int, OrderLine]] = {i: {} for i in ids}
    for line in await orders_queries.lines_of_many(session, ids):
        lines[line.order_id][line.id] = line
    committed = await inventory_service.committed_by_warehouse_of_orders(
        session, [i for i in ids if i not in existing]
    )
    await _add_plans(
        session, [(o, committed[o.id], lines[o.id], {}) for o in free if o.id in committed]
    )
    ready = [o.id for o in free if o.id in existing or o.id in committed]
    if not ready:
        return set()
    return await orders_service.transition_many(
        session, ready, Event.ALLOCATE, dict.fromkeys(ready, ALLOCATOR), holds_checked=True
    )


async def allocate_waiting(session: AsyncSession, limit: int) -> int:
    """Allocate paid orders the event path missed (a hold was resolved since, a lost event):
    up to `limit` of those not on hold, oldest first."""
    done = tried = after = 0
    while tried < limit:
        ids = await orders_queries.paid_order_ids(session, after_id=after, limit=limit)
        if not ids:
            break
        for order_id in ids:
            after = order_id
            if await exceptions_service.has_hold(session, order_id):
                continue
            tried += 1
            async with session.begin_nested():
                done += await allocate(session, order_id)
            if tried == limit:
                break
    return done
