"""The workbench's periodic work: the SLA clock and the batch runner, each opening its own
short transactions (no message is sent inside one: notify's sender does that)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordertally.casework import batch, sla
from ordertally.core.db import Database
from ordertally.jobs.scheduler import periodic_outside


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
