"""Periodic jobs of search: the dictionary watcher."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.jobs.scheduler import periodic
from ordertally.search import service


@periodic("search_catalog_words", every_seconds=5)
async def search_catalog_words(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Queue the re-indexing of the orders whose segmentation the catalogue's new words
    change (one read of two rows when nothing is new)."""
    return await service.watch_catalog_words(session)
