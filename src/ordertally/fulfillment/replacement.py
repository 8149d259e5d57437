"""Replacement shipments (补发, 换货): goods sent again for an order that has already shipped,
without a new order and without a payment.

The units are reserved for the original order like any order's (inventory's
`reserve_for_order`, committed at once, stock ids in ascending order) and planned as one more
shipment per warehouse of that order (the next `seq`). The warehouse confirms and ships it
through the usual `confirm` / `ship`, which consume its units (shipping.py); the order's own
status does not move again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.fulfillment.allocation import add_shipments
from ordertally.fulfillment.errors import ShipmentNotReady
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.shipments import shipments_of
from ordertally.inventory import service as inventory_service
from ordertally.orders import queries as orders_queries
from ordertally.orders.state_machine import Status

# Order statuses whose goods have left: a shipment planned then is a replacement.
SENT: frozenset[str] = frozenset(
    {
        Status.SHIPPED.value,
        Status.DELIVERED.value,
        Status.COMPLETED.value,
        Status.PARTIALLY_REFUNDED.value,
    }
)


@dataclass(frozen=True, slots=True)
class ReplacementLine:
    line_no: int
    quantity: int


async def plan_replacement(
    session: AsyncSession, order_id: int, lines: list[ReplacementLine]
) -> list[Shipment]:
    """Reserve `lines` of a sent order again (committed, no expiry) and plan one replacement
    shipment per warehouse. Raises inventory's InsufficientStock (nothing reserved: the
    reservation is all or nothing) or ShipmentNotReady when the order has not been sent."""
    order = (await orders_queries.lock(session, [order_id]))[0]
    if order.status not in SENT:
        raise ShipmentNotReady(
            f"order {order.order_no} is {order.status}: nothing to send again",
            order_status=order.status,
        )
    by_no = {line.line_no: line for line in await orders_queries.lines_of(session, order.id)}
    demand = [
        inventory_service.LineDemand(
            by_no[item.line_no].id, item.line_no, by_no[item.line_no].sku, item.quantity
        )
        for item in sorted(lines, key=lambda i: i.line_no)
    ]
    reserved = await inventory_service.reserve_for_order(
        session,
        order_id=order.id,
        lines=demand,
        ship_province=order.ship_province,
        expires_at=None,
        committed=True,
        new_order=False,
    )
    per_warehouse: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in reserved.rows:
        per_warehouse[reserved.codes[row["warehouse_id"]]][row["order_line_id"]] += row["quantity"]
    seqs: dict[str, int] = defaultdict(int)
    for existing in await shipments_of(session, order.id):
        seqs[existing.warehouse_code] = max(seqs[existing.warehouse_code], existing.seq)
    line_of = {line.id: line for line in by_no.values()}
    return await add_shipments(session, order, per_warehouse, line_of, seqs)
