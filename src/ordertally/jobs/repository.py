"""Every query on job_run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import upsert_insert
from ordertally.jobs.models import JobRun


async def claim_slot(
    session: AsyncSession, job_name: str, slot: str, worker_id: str, at: datetime
) -> bool:
    """Insert the (job, slot) row; True only for the one worker whose insert wins."""
    stmt = (
        upsert_insert(session, JobRun)
        .values(job_name=job_name, slot=slot, worker_id=worker_id, started_at=at)
        .on_conflict_do_nothing()
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish_slot(
    session: AsyncSession,
    job_name: str,
    slot: str,
    at: datetime,
    result: dict[str, Any] | None,
    error: str | None = None,
) -> None:
    """Record how a claimed tick ended."""
    await session.execute(
        update(JobRun)
        .where(JobRun.job_name == job_name, JobRun.slot == slot)
        .values(finished_at=at, result=result, error=error)
    )


async def runs_of(session: AsyncSession, job_name: str) -> list[JobRun]:
    """Every recorded run of a job, oldest slot first."""
    rows = await session.scalars(
        select(JobRun).where(JobRun.job_name == job_name).order_by(JobRun.slot)
    )
    return list(rows.all())


async def purge_runs(session: AsyncSession, before: datetime) -> int:
    """Forget job runs started before `before` (a past slot is never claimed again)."""
    result = await session.execute(delete(JobRun).where(JobRun.started_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
