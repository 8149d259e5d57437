"""The search lane: the loop that keeps the search index, one per worker process, outside the
outbox chain (ADR 0032, addendum of session 14).

The transactions that publish an event search reads also queue the order (`search_dirty`,
search/consumers.py's publish hook). A lane batch, in one transaction: claim the oldest queued
rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL), take each order's advisory lock without waiting
(an order another lane or a rebuild holds stays queued), index the orders from what every
domain says now (the batched builder), delete the rows claimed, commit. Exactly once in effect:

- a change committed before the claim is seen by the read that follows it (READ COMMITTED:
  each statement reads what was committed before it started);
- a change committed after the claim queued a row the batch did not claim: it stays, and the
  order is indexed again;
- one transaction at a time writes an order's row (the lock), each reading after the previous
  one committed, so an older read never overwrites a newer row;
- a crash rolls the batch back: the rows are still queued.

The loop claims again at once after a batch that found work (batches grow with the backlog),
and when idle reads every `search_lane_poll_seconds` whether anything is queued (one index
probe; no write transaction, so no SQLite write lock, while nothing waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.jobs.lanes import lane
from ordertally.search import repository, service
from ordertally.search.service import LaneBatch

log = logging.getLogger(__name__)

FAILED_BATCH_PAUSE_SECONDS = 1.0
# On SQLite a batch holds the single writer while it builds its rows (~0.5 ms of CPU an order):
# at most this many orders, so a backlog never stops the API's writes for long (the dispatcher
# takes 100 events a batch).
SQLITE_BATCH = 100


async def run_batch(db: Database, limit: int) -> LaneBatch:
    """One lane batch in its own transaction."""
    async with db.transaction() as session:
        return await service.index_dirty(session, limit)


async def any_queued(db: Database) -> bool:
    """Whether an order waits for the lane (a read, outside any write transaction)."""
    async with db.reads() as session:
        return await repository.any_dirty(session)


async def drain(db: Database, limit: int = 500, max_batches: int = 100_000) -> int:
    """Run batches until nothing is queued (tests, benches); returns the orders indexed."""
    indexed = 0
    for _ in range(max_batches):
        batch = await run_batch(db, limit)
        indexed += batch.indexed
        if batch.claimed == 0:
            break
    return indexed


@lane("search")
async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Index queued orders until `stop` is set."""
    limit = (
        min(settings.search_lane_batch, SQLITE_BATCH)
        if db.is_sqlite
        else settings.search_lane_batch
    )
    poll = settings.search_lane_poll_seconds
    busy = False
    while not stop.is_set():
        try:
            if busy or await any_queued(db):
                batch = await run_batch(db, limit)
                # Again at once while it finds work it can do; an order another lane holds is
                # not retried in a tight loop.
                busy = batch.indexed + batch.gone > 0
            else:
                busy = False
        except Exception:
            log.exception("search lane batch failed; retrying")
            busy = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FAILED_BATCH_PAUSE_SECONDS)
            continue
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)
