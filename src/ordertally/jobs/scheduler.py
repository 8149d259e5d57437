"""Periodic jobs: each tick claims its (job, slot) row, so a tick runs once however many
workers run. Two kinds of job:

- `periodic`: the handler gets a session; the claim and the job's work share one transaction.
  A crash frees the slot for another worker; a failure rolls the work back and is recorded on
  the slot in a transaction of its own.
- `periodic_outside`: for a job that asks another system (payment providers, carriers,
  notification channels) and so must not hold a transaction while it waits. The handler gets
  the `Database`; the claim commits first and the job opens its own short transactions (claim
  its rows, call outside, record each answer). A crash leaves the slot claimed but unfinished;
  the next slot runs the job again, so such jobs pick their work from durable state (rows due,
  leases that end), never from the slot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.jobs import repository

log = logging.getLogger(__name__)

JobHandler = Callable[[AsyncSession, datetime], Awaitable[dict[str, Any]]]
DbJobHandler = Callable[[Database, datetime], Awaitable[dict[str, Any]]]

JOB_RUNS = Counter("ordertally_job_runs_total", "Periodic job ticks by outcome", ["job", "outcome"])


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    name: str
    every_seconds: int
    handler: JobHandler | None = None
    db_handler: DbJobHandler | None = None


JOBS: dict[str, PeriodicJob] = {}
# What a worker stops when it stops: background loops a job started in this process (the
# notification sender), each an async callable of no argument, registered by its domain.
ON_STOP: list[Callable[[], Awaitable[None]]] = []


def on_worker_stop(stopper: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """Register `stopper` to be awaited when this process's worker loop stops."""
    if stopper not in ON_STOP:
        ON_STOP.append(stopper)
    return stopper


async def stop_background() -> None:
    """Await every registered stopper (a failing one is logged; the others still run)."""
    for stopper in ON_STOP:
        try:
            await stopper()
        except Exception:
            log.exception("stopping %r failed", stopper)


def periodic(name: str, every_seconds: int) -> Callable[[JobHandler], JobHandler]:
    """Register a job that runs once per period of `every_seconds`."""

    def register(handler: JobHandler) -> JobHandler:
        JOBS[name] = PeriodicJob(name, every_seconds, handler)
        return handler

    return register


def periodic_outside(name: str, every_seconds: int) -> Callable[[DbJobHandler], DbJobHandler]:
    """Register a job that runs once per period and opens its own transactions."""

    def register(handler: DbJobHandler) -> DbJobHandler:
        JOBS[name] = PeriodicJob(name, every_seconds, db_handler=handler)
        return handler

    return register


def slot_of(at: datetime, every_seconds: int) -> str:
    """The period a moment falls in, as the start of that period in epoch seconds."""
    start = int(at.timestamp()) // every_seconds * every_seconds
    return str(start)


async def run_tick(db: Database, job: PeriodicJob, worker_id: str) -> dict[str, Any] | None:
    """Run one job for the current slot if no worker has; returns its result or None."""
    now = clock.now()
    slot = slot_of(now, job.every_seconds)
    try:
        result: dict[str, Any] | None = None
        if job.db_handler is not None:
            async with db.transaction() as session:
                claimed = await repository.claim_slot(session, job.name, slot, worker_id, now)
            if claimed:
                result = await job.db_handler(db, now)
                async with db.transaction() as session:
                    await repository.finish_slot(session, job.name, slot, clock.now(), result)
        else:
            assert job.handler is not None
            async with db.transaction() as session:
                claimed = await repository.claim_slot(session, job.name, slot, worker_id, now)
                if claimed:
                    result = await job.handler(session, now)
                    await repository.finish_slot(session, job.name, slot, clock.now(), result)
    except Exception as exc:
        log.exception("job %s slot %s failed", job.name, slot)
        async with db.transaction() as session:
            # A job with its own transactions claimed its slot already; any other job's claim
            # rolled back with its work and is taken again to record the failure.
            if job.db_handler is not None or await repository.claim_slot(
                session, job.name, slot, worker_id, now
            ):
                await repository.finish_slot(
                    session, job.name, slot, clock.now(), None, f"{type(exc).__name__}: {exc}"
                )
        JOB_RUNS.labels(job.name, "failed").inc()
        return None
    # Counted once the transaction that recorded the tick has committed.
    JOB_RUNS.labels(job.name, "ran" if claimed else "skipped").inc()
    return result


async def run_due(db: Database, worker_id: str) -> dict[str, dict[str, Any]]:
    """Run every registered job whose current slot is unclaimed."""
    results: dict[str, dict[str, Any]] = {}
    for job in list(JOBS.values()):
        result = await run_tick(db, job, worker_id)
        if result is not None:
            results[job.name] = result
    return results
