"""Group commit for a process's concurrent requests of one kind (ADR 0022, ADR 0049).

Requests that arrive while a batch is in the database wait and go together in the next one, so
a busy process writes many of them per transaction (one WAL flush, one lock on each hot row,
set-based statements) instead of one each. An idle process starts a batch at once, so a lone
request waits for nothing. A batch that fails for any reason is not retried as a batch: each of
its requests is answered None and runs alone on its caller's own path, with its own answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """`submit(item)` waits for the batch `item` goes in; `run(items)` writes a batch and
    returns one result per item (None: that item runs alone). `on_batch(size)` observes each
    batch's size; `on_alone(reason, count)` counts the items sent back to run alone, by reason
    ("error", or what `classify` names the exception); `on_timing(queued, ran)` observes, per
    batch, how long each of its items waited in the queue before the batch started and how
    long the batch ran (seconds)."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R | None]]],
        max_batch: int,
        *,
        on_batch: Callable[[int], None] = lambda size: None,
        on_alone: Callable[[str, int], None] = lambda reason, count: None,
        classify: Callable[[Exception], str | None] = lambda exc: None,
        on_timing: Callable[[list[float], float], None] | None = None,
    ) -> None:
        self._run = run
        self._max = max_batch
        self._on_batch = on_batch
        self._on_alone = on_alone
        self._classify = classify
        self._on_timing = on_timing
        self._queue: list[tuple[T, asyncio.Future[R | None]]] = []
        self._queued_at: list[float] = []  # when each queued item came (with on_timing)
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R | None:
        """The item's result, or None: run this item on the one-at-a-time path."""
        future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._on_timing is not None:
            self._queued_at.append(time.perf_counter())
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                self._on_batch(len(batch))
                started = 0.0
                if self._on_timing is not None:
                    started = time.perf_counter()
                    queued = [started - at for at in self._queued_at[: self._max]]
                    del self._queued_at[: self._max]
                try:
                    results = await self._run([item for item, _ in batch])
                    self._on_alone("unusual", results.count(None))
                except Exception as exc:  # every item of it then runs alone
                    reason = self._classify(exc)
                    if reason is None:
                        reason = "error"
                        log.info("batch of %d fell back to one by one: %r", len(batch), exc)
                    self._on_alone(reason, len(batch))
                    results = [None] * len(batch)
                except BaseException:
                    for _, future in batch + self._queue:
                        if not future.done():
                            future.set_exception(asyncio.CancelledError())
                    self._queue.clear()
                    self._queued_at.clear()
                    raise
                if self._on_timing is not None:
                    self._on_timing(queued, time.perf_counter() - started)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its client may have gone; the write stands
                        future.set_result(result)
        finally:
            self._task = None
