"""Inventory use cases (catalogue setup for now)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.inventory import repository


async def add_catalogue(
    session: AsyncSession, warehouses: list[dict[str, Any]], skus: list[dict[str, Any]]
) -> None:
    """Create warehouses and SKUs."""
    await repository.add_warehouses(session, warehouses)
    await repository.add_skus(session, skus)


async def has_warehouses(session: AsyncSession) -> bool:
    """Whether any warehouse is set up."""
    return await repository.count_warehouses(session) > 0
