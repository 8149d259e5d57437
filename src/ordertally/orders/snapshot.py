"""What an order's JSON shows, read in one place: the order, its lines, open holds, stock and
the parts other domains register (fulfillment: "shipments")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.inventory import service as inventory_service
from ordertally.orders import repository
from ordertally.orders.models import OrderLine, SalesOrder


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


async def load_snapshot(session: AsyncSession, order: SalesOrder) -> OrderSnapshot:
    """Read everything an order's JSON shows."""
    lines = await repository.lines_of(session, order.id)
    holds = await exceptions_service.open_cases(session, order.id)
    inventory = await inventory_service.order_view(
        session, order.id, {line.id: line.line_no for line in lines}
    )
    extra = dict([await part(session, order) for part in SNAPSHOT_PARTS])
    return OrderSnapshot(order, lines, holds, inventory, extra)
