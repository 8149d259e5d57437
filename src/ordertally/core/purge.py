"""Purges of tables that would otherwise grow without bound (outbox events, dedupe rows,
idempotency keys, duplicate-check fingerprints): rows go by chunks, each in its own short
transaction that never holds hot rows long, with a bound on chunks per run so that a backlog
is worked off over several runs instead of one long one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database


async def in_chunks(
    db: Database,
    purge: Callable[[AsyncSession, int], Awaitable[int]],
    chunk: int,
    chunks: int,
) -> int:
    """Run `purge(session, chunk)` in its own transaction until a chunk comes back short or
    `chunks` chunks went; how many rows in all."""
    purged = 0
    for _ in range(chunks):
        async with db.transaction() as session:
            deleted = await purge(session, chunk)
        purged += deleted
        if deleted < chunk:
            break
    return purged
