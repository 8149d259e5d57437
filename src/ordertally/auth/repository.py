"""Every query on API keys and the auth revision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.models import ApiKey, AuthRevision
from ordertally.core.db import upsert_insert


async def add(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store a hashed key; returns its id."""
    result = await session.execute(insert(ApiKey).values(**values).returning(ApiKey.id))
    return int(result.scalar_one())


async def by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """An unrevoked key by its hash."""
    return await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def by_id(session: AsyncSession, key_id: int) -> ApiKey | None:
    """A key by its id, revoked or not."""
    return await session.get(ApiKey, key_id)


async def all_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first."""
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.id))).all())


async def revoke(session: AsyncSession, key_id: int, at: datetime) -> bool:
    """Mark a key revoked; False when it was unknown or already revoked."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def bump_revision(session: AsyncSession) -> None:
    """Move the auth revision on (creating its row if needed)."""
    statement = upsert_insert(session, AuthRevision).values(id=1, revision=1)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"revision": AuthRevision.revision + 1}
        )
    )


async def revision(session: AsyncSession) -> int:
    """The current auth revision (0 before any revocation)."""
    value = await session.scalar(select(AuthRevision.revision).where(AuthRevision.id == 1))
    return int(value or 0)
