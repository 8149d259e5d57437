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

from ordertally.core import outbound
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.events import dispatcher, relay
from ordertally.jobs import scheduler

log = logging.getLogger(__name__)


def worker_id() -> str:
    """host:pid, stored on the job slots a worker claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Loop until `stop` is set: drain due events, run due jobs, sleep when idle (the
    domains are wired by the caller)."""
    me = worker_id()
    last_tick = 0.0
    loop = asyncio.get_running_loop()
    log.info("worker %s started", me)
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
    await scheduler.stop_background()
    await relay.close()
    await outbound.close_all()
    log.info("worker %s stopped", me)
