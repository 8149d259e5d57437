"""The worker loop: dispatch the outbox and run periodic jobs until stopped.

`ordertally worker` runs it as a process; `ordertally serve` runs it inside the API process
(embedded mode) unless `--no-worker`. Both wire the domains first
(`ordertally.domains.register_all`), so the consumers and jobs it runs are the same list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Collection

from ordertally.core import outbound
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.events import dispatcher, relay
from ordertally.jobs import scheduler
from ordertally.jobs.lanes import LANES

log = logging.getLogger(__name__)


def worker_id() -> str:
    """host:pid, stored on the job slots a worker claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    db: Database,
    settings: Settings,
    stop: asyncio.Event,
    *,
    lanes: Collection[str] | None = None,
    dispatch: bool = True,
) -> None:
    """Loop until `stop` is set: drain due events, run due jobs, sleep when idle, and run the
    registered lanes beside (the domains are wired by the caller). `lanes`: which (None:
    every one); `dispatch=False`: the lanes only, no dispatcher and no jobs."""
    me = worker_id()
    unknown = sorted(set(lanes or ()) - set(LANES))
    if unknown:
        raise ValueError(f"no such lane: {', '.join(unknown)} (known: {', '.join(sorted(LANES))})")
    running = [
        asyncio.create_task(LANES[name](db, settings, stop), name=f"lane-{name}")
        for name in sorted(LANES if lanes is None else set(lanes))
    ]
    log.info("worker %s started (lanes: %s)", me, ", ".join(t.get_name() for t in running))
    try:
        if dispatch:
            await _dispatch_loop(db, settings, stop, me)
        else:
            await stop.wait()
    finally:
        stop.set()
        for task in running:
            with contextlib.suppress(Exception):
                await task
    if dispatch:
        await scheduler.stop_background()
    await relay.close()
    await outbound.close_all()
    log.info("worker %s stopped", me)


async def _dispatch_loop(db: Database, settings: Settings, stop: asyncio.Event, me: str) -> None:
    last_tick = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        busy = False
        try:
            batch = await dispatcher.dispatch_batch(db, settings)
            busy = batch.claimed >= settings.worker_batch_size
            if loop.time() - last_tick >= 1.0:
                last_tick = loop.time()
                await scheduler.run_due(db, me)
        except Exception:
            log.exception("worker iteration failed; retrying")
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.worker_poll_seconds)
