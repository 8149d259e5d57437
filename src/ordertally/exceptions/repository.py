"""Every query on exception cases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.exceptions.models import ExceptionCase


async def add(session: AsyncSession, **values: Any) -> int:
    """Insert a case; returns its id."""
    result = await session.execute(
        insert(ExceptionCase).values(**values).returning(ExceptionCase.id)
    )
    return int(result.scalar_one())


async def open_for_order(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Open cases of one order."""
    rows = await session.scalars(
        select(ExceptionCase)
        .where(ExceptionCase.order_id == order_id, ExceptionCase.status == "open")
        .order_by(ExceptionCase.id)
    )
    return list(rows.all())


async def count_blocking(session: AsyncSession, order_id: int) -> int:
    """Open holds on an order."""
    return int(
        await session.scalar(
            select(func.count()).where(
                ExceptionCase.order_id == order_id,
                ExceptionCase.status == "open",
                ExceptionCase.blocking.is_(True),
            )
        )
        or 0
    )


async def get(session: AsyncSession, case_id: int) -> ExceptionCase | None:
    """One case by id."""
    return await session.get(ExceptionCase, case_id)


async def resolve(
    session: AsyncSession, case_id: int, at: datetime, by: str, resolution: str
) -> bool:
    """Close an open case; False if it was not open."""
    result = await session.execute(
        update(ExceptionCase)
        .where(ExceptionCase.id == case_id, ExceptionCase.status == "open")
        .values(status="resolved", resolved_at=at, resolved_by=by, resolution=resolution)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def orders_with_open_case(session: AsyncSession, case_type: str) -> list[int]:
    """Ids of the orders with an open case of a type."""
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(
            ExceptionCase.status == "open",
            ExceptionCase.type == case_type,
            ExceptionCase.order_id.is_not(None),
        )
        .distinct()
    )
    return [int(i) for i in rows.all() if i is not None]


async def open_counts_by_type(session: AsyncSession) -> dict[str, int]:
    """Open cases per type."""
    rows = await session.execute(
        select(ExceptionCase.type, func.count())
        .where(ExceptionCase.status == "open")
        .group_by(ExceptionCase.type)
    )
    return {case_type: int(n) for case_type, n in rows.all()}


async def orders_with_open(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """Which of these orders have an open case."""
    if not order_ids:
        return set()
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(ExceptionCase.order_id.in_(order_ids), ExceptionCase.status == "open")
        .distinct()
    )
    return {int(r) for r in rows.all() if r is not None}
