"""Retention of the machinery's own tables (issue 21: flat with data): delivered outbox events
after `outbox_retention_days` (0 keeps them), consumers' dedupe rows after
`dedupe_retention_days`, job runs after `job_run_retention_days`. Deletions go by chunks of
`CHUNK` rows, each in its own short transaction that never holds the hot rows long, and at most
`CHUNKS` chunks per table and tick: a tick keeps up with a busy day's events and dedupe rows
(several per order), and a backlog is worked off over several ticks. The inboxes, idempotency
keys and sessions have their own purges in their domains (tests/jobs/test_retention_jobs.py
lists them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.core.purge import in_chunks
from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.jobs import repository
from ordertally.jobs.scheduler import periodic_outside

CHUNK = 20_000
# 20,000 x 50 rows per table every 10 minutes: 144 million a day.
CHUNKS = 50


async def _in_chunks(db: Database, purge: Callable[[AsyncSession, int], Awaitable[int]]) -> int:
    """`core.purge.in_chunks` with this module's CHUNK and CHUNKS."""
    return await in_chunks(db, purge, CHUNK, CHUNKS)


@periodic_outside("machinery_purge", every_seconds=600)
async def machinery_purge(db: Database, now: datetime) -> dict[str, Any]:
    """Delete what the retention settings let go (see the module's docstring)."""
    settings = get_settings()
    dedupe_before = now - timedelta(days=settings.dedupe_retention_days)
    result = {
        "dedupe_rows": await _in_chunks(
            db, lambda session, n: events_service.purge_dedupe(session, dedupe_before, n)
        ),
    }
    async with db.transaction() as session:
        result["job_runs"] = await repository.purge_runs(
            session, now - timedelta(days=settings.job_run_retention_days)
        )
    if settings.outbox_retention_days:
        events_before = now - timedelta(days=settings.outbox_retention_days)
        result["events"] = await _in_chunks(
            db, lambda session, n: events_service.purge_delivered(session, events_before, n)
        )
    return result
