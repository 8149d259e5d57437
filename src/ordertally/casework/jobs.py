"""The workbench's periodic work: the SLA clock and the batch runner, each opening its own
short transactions (no message is sent inside one: notify's sender does that), and the fold of
the case count ledger (one short transaction of its own)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.casework import batch, sla
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.jobs.scheduler import periodic, periodic_outside


@periodic_outside("casework_sla", every_seconds=60)
async def casework_sla(db: Database, now: datetime) -> dict[str, Any]:
    """Announce new cases, warn, mark breaches and escalate, each once per case."""
    return await sla.tick(db, now)


@periodic_outside("casework_batches", every_seconds=5)
async def casework_batches(db: Database, now: datetime) -> dict[str, Any]:
    """Run confirmed batch actions (and resume interrupted ones)."""
    async with db.transaction(write=False) as session:
        ids = await batch.queued(session)
    return {str(i): await batch.run(db, i) for i in ids}


@periodic("case_counts_fold", every_seconds=30)
async def case_counts_fold(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Fold the case count ledger, so the workbench's counts stay a sum over a few rows."""
    return {"folded": await exceptions_service.fold_case_counts(session)}
