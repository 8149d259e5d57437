"""Opening and resolving exception cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.errors import Conflict, NotFound
from ordertally.exceptions import repository
from ordertally.exceptions.models import ExceptionCase


async def open_case(
    session: AsyncSession,
    *,
    order_id: int | None,
    category: str,
    type: str,
    blocking: bool,
    detail: dict[str, Any],
) -> int:
    """Open an exception case (a hold when blocking); returns its id."""
    case = await open_case_record(
        session,
        order_id=order_id,
        category=category,
        type=type,
        blocking=blocking,
        detail=detail,
    )
    return case.id


async def open_case_record(
    session: AsyncSession,
    *,
    order_id: int | None,
    category: str,
    type: str,
    blocking: bool,
    detail: dict[str, Any],
) -> ExceptionCase:
    """Open a case and return it as it now stands (without reading it back)."""
    now = clock.now()
    case_id = await repository.add(
        session,
        order_id=order_id,
        category=category,
        type=type,
        status="open",
        blocking=blocking,
        detail=detail,
        created_at=now,
    )
    return ExceptionCase(
        id=case_id,
        order_id=order_id,
        category=category,
        type=type,
        status="open",
        blocking=blocking,
        detail=detail,
        created_at=now,
    )


async def open_cases(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Open cases of an order."""
    return await repository.open_for_order(session, order_id)


async def has_hold(session: AsyncSession, order_id: int) -> bool:
    """Whether an open blocking case holds the order."""
    return await repository.count_blocking(session, order_id) > 0


async def get_case(session: AsyncSession, case_id: int) -> ExceptionCase:
    """A case by id, or NotFound."""
    case = await repository.get(session, case_id)
    if case is None:
        raise NotFound(f"exception case {case_id} does not exist")
    return case


async def resolve(session: AsyncSession, case_id: int, by: str, resolution: str) -> ExceptionCase:
    """Resolve an open case."""
    case = await get_case(session, case_id)
    if not await repository.resolve(session, case_id, clock.now(), by, resolution):
        raise Conflict(f"exception case {case_id} is not open")
    await session.refresh(case)
    return case


async def orders_with_open_case(session: AsyncSession, case_type: str) -> list[int]:
    """Ids of the orders with an open case of a type."""
    return await repository.orders_with_open_case(session, case_type)


async def open_counts_by_type(session: AsyncSession) -> dict[str, int]:
    """Open cases per type (the dashboard)."""
    return await repository.open_counts_by_type(session)


async def orders_with_open_cases(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """Which of these orders have an open exception case (search's filter)."""
    return await repository.orders_with_open(session, order_ids)
