"""Order use cases: reads, the timeout, idempotency keys. Creation lives in
`orders.creation`, status changes in `orders.transitions`, personal data in `orders.contact`.

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.orders import repository
from ordertally.orders.errors import OrderNotFound
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder

# isort: split
# moved; re-exported for callers outside orders until the lead's sweep
from ordertally.orders.contact import PII_ADDRESS as PII_ADDRESS
from ordertally.orders.contact import PII_NAME as PII_NAME
from ordertally.orders.contact import PII_PHONE as PII_PHONE
from ordertally.orders.contact import mask_name as mask_name
from ordertally.orders.contact import reveal_contact as reveal_contact
from ordertally.orders.creation import ORDERS_CREATED as ORDERS_CREATED
from ordertally.orders.creation import create_order as create_order
from ordertally.orders.snapshot import OrderSnapshot as OrderSnapshot
from ordertally.orders.snapshot import load_snapshot as load_snapshot
from ordertally.orders.snapshot import register_snapshot_part as register_snapshot_part
from ordertally.orders.state_machine import Actor as Actor
from ordertally.orders.transitions import TransitionResult as TransitionResult
from ordertally.orders.transitions import transition as transition
from ordertally.orders.transitions import transition_many as transition_many


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


async def by_external_ids(
    session: AsyncSession, channel: str, external_ids: list[str]
) -> dict[str, tuple[int, str]]:
    """external id -> (order id, order number) of a channel's orders with these external ids."""
    rows = await repository.by_external(session, channel, external_ids)
    return {external_id: (order_id, order_no) for external_id, order_id, order_no in rows}


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
