"""Every query on API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.models import ApiKey


async def add(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store a hashed key; returns its id."""
    result = await session.execute(insert(ApiKey).values(**values).returning(ApiKey.id))
    return int(result.scalar_one())


async def by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """An unrevoked key by its hash."""
    return await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
