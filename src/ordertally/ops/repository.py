"""The read-only health view: queries `ordertally doctor` runs across domains' tables. Nothing
here writes; each domain's own repository keeps the queries its use cases need."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.exceptions.models import ExceptionCase
from ordertally.inventory.models import Reservation
from ordertally.orders.models import OrderLine, SalesOrder

# Orders whose payment arrived and whose goods have not left: their units must be reserved.
_NEEDS_STOCK = ("paid", "allocated")


async def ping(session: AsyncSession) -> None:
    """A round trip to the database (raises when it is unreachable)."""
    await session.execute(text("SELECT 1"))


def _unaccounted(now: datetime) -> ColumnElement[bool]:
    """A paid or allocated order with a line its live reservations do not cover and no open
    hold explaining why."""
    live = select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
        Reservation.order_id == OrderLine.order_id,
        Reservation.order_line_id == OrderLine.id,
        or_(
            Reservation.state.in_(("committed", "consumed")),
            and_(
                Reservation.state == "held",
                or_(Reservation.expires_at.is_(None), Reservation.expires_at > now),
            ),
        ),
    )
    uncovered = select(OrderLine.id).where(
        OrderLine.order_id == SalesOrder.id, OrderLine.quantity > live.scalar_subquery()
    )
    held = select(ExceptionCase.id).where(
        ExceptionCase.order_id == SalesOrder.id,
        ExceptionCase.status == "open",
        ExceptionCase.blocking.is_(True),
    )
    return and_(SalesOrder.status.in_(_NEEDS_STOCK), uncovered.exists(), ~held.exists())


async def unreserved_orders(
    session: AsyncSession, now: datetime, sample: int
) -> tuple[int, list[str]]:
    """Paid or allocated orders with neither live reservations for their lines nor an open
    hold: their count and the numbers of the first `sample` of them."""
    where = _unaccounted(now)
    count = await session.scalar(select(func.count()).select_from(SalesOrder).where(where))
    numbers = await session.scalars(
        select(SalesOrder.order_no).where(where).order_by(SalesOrder.id).limit(sample)
    )
    return int(count or 0), list(numbers.all())
