"""Periodic jobs of the channels domain: due pull syncs, stored webhooks left unapplied, and
order files uploaded from the back office."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import callbacks, file_imports, sync
from ordertally.core.db import Database, create_database
from ordertally.jobs.scheduler import periodic, periodic_outside

log = logging.getLogger(__name__)

_TASKS: set[asyncio.Task[None]] = set()
_DB: dict[int, Database] = {}


def _database() -> Database:
    """A Database for sync runs started by the job (one per event loop): the runs commit page
    by page in their own transactions, outside the job's."""
    key = id(asyncio.get_running_loop())
    if key not in _DB:
        _DB[key] = create_database()
    return _DB[key]


async def _run(code: str) -> None:
    try:
        await sync.sync_account(_database(), code)
    except Exception as exc:  # recorded on the account's sync state already
        log.info("scheduled sync of %s did not complete: %s", code, exc)


@periodic("channels_sync_due", every_seconds=30)
async def channels_sync_due(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Start the pulls that are due; each runs in the background with its own transactions."""
    started = []
    for code in await sync.due_accounts(session, now):
        if code in {t.get_name() for t in _TASKS}:
            continue
        task = asyncio.create_task(_run(code), name=code)
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        started.append(code)
    return {"started": started}


@periodic("channels_webhook_sweep", every_seconds=60)
async def channels_webhook_sweep(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Apply webhooks still pending a while after receipt (their event failed repeatedly)."""
    applied = 0
    for receipt_id in await callbacks.pending_receipts(
        session, 200, older_than=now - timedelta(minutes=5)
    ):
        await callbacks.apply_receipt(session, receipt_id)
        applied += 1
    return {"applied": applied}


@periodic("channels_webhook_purge", every_seconds=3600)
async def channels_webhook_purge(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Empty the raw bodies of webhooks applied longer ago than the inbox retention period."""
    return {"purged": await callbacks.purge_bodies(session, now)}


@periodic_outside("channels_file_imports", every_seconds=5)
async def channels_file_imports(db: Database, now: datetime) -> dict[str, Any]:
    """Import the uploaded order files (and run again those whose worker went quiet)."""
    async with db.transaction(write=False) as session:
        ids = await file_imports.to_run(session)
    return {str(i): await file_imports.run(db, i) for i in ids}
