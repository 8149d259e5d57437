"""Payment opening as the drill makes it, alone: `python -m bench.payment_opening [--orders N]
[--runs R] [--concurrency C]`.

Per run: a scratch PostgreSQL database, the payment simulator (`ordertally paysim serve`, both
providers, signed answers) and `ordertally serve` (one process) configured with its keys; N
orders created through the API, and 20 more opened as a warm-up (not timed); then the timed
part: one `POST /api/v1/orders/{no}/payments` per order with an Idempotency-Key, alternating
WeChat Pay and Alipay, C at a time over keep-alive connections. Reported: openings per second,
and CPU per opening (read from /proc: run it on the database's machine) of the API process, of
PostgreSQL's processes for the database and of the simulator. Issue 21: payment opening was a
third of the drill's API CPU. Traffic goes to 127.0.0.1 only; every process started is stopped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cpu, payload
from bench.drill.__main__ import _wait_port
from bench.server import Process, Server, free_port, scratch_database

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
# Openings made before the timed part (first connections, the providers' HTTP clients).
WARMUP = 20


async def _open_all(base: str, key: str, order_nos: list[str], concurrency: int) -> list[int]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    queue = list(enumerate(order_nos))
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def lane() -> None:
            while queue:
                n, order_no = queue.pop()
                response = await client.post(
                    f"/api/v1/orders/{order_no}/payments",
                    json={"provider": "wechatpay" if n % 2 else "alipay"},
                    headers={"Idempotency-Key": f"open-{order_no}"},
                )
                statuses.append(response.status_code)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return statuses


def _one_run(pg_url: str, orders: int, concurrency: int) -> dict[str, Any]:
    from ordertally.payments.simulator import keys as sim_keys

    port = free_port()
    keys_dir = Path(tempfile.mkdtemp(prefix="ordertally-opening-keys-"))
    keys = sim_keys.generate(keys_dir, f"http://127.0.0.1:{port}")
    with scratch_database("pg", pg_url, {}) as db:
        db.env.update(keys.settings_env())
        sim = Process(
            db, "paysim", "serve", "--keys", str(keys_dir), "--port", str(port), name="ps"
        )
        server = Server(db, workers=1)
        try:
            sim.start()
            _wait_port(port)
            server.start()
            server.seed_stock(1)
            order_nos = []
            for n in range(orders + WARMUP):
                status, doc = server.request(
                    "POST", "/api/v1/orders", json.loads(payload.order_body(n))
                )
                if status != 201:
                    raise RuntimeError(f"order creation answered {status}: {doc}")
                order_nos.append(doc["order_no"])
            base = f"http://127.0.0.1:{server.port}"
            asyncio.run(_open_all(base, db.api_key, order_nos[orders:], 1))
            before = (
                cpu.tree_seconds(server.pid),
                cpu.postgres_seconds(db.pg_name or ""),
                cpu.tree_seconds(sim.pid),
            )
            t0 = time.perf_counter()
            statuses = asyncio.run(_open_all(base, db.api_key, order_nos[:orders], concurrency))
            seconds = time.perf_counter() - t0
            after = (
                cpu.tree_seconds(server.pid),
                cpu.postgres_seconds(db.pg_name or ""),
                cpu.tree_seconds(sim.pid),
            )
        finally:
            server.stop()
            sim.stop()
    if statuses.count(201) != orders:
        raise RuntimeError(f"not every opening succeeded: {sorted(set(statuses))}")
    api, pg, simulator = (
        1000 * ((a or 0) - (b or 0)) / orders for a, b in zip(after, before, strict=True)
    )
    return {
        "openings": orders,
        "seconds": round(seconds, 2),
        "per_s": round(orders / seconds, 1),
        "api_cpu_ms": round(api, 3),
        "postgres_cpu_ms": round(pg, 3),
        "simulator_cpu_ms": round(simulator, 3),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", default=os.environ.get("ORDERTALLY_TEST_PG_URL", DEFAULT_PG_URL))
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        figures = _one_run(args.url, args.orders, args.concurrency)
        print(json.dumps({"run": n + 1, **figures}))
        runs.append(figures)
    keys = ("per_s", "api_cpu_ms", "postgres_cpu_ms", "simulator_cpu_ms")
    print("median", json.dumps({k: statistics.median(r[k] for r in runs) for k in keys}))


if __name__ == "__main__":
    main()
