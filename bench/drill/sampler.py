"""Every second: the queues' lag (outbox pending, payment inbox backlog, channel webhook backlog,
notifications waiting) read from the database, and the CPU each process used (bench/cpu.py).
Five times a second during the load: what the database's busy backends wait on, by process
(`application_name`), which says whether a slow request waits on a lock, on the disk or on its
own client holding a transaction open (`Client:ClientRead` in a transaction)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from bench import cpu

LAG_SQL = """
SELECT
  (SELECT count(*) FROM outbox WHERE status = 'pending') AS outbox_pending,
  (SELECT count(*) FROM payment_notification WHERE outcome = 'pending') AS payment_inbox,
  (SELECT count(*) FROM channel_webhook WHERE status = 'pending') AS channel_webhooks,
  (SELECT count(*) FROM notification WHERE status IN ('pending', 'failed')) AS notify_waiting,
  (SELECT count(*) FROM shipment WHERE waybill_no IS NULL) AS shipments_without_waybill
"""

WAITS_SQL = r"""
SELECT application_name AS process,
       CASE WHEN state = 'active' AND wait_event_type IS NULL THEN 'running'
            ELSE state || ' / ' || coalesce(wait_event_type || ':' || wait_event, 'running')
       END AS wait,
       left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement,
       count(*) AS backends
FROM pg_stat_activity
WHERE datname = $1 AND state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()
GROUP BY 1, 2, 3
"""


@dataclass
class Sampler:
    """Samples lag and CPU once a second until stopped."""

    pool: Any  # asyncpg pool on the drill's database
    processes: dict[str, int]  # name -> pid (a process tree each)
    pg_database: str
    start: float
    lag: list[dict[str, float]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    waits: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    wait_samples: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _waits_stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _cpu_now(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, pid in self.processes.items():
            used = cpu.tree_seconds(pid)
            if used is not None:
                seconds[name] = used
        seconds["postgres"] = cpu.postgres_seconds(self.pg_database)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        seconds["drill"] = usage.ru_utime + usage.ru_stime
        return seconds

    async def lag_now(self) -> dict[str, int]:
        """The queues right now."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(LAG_SQL)
        return {k: int(v) for k, v in dict(row).items()}

    async def run(self) -> None:
        """Sample until `stop()`."""
        previous, before = self._cpu_now(), time.perf_counter()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)
            now = time.perf_counter()
            current = self._cpu_now()
            wall = max(now - before, 1e-6)
            point: dict[str, float] = {"t": round(now - self.start, 2)}
            for name, used in current.items():
                if name in previous:
                    point[name] = round(100 * (used - previous[name]) / wall, 1)
            self.cpu.append(point)
            previous, before = current, now
            lag = await self.lag_now()
            self.lag.append({"t": round(time.perf_counter() - self.start, 2), **lag})

    def stop(self) -> None:
        self._stop.set()
        self._waits_stop.set()

    async def run_waits(self) -> None:
        """Sample the busy backends' waits five times a second until `stop_waits()`."""
        while not self._waits_stop.is_set():
            async with self.pool.acquire() as conn:
                for row in await conn.fetch(WAITS_SQL, self.pg_database):
                    key = (row["process"] or "?", row["wait"], row["statement"] or "")
                    self.waits[key] += int(row["backends"])
            self.wait_samples += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waits_stop.wait(), 0.2)

    def stop_waits(self) -> None:
        self._waits_stop.set()

    def mean_waits(self) -> list[dict[str, Any]]:
        """Backends per process, wait and statement (the one running, or for a backend idle in
        a transaction the last one it ran), averaged over the samples, most first."""
        n = max(self.wait_samples, 1)
        return [
            {"process": process, "wait": wait, "statement": statement, "backends": round(c / n, 2)}
            for (process, wait, statement), c in self.waits.most_common()
            if c / n >= 0.02
        ]
