"""The search load generator, run in its own process: `python -m bench.search_load` reads a JSON
config on stdin and prints one JSON result on stdout.

It sends `GET /api/v1/search?q=…` over raw keep-alive HTTP/1.1 connections
(`bench.loadgen.Connection`: prepared request bytes, responses read by Content-Length), so the
client costs a few tens of microseconds per request and leaves the CPU to the server; being
another process, it never shares the server's interpreter or the bench's.

Two modes, one connection per searcher, the manifest's queries in turn:
- closed: each searcher sends its next query as soon as the last one is answered (the most the
  server can take; with N searchers, latency ≈ N / throughput);
- paced: a person's pace, an open model: searcher i sends its k-th query at
  start + (i / N + k) * think, whatever happened before; latency runs from that scheduled time,
  so a slow answer is also charged to the queries it delayed (no coordinated omission).
Requests answered during the first `warmup` seconds are not measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any

from bench import cpu
from bench.loadgen import Connection, HttpError, percentile

TIMEOUT = 30.0


def request_bytes(host: str, port: int, key: str, q: str, limit: int) -> bytes:
    """One prepared search request."""
    query = urllib.parse.urlencode({"q": q, "limit": limit})
    return (
        f"GET /api/v1/search?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open the connections, run one mode for warmup + duration seconds, close them."""
    host, port, clients = cfg["host"], cfg["port"], cfg["clients"]
    requests = [
        request_bytes(host, port, cfg["key"], q, cfg.get("limit", 20)) for q in cfg["queries"]
    ]
    conns = [Connection(host, port) for _ in range(clients)]
    for conn in conns:
        # One at a time, a little apart, so the API processes share the connections.
        await conn.connect()
        await asyncio.sleep(0.005)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    samples: list[str] = []
    start = time.perf_counter() + 0.05
    measure_from = start + cfg["warmup"]
    stop_at = measure_from + cfg["duration"]
    think = cfg.get("think", 0.0)

    async def one(conn: Connection, request: bytes, ref: float) -> None:
        try:
            status, body = await asyncio.wait_for(conn.send(request), TIMEOUT)
            code = str(status)
        except (OSError, HttpError, TimeoutError) as exc:
            conn.close()
            code, body = "conn_error", f"{type(exc).__name__}: {exc}".encode()
        done = time.perf_counter()
        measured = ref >= measure_from if think else measure_from <= done <= stop_at
        if not measured:
            return
        statuses[code] = statuses.get(code, 0) + 1
        if code == "200":
            latencies.append(done - ref)
        elif len(samples) < 5:
            samples.append(f"{code}: {body[:300].decode(errors='replace')}")

    async def closed(n: int, conn: Connection) -> None:
        i = n
        while (t0 := time.perf_counter()) < stop_at:
            await one(conn, requests[i % len(requests)], t0)
            i += clients

    async def paced(n: int, conn: Connection) -> None:
        k = 0
        while (scheduled := start + (n / clients + k) * think) < stop_at:
            wait = scheduled - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await one(conn, requests[(n + k * clients) % len(requests)], scheduled)
            k += 1

    loop = paced if think else closed
    tasks = [asyncio.ensure_future(loop(n, c)) for n, c in enumerate(conns)]
    await asyncio.sleep(max(measure_from - time.perf_counter(), 0))
    before = cpu.snapshot(cfg.get("server_pid"), cfg.get("pg_database"))
    await asyncio.sleep(max(stop_at - time.perf_counter(), 0))
    after = cpu.snapshot(cfg.get("server_pid"), cfg.get("pg_database"))
    _, pending = await asyncio.wait(tasks, timeout=TIMEOUT)
    for task in pending:
        task.cancel()
    for conn in conns:
        conn.close()
    ordered = sorted(latencies)
    ms = 1000
    return {
        "mode": "paced" if think else "closed",
        "clients": clients,
        "think_s": think or None,
        "duration_s": cfg["duration"],
        "requests": len(ordered),
        "rps": round(len(ordered) / cfg["duration"], 1),
        "p50_ms": round(ms * percentile(ordered, 0.50), 2),
        "p95_ms": round(ms * percentile(ordered, 0.95), 2),
        "p99_ms": round(ms * percentile(ordered, 0.99), 2),
        "max_ms": round(ms * (ordered[-1] if ordered else 0.0), 2),
        "errors": sum(n for code, n in statuses.items() if code != "200"),
        "error_samples": samples,
        "cpu_percent": cpu.usage(before, after),
    }


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.stdout.write(json.dumps(runner(run(cfg))) + "\n")


if __name__ == "__main__":
    main()
