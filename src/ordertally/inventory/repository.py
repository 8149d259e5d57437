"""Every query on warehouses and SKUs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.inventory.models import Sku, Warehouse


async def add_warehouses(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert warehouses."""
    await session.execute(insert(Warehouse), rows)


async def add_skus(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert SKUs."""
    await session.execute(insert(Sku), rows)


async def count_warehouses(session: AsyncSession) -> int:
    """How many warehouses exist."""
    return int(await session.scalar(select(func.count()).select_from(Warehouse)) or 0)
