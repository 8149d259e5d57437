"""The load generator, run in its own process: a raw asyncio HTTP/1.1 keep-alive client.

`python -m bench.loadgen` reads a JSON config on stdin and prints one JSON result on stdout.
Requests are hand-built bytes and responses are parsed from the status line and
Content-Length, so the client costs a few tens of microseconds per order and leaves the CPU to
the server under test.

Two modes:
- closed: `clients` connections, each sends its next order when the previous one is answered
  (the maximum throughput);
- open: orders are scheduled at a fixed `rate` and spread over the connections; latency runs
  from the scheduled send time, so a stalled server is charged for the orders it kept waiting
  (no coordinated omission).
Orders answered during the first `warmup` seconds are not measured.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import cpu
from bench.payload import order_body

PATH = "/api/v1/orders"
TIMEOUT = 30.0
MAX_ERROR_SAMPLES = 5


class HttpError(Exception):
    """The connection failed or the server answered something that is not HTTP/1.1."""


# Seconds a kept-alive connection may sit idle before it is opened anew: below uvicorn's
# `timeout_keep_alive` (5 s), as `core/outbound.py` keeps its own, so a request is never written
# on a connection the server is closing (that race answers with a connection reset).
IDLE_EXPIRY_SECONDS = 4.0


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests one at a time, opened
    again when it sat idle longer than the server keeps it."""

    def __init__(self, host: str, port: int, idle_expiry: float = IDLE_EXPIRY_SECONDS) -> None:
        self.host = host
        self.port = port
        self.idle_expiry = idle_expiry
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def expired(self) -> bool:
        """Open, and idle longer than the server keeps it: the next send opens it anew."""
        return self.writer is not None and time.monotonic() - self.last_used > self.idle_expiry

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and read its whole response: (status, body)."""
        if self.expired():
            self.close()
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise HttpError("connection closed before a response") from exc
        if not head.startswith(b"HTTP/1.1 "):
            self.close()
            raise HttpError(f"not an HTTP/1.1 response: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start >= 0:
            end = lower.index(b"\r\n", start + 2)
            body = await self.reader.readexactly(int(head[start + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked()
        else:
            body = b""
        if b"\r\nconnection: close" in lower:
            self.close()
        self.last_used = time.monotonic()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


@dataclass
class Tally:
    """What one run observed. Throughput counts the 201s answered inside the measured window;
    latency covers the requests of that window (closed loop: answered in it; open loop:
    scheduled in it, including those still waiting to be sent when it closed)."""

    measure_from: float = 0.0
    stop_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    unsent_waits: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    sent: int = 0
    ok_in_window: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def record(self, status: str, latency: float, done: float, detail: bytes | str) -> None:
        if status == "201" and self.measure_from <= done <= self.stop_at:
            self.ok_in_window += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "201":
            self.latencies.append(latency)
        elif len(self.error_samples) < MAX_ERROR_SAMPLES:
            text = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            self.error_samples.append(f"{status}: {text[:300]}")


class Requests:
    """Prepared request bytes: fixed head, a unique Idempotency-Key, a body that differs."""

    def __init__(
        self,
        host: str,
        port: int,
        key: str,
        run_id: str,
        bundle_share: float = 0.0,
        first: int = 0,
    ) -> None:
        self.bundle_share = bundle_share
        self.head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {run_id}-"
        ).encode()
        # Request numbers pick the buyer's phone: a run made of several windows (the soak's
        # minutes) starts each window where the last ended, or every window would send the same
        # buyers again and the rules would see a burst of one customer buying one SKU.
        self.counter = itertools.count(first)

    def next(self) -> bytes:
        n = next(self.counter)
        body = order_body(n, self.bundle_share)
        return b"%s%d\r\nContent-Length: %d\r\n\r\n%s" % (self.head, n, len(body), body)


async def _one(conn: Connection, request: bytes, tally: Tally, ref: float, open_loop: bool) -> None:
    """Send one order; `ref` is when it was sent (closed loop) or scheduled (open loop)."""
    try:
        status, body = await asyncio.wait_for(conn.send(request), TIMEOUT)
        code, detail = str(status), body
    except (OSError, HttpError, TimeoutError) as exc:
        conn.close()
        code, detail = "conn_error", f"{type(exc).__name__}: {exc}"
    done = time.perf_counter()
    measured = (
        ref >= tally.measure_from if open_loop else tally.measure_from <= done <= tally.stop_at
    )
    if measured:
        tally.record(code, done - ref, done, detail)
    elif code == "201" and tally.measure_from <= done <= tally.stop_at:
        tally.ok_in_window += 1


def _window(tally: Tally, start: float, cfg: dict[str, Any]) -> None:
    tally.measure_from = start + cfg["warmup"]
    tally.stop_at = tally.measure_from + cfg["duration"]


async def closed_loop(cfg: dict[str, Any], conns: list[Connection], tally: Tally) -> None:
    """Each connection sends its next order as soon as the previous one is answered."""
    requests = Requests(
        cfg["host"],
        cfg["port"],
        cfg["key"],
        cfg["run_id"],
        cfg.get("bundle_share", 0.0),
        cfg.get("first", 0),
    )
    _window(tally, time.perf_counter(), cfg)

    async def client(conn: Connection) -> None:
        while (t0 := time.perf_counter()) < tally.stop_at:
            tally.sent += t0 >= tally.measure_from
            await _one(conn, requests.next(), tally, t0, open_loop=False)

    await _windowed(cfg, [client(c) for c in conns], tally)


async def open_loop(cfg: dict[str, Any], conns: list[Connection], tally: Tally) -> None:
    """Orders scheduled every 1/rate seconds, sent by whichever connection is free. Orders
    still unsent when the window closes (the server fell behind) are not sent; their wait so
    far counts as their latency (a lower bound)."""
    requests = Requests(
        cfg["host"],
        cfg["port"],
        cfg["key"],
        cfg["run_id"],
        cfg.get("bundle_share", 0.0),
        cfg.get("first", 0),
    )
    interval = 1.0 / cfg["rate"]
    start = time.perf_counter() + 0.05
    _window(tally, start, cfg)
    schedule = itertools.count()

    async def client(conn: Connection) -> None:
        while (scheduled := start + next(schedule) * interval) < tally.stop_at:
            now = time.perf_counter()
            if now >= tally.stop_at:
                if scheduled >= tally.measure_from:
                    tally.unsent_waits.append(now - scheduled)
                continue
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            tally.sent += scheduled >= tally.measure_from
            await _one(conn, requests.next(), tally, scheduled, open_loop=True)

    await _windowed(cfg, [client(c) for c in conns], tally)


async def _windowed(cfg: dict[str, Any], clients: list[Any], tally: Tally) -> None:
    """Run the clients, taking CPU snapshots when measurement starts and when it ends."""
    server_pid, pg_database = cfg.get("server_pid"), cfg.get("pg_database")
    tasks = [asyncio.ensure_future(c) for c in clients]
    await asyncio.sleep(max(tally.measure_from - time.perf_counter(), 0))
    before = cpu.snapshot(server_pid, pg_database)
    await asyncio.sleep(max(tally.stop_at - time.perf_counter(), 0))
    after = cpu.snapshot(server_pid, pg_database)
    tally.cpu = cpu.usage(before, after)
    # The last orders were sent before stop_at; wait for their answers (bounded).
    _, pending = await asyncio.wait(tasks, timeout=TIMEOUT)
    for task in pending:
        task.cancel()


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summarise(cfg: dict[str, Any], tally: Tally) -> dict[str, Any]:
    """The run's figures: orders/s, latency percentiles in ms, errors, CPU."""
    seconds = cfg["duration"]
    ordered = sorted(tally.latencies + tally.unsent_waits)
    ok = tally.ok_in_window
    errors = sum(n for status, n in tally.statuses.items() if status != "201")
    return {
        "mode": cfg["mode"],
        "clients": cfg["clients"],
        "rate": cfg.get("rate") if cfg["mode"] == "open" else None,
        "duration_s": seconds,
        "warmup_s": cfg["warmup"],
        "sent": tally.sent,
        "unsent": len(tally.unsent_waits),
        "ok": ok,
        "errors": errors,
        "statuses": tally.statuses,
        "error_samples": tally.error_samples,
        "orders_per_s": round(ok / seconds, 1),
        "latency_ms": {
            "p50": round(1000 * percentile(ordered, 0.50), 2),
            "p90": round(1000 * percentile(ordered, 0.90), 2),
            "p99": round(1000 * percentile(ordered, 0.99), 2),
            "max": round(1000 * (ordered[-1] if ordered else 0.0), 2),
            "mean": round(1000 * (sum(ordered) / len(ordered) if ordered else 0.0), 2),
        },
        "cpu_percent": tally.cpu,
    }


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open the connections, run one mode, close them."""
    conns = [Connection(cfg["host"], cfg["port"]) for _ in range(cfg["clients"])]
    for conn in conns:
        # One at a time, a little apart: with several API processes sharing the listening
        # socket, a burst of connects tends to be accepted by whichever process wakes first.
        await conn.connect()
        await asyncio.sleep(0.005)
    tally = Tally()
    try:
        mode = closed_loop if cfg["mode"] == "closed" else open_loop
        await mode(cfg, conns, tally)
    finally:
        for conn in conns:
            conn.close()
    return summarise(cfg, tally)


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    try:
        import uvloop  # the server's own loop; cheaper than asyncio's for many sockets

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(cfg))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
