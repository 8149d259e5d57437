"""The sender loop: one per worker process, sending rounds back to back while messages are due.

The periodic job `notify_send_due` (every 5 s, once per slot across the workers) starts the loop
in the worker that ran the tick when none runs there. The loop sends a round (service.send_due:
claim a batch with FOR UPDATE SKIP LOCKED on PostgreSQL, send outside any transaction, record in
one write), starts the next at once when the round was full, polls every POLL_SECONDS with a
read while work trickles in, and ends after LINGER_SECONDS with nothing due; the next tick
starts it again. Two workers whose ticks started a loop each share the due rows through the
row locks; on SQLite the single writer serialises their claims. A round's rows are leased, so a
loop that dies (a crash, the worker stopping mid-round) loses nothing: its rows come back when
the lease runs out (docs/adr/0018-notifications.md, docs/adr/0042-notification-sender-loop.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.notify import service
from ordertally.notify.service import SendResult

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
LINGER_SECONDS = 30.0
FAILED_ROUND_PAUSE_SECONDS = 1.0

_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[SendResult]] = (
    weakref.WeakKeyDictionary()
)


def _add(total: SendResult, one: SendResult) -> None:
    total.claimed += one.claimed
    total.sent += one.sent
    total.retried += one.retried
    total.dead += one.dead
    total.skipped += one.skipped


async def run(
    db: Database,
    settings: Settings,
    *,
    linger_seconds: float = LINGER_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> SendResult:
    """Send rounds until nothing has been due for `linger_seconds`; returns the totals."""
    total = SendResult()
    idle_since = time.monotonic()
    while True:
        try:
            if await service.any_due(db, clock.now()):
                result = await service.send_due(db, settings=settings)
            else:
                result = SendResult()
        except Exception:  # a failed round (database gone for a moment) is tried again
            log.exception("notification sender round failed")
            await asyncio.sleep(FAILED_ROUND_PAUSE_SECONDS)
            result = SendResult()
        _add(total, result)
        if result.claimed:
            idle_since = time.monotonic()
            if result.claimed >= settings.notify_send_batch:
                continue
        elif time.monotonic() - idle_since >= linger_seconds:
            return total
        await asyncio.sleep(poll_seconds)


def ensure_running(db: Database, settings: Settings) -> bool:
    """Start this process's sender loop unless it runs; True when this call started it."""
    loop = asyncio.get_running_loop()
    task = _LOOPS.get(loop)
    if task is not None and not task.done():
        return False
    _LOOPS[loop] = loop.create_task(run(db, settings), name="notify-sender")
    return True


def running() -> bool:
    """Whether this process's sender loop runs."""
    task = _LOOPS.get(asyncio.get_running_loop())
    return task is not None and not task.done()


async def stop() -> None:
    """Stop this process's sender loop (its round in flight is abandoned: leased, not lost)."""
    task = _LOOPS.pop(asyncio.get_running_loop(), None)
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
