"""The API process's CPU per created order, measured in one process: the app is called through
ASGI, as uvicorn calls it, by concurrent clients (one process's share of the closed loop: 100 of
200), against a scratch PostgreSQL database seeded like the order bench's. Socket I/O and
uvicorn's HTTP parsing are left out; everything from the app's first middleware to asyncpg is in.

    python -m bench.api_cpu [--orders 4000] [--rounds 5] [--clients 100] [--profile FILE]

Each round reports process CPU (user + system) per order and the part of it spent in the
cyclic garbage collector; `--profile` runs py-spy over one extra round and prints where the
samples fall. Run it alternated with another source tree (PYTHONPATH) and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import payload, profile
from bench.server import Server, scratch_database

PATH = "/api/v1/orders"


class _GcClock:
    """Process CPU spent in the cyclic garbage collector, by generation."""

    def __init__(self) -> None:
        self.spent = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.started = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.process_time()
        else:
            self.spent[info["generation"]] += time.process_time() - self.started
            self.count[info["generation"]] += 1

    def report(self, orders: int) -> str:
        out = ", ".join(
            f"gen{g} {self.count[g]}x {self.spent[g] / orders * 1e6:.1f} us/order" for g in range(3)
        )
        self.spent, self.count = [0.0, 0.0, 0.0], [0, 0, 0]
        return out


class Client:
    """Calls the ASGI app as uvicorn's protocol does: the scope, one body message, a sink."""

    def __init__(self, app: Callable[..., Awaitable[None]], api_key: str, run_id: str) -> None:
        self.app = app
        self.headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"content-type", b"application/json"),
        ]
        self.run_id = run_id
        self.counter = itertools.count()
        self.statuses: dict[int, int] = {}
        self.last_body = b""

    async def one(self) -> None:
        n = next(self.counter)
        body = payload.order_body(n)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 40000 + n % 20000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "headers": [
                *self.headers,
                (b"idempotency-key", f"{self.run_id}-{n}".encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a disconnect never comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.last_body = b"".join(chunks)


async def _round(client: Client, orders: int, clients: int) -> None:
    left = orders

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.one()

    await asyncio.gather(*(loop() for _ in range(clients)))


async def _measure(args: argparse.Namespace, api_key: str) -> list[float]:
    from ordertally.app import create_app
    from ordertally.core.settings import get_settings

    get_settings.cache_clear()
    app = create_app(get_settings())
    client = Client(app, api_key, f"cpu-{os.getpid()}")
    per_order: list[float] = []
    async with app.router.lifespan_context(app):
        await _round(client, args.warmup, args.clients)
        if args.gc_thresholds:
            gc.set_threshold(*map(int, args.gc_thresholds.split(",")))
        gc_time = _GcClock()
        for n in range(args.rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            await _round(client, args.orders, args.clients)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            per_order.append(cpu / args.orders * 1000)
            print(f"  collector: {gc_time.report(args.orders)}", flush=True)
            print(
                f"round {n + 1}: {per_order[-1]:.3f} ms CPU per order, "
                f"{args.orders / wall:,.0f} orders/s wall, statuses {client.statuses}",
                flush=True,
            )
        if args.profile:
            seconds = 4 * args.orders / 700  # the extra round's length, roughly
            spy = await asyncio.create_subprocess_exec(
                *profile.command(os.getpid(), seconds, Path(args.profile), False, native=True),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.5)
            await _round(client, args.orders * 6, args.clients)
            await spy.wait()
    if client.statuses.keys() != {201}:
        raise SystemExit(f"not every order was created: {client.statuses}")
    return per_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=4000, help="orders per measured round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100, help="concurrent requests")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--profile", help="py-spy collapsed stacks of one extra round to FILE")
    parser.add_argument(
        "--gc-thresholds", help="gc.set_threshold after the warm-up, e.g. 700,10,10 (CPython's)"
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("ORDERTALLY_TEST_PG_URL", "postgresql+asyncpg://postgres@/postgres"),
    )
    args = parser.parse_args()
    # Several API processes count their metrics through files (`ordertally serve --workers`).
    metrics = tempfile.TemporaryDirectory(prefix="ordertally-api-cpu-")
    with metrics as metrics_dir, scratch_database("pg", args.pg_admin_url, {}) as db:
        with Server(db, workers=1) as server:
            server.seed_stock(args.buckets)
        os.environ.update(db.env)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.chdir(db.data_dir)
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        per_order = asyncio.run(_measure(args, db.api_key))
    if args.profile:
        print(profile.render(profile.analyse(Path(args.profile), top=40)))
    print(
        f"median {statistics.median(per_order):.3f} ms CPU per order "
        f"({', '.join(f'{v:.3f}' for v in per_order)}); python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
