"""`python -m bench.creation_batch`: the group commit's fixed cost per batch, on a shared machine.

The API's creation batch (`orders.api._create_batch`) run in this process, one batch at a time,
over one pooled PostgreSQL connection of a scratch database seeded as `python -m bench` seeds
it (16 buckets per SKU): for each batch size, the statements sent per batch (counted), the
process CPU per batch and per order (`time.process_time`), and the CPU the connection's backend
used (`/proc/<pid>/stat` of `pg_backend_pid()`, PostgreSQL on this machine). Round trips are the
statements plus the driver's prepares (a statement text the connection has not prepared yet)
plus BEGIN and COMMIT: each one wakes PostgreSQL's backend and the event loop. `--keys`: every
request carries an Idempotency-Key, as the HTTP bench's do (the claim and the stored responses).
CPU time is what each side spent, not how long it waited, so the figures hold while other work
shares the cores; run it with main's tree and a branch's through PYTHONPATH, alternated, to
compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable
from typing import Any

from bench import payload
from bench.server import Server, scratch_database

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) a local PostgreSQL backend has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Tracer:
    """The driver's round trips during one call (`trace`): what each was, how long it took
    (ms) and its SQL. The timing wrappers are in place only meanwhile: measured runs pay
    nothing for them."""

    def __init__(self) -> None:
        self.trips: list[tuple[str, float, str]] = []

    async def trace(self, work: Awaitable[Any]) -> None:
        from asyncpg import connection, prepared_stmt, transaction

        patched = [
            (connection.Connection, "prepare", "prepare"),
            (connection.Connection, "executemany", "executemany"),
            (prepared_stmt.PreparedStatement, "fetch", "execute"),
            (transaction.Transaction, "start", "BEGIN"),
            (transaction.Transaction, "commit", "COMMIT"),
        ]
        originals = [getattr(owner, name) for owner, name, _ in patched]
        self.trips = []
        for (owner, name, kind), original in zip(patched, originals, strict=True):
            setattr(owner, name, self._timed(original, kind))
        try:
            await work
        finally:
            for (owner, name, _), original in zip(patched, originals, strict=True):
                setattr(owner, name, original)

    def _timed(self, original: Any, kind: str) -> Any:
        async def timed(obj: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(obj, *args, **kwargs)
            finally:
                sql = getattr(obj, "_query", None) or (args[0] if args else "")
                ms = round((time.perf_counter() - start) * 1000, 3)
                self.trips.append((kind, ms, " ".join(str(sql).split())[:90]))

        return timed


async def measure(
    url: str, sizes: list[int], orders: int, keys: bool, tracer: Tracer | None = None
) -> dict[str, Any]:
    from asyncpg.connection import Connection
    from sqlalchemy import event, text

    from ordertally.core.db import Database
    from ordertally.idempotency import service as idempotency_service
    from ordertally.orders import api
    from ordertally.orders.schemas import OrderCreate
    from ordertally.orders.state_machine import Actor, ActorKind
    from ordertally.search import consumers  # the search queue's publish hook, as in the app

    assert consumers.mark_dirty

    db = Database(url, pool_size=1)
    sent: list[str] = []
    event.listen(
        db.write_engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: sent.append(statement),
    )
    ends: list[str] = []  # BEGIN and COMMIT, each a round trip of its own
    event.listen(db.write_engine.sync_engine, "begin", lambda conn: ends.append("BEGIN"))
    event.listen(db.write_engine.sync_engine, "commit", lambda conn: ends.append("COMMIT"))
    prepares = 0
    prepare = Connection.prepare

    async def counted_prepare(self: Connection, *args: Any, **kwargs: Any) -> Any:
        nonlocal prepares
        prepares += 1
        return await prepare(self, *args, **kwargs)

    Connection.prepare = counted_prepare  # type: ignore[method-assign]
    actor = Actor(ActorKind.API, "bench", "127.0.0.1")
    counter = 0

    def batch(size: int) -> list[Any]:
        nonlocal counter
        requests = []
        for _ in range(size):
            counter += 1
            body = OrderCreate.model_validate_json(payload.order_body(counter))
            req_hash = idempotency_service.request_hash("POST", "/api/v1/orders", body)
            key = f"batch-{os.getpid()}-{counter}" if keys else None
            requests.append(api._Create(body, actor, "ops", key, req_hash))
        return requests

    async with db.transaction(write=False) as session:
        pid = int(await session.scalar(text("SELECT pg_backend_pid()")))
    results: dict[str, Any] = {}
    for size in sizes:
        count = max(3, orders // size)
        for warm in [batch(size) for _ in range(3)]:
            await api._create_batch(db, warm)
        prepared = [batch(size) for _ in range(count)]
        sent.clear()
        ends.clear()
        prepares = 0
        cpu0, pg0, wall0 = time.process_time(), backend_cpu(pid), time.perf_counter()
        created = 0
        for requests in prepared:
            done = await api._create_batch(db, requests)
            created += sum(1 for d in done if d is not None)
        cpu1, pg1, wall1 = time.process_time(), backend_cpu(pid), time.perf_counter()
        if created != count * size:
            raise RuntimeError(f"{count * size - created} orders were left to the one-order path")
        results[str(size)] = {
            "batches": count,
            "statements_per_batch": len(sent) / count,
            "round_trips_per_batch": (len(sent) + prepares + len(ends)) / count,
            "client_ms_per_batch": round((cpu1 - cpu0) / count * 1000, 3),
            "client_ms_per_order": round((cpu1 - cpu0) / (count * size) * 1000, 4),
            "pg_ms_per_batch": round((pg1 - pg0) / count * 1000, 3),
            "pg_ms_per_order": round((pg1 - pg0) / (count * size) * 1000, 4),
            "wall_ms_per_batch": round((wall1 - wall0) / count * 1000, 3),
        }
        if tracer is not None:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await tracer.trace(api._create_batch(db, batch(size)))
            cpu1, wall1 = time.process_time(), time.perf_counter()
            print(
                json.dumps(
                    {
                        "trace": size,
                        "client_ms": round((cpu1 - cpu0) * 1000, 3),
                        "wall_ms": round((wall1 - wall0) * 1000, 3),
                        "trips": tracer.trips,
                    },
                    ensure_ascii=False,
                ),
                flush=True,
            )
    await db.dispose()
    Connection.prepare = prepare  # type: ignore[method-assign]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.creation_batch", description=__doc__)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    parser.add_argument("--sizes", default="1,2,5,50", help="batch sizes, comma-separated")
    parser.add_argument("--orders", type=int, default=600, help="orders measured per size")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per size")
    parser.add_argument("--keys", action="store_true", help="every request with an Idempotency-Key")
    parser.add_argument(
        "--trace", action="store_true", help="print one batch's round trips per size, timed"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with scratch_database("pg", args.pg_url, {}) as db:
        with Server(db, 1) as server:
            server.seed_stock(16)
        os.environ.update(db.env)
        from ordertally.core.settings import reset_settings

        reset_settings()
        for round_no in range(args.rounds):
            tracer = Tracer() if args.trace and round_no == 0 else None
            found = asyncio.run(measure(db.url, sizes, args.orders, args.keys, tracer))
            for size, row in found.items():
                row = {"round": round_no + 1, "size": int(size), "keys": args.keys, **row}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
