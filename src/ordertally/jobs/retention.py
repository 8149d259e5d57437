"""Retention of the machinery's own tables (issue 21: flat with data): delivered outbox events
after `outbox_retention_days` (0 keeps them), consumers' dedupe rows after
`dedupe_retention_days`, job runs after `job_run_retention_days`. Each tick deletes at most
`CHUNK` rows per table, so a backlog of deletions is worked off over several ticks in short
transactions that never hold the hot rows long. The inboxes, idempotency keys and sessions have
their own purges in their domains."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.jobs import repository
from ordertally.jobs.scheduler import periodic

CHUNK = 20_000


@periodic("machinery_purge", every_seconds=600)
async def machinery_purge(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Delete what the retention settings let go (see the module's docstring)."""
    settings = get_settings()
    result = {
        "dedupe_rows": await events_service.purge_dedupe(
            session, now - timedelta(days=settings.dedupe_retention_days), CHUNK
        ),
        "job_runs": await repository.purge_runs(
            session, now - timedelta(days=settings.job_run_retention_days)
        ),
    }
    if settings.outbox_retention_days:
        result["events"] = await events_service.purge_delivered(
            session, now - timedelta(days=settings.outbox_retention_days), CHUNK
        )
    return result
