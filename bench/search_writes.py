"""Search on the write path (issue 16): what maintaining the index costs order creation, and
how far the index trails the orders. `python -m bench.search_writes [--db pg|sqlite]`.

1. Writes: the hot-SKU bench (`python -m bench`'s load generator, closed loop) against
   `ordertally serve --no-worker` plus one `ordertally worker` process beside it, as
   production runs them, on the same cores. The worker runs every consumer and the search
   lane (the indexer: `search/lane.py`, fed by the `search.dirty` publish hook; before session
   14 the consumer `search.index_order`), on, or off: the API and the worker are then started
   with this module as a plugin (`ORDERTALLY_PLUGIN_MODULES`), whose `register` drops the hook,
   the lane (and the old consumer), so nothing queues or indexes orders. With
   `--lane-process` the lane runs as a process of its own (`ordertally worker --lane search`,
   the worker `--no-lanes`), and its CPU per order is the indexer's. Runs interleaved
   (off, on, off, on, ...), a fresh worker each run, the outbox drained between runs (the
   drain rate is the worker's own throughput, with and without the indexer). Figure: the
   ratio of the median orders/s, on / off (target ≥ 0.90).
2. Index lag: an open loop at --lag-rates orders/s (the worker on, indexer on). While it
   runs, a reader polls every --poll-ms which orders have their search row (an order's lag
   is the moment a reader first sees its row minus the order's creation time: the event's
   time), until every order of the window is indexed or --drain-timeout passes; beside it the
   lag the index row records (indexed_at - source_at, what `ordertally_search_index_lag_seconds`
   observes). p50/p99 (target p99 ≤ 2 s at 1,000 orders/s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bench.payload import order_body
from bench.server import Database, Process, Server, asyncpg_dsn, scratch_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
INDEXER = "search.index_order"
TARGET_RATIO = 0.90
TARGET_LAG_P99_S = 2.0


def register(app: FastAPI | None) -> None:
    """As a plugin (ORDERTALLY_PLUGIN_MODULES): the process runs without the search indexer
    (no publish hook queueing orders, no lane; before session 14: no indexing consumer)."""
    from ordertally.events import registry

    registry.CONSUMERS.pop(INDEXER, None)
    getattr(registry, "PUBLISH_HOOKS", {}).pop("search.dirty", None)
    try:
        from ordertally.jobs.lanes import LANES
    except ImportError:  # a tree before session 14
        return
    LANES.pop("search", None)


class Conn:
    """One plain connection to the bench's database, for the bench's own reads (`?` markers
    on both databases)."""

    def __init__(self, db: Database) -> None:
        self.kind = db.kind
        self.lane_queue: bool | None = None
        if db.kind == "sqlite":
            import sqlite3

            assert db.sqlite_file is not None
            self.sqlite = sqlite3.connect(db.sqlite_file, check_same_thread=False, timeout=30)
        else:
            import asyncpg

            self.loop = asyncio.new_event_loop()
            self.pg = self.loop.run_until_complete(asyncpg.connect(asyncpg_dsn(db.url)))

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            return list(self.sqlite.execute(sql, params).fetchall())
        n = 0

        def marker(_: str) -> str:
            nonlocal n
            n += 1
            return f"${n}"

        pg_sql = "".join(marker(c) if c == "?" else c for c in sql)
        rows = self.loop.run_until_complete(self.pg.fetch(pg_sql, *params))
        return [tuple(r) for r in rows]

    def close(self) -> None:
        if self.kind == "sqlite":
            self.sqlite.close()
        else:
            self.loop.run_until_complete(self.pg.close())
            self.loop.close()


def epoch(value: Any) -> float:
    """Seconds since the epoch of a UTC timestamp as either database returns it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def pending_events(conn: Conn) -> int:
    """Events not yet delivered, plus the orders queued for the search lane (when the tree has
    the queue)."""
    events = int(conn.fetch("SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0])
    if conn.lane_queue is None:
        table = (
            "SELECT count(*) FROM sqlite_master WHERE name = 'search_dirty'"
            if conn.kind == "sqlite"
            else "SELECT count(*) FROM pg_class WHERE relname = 'search_dirty'"
        )
        conn.lane_queue = bool(conn.fetch(table)[0][0])
    if conn.lane_queue:
        events += int(conn.fetch("SELECT count(*) FROM search_dirty")[0][0])
    return events


def max_order_id(conn: Conn) -> int:
    return int(conn.fetch("SELECT coalesce(max(id), 0) FROM sales_order")[0][0])


class Workers:
    """The worker process, and the search lane's own process when asked for."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes

    def alive(self) -> bool:
        return all(p.alive() for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def log_tail(self) -> str:
        return "\n".join(f"[{p.name}]\n{p.log_tail()}" for p in self.processes)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far, per process name."""
        from bench.cpu import tree_seconds

        return {p.name: tree_seconds(p.pid) or 0.0 for p in self.processes}


def cpu_per_order(before: dict[str, float], after: dict[str, float], orders: int) -> dict[str, Any]:
    """CPU milliseconds per order of each process over a window."""
    return {
        name: round(1000 * (after[name] - before[name]) / orders, 3) if orders else None
        for name in before
    }


def drain(conn: Conn, worker: Workers, timeout: float) -> dict[str, Any]:
    """Wait until the worker has consumed every event; how many there were and how fast."""
    started = time.perf_counter()
    first = left = pending_events(conn)
    while left and time.perf_counter() - started < timeout:
        if not worker.alive():
            raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
        time.sleep(0.5)
        left = pending_events(conn)
    seconds = time.perf_counter() - started
    return {
        "events": first,
        "left": left,
        "seconds": round(seconds, 1),
        "events_per_s": round((first - left) / seconds, 1) if seconds and first else None,
    }


def plugin_env(db: Database, indexer: bool) -> dict[str, str]:
    """The processes' environment, with this module as a plugin when the indexer is off."""
    # The bench's root for the plugin, after the caller's path (a worktree's `src` first).
    path = [p for p in (db.env.get("PYTHONPATH"), str(ROOT)) if p]
    env = {**db.env, "PYTHONPATH": os.pathsep.join(path)}
    if not indexer:
        env["ORDERTALLY_PLUGIN_MODULES"] = json.dumps([__name__])
    return env


def use_server(server: Server, db: Database, indexer: bool) -> None:
    """Restart the API with the indexer's publish hook on or off (it queues the orders in the
    creating transaction: part of what the index costs the write path)."""
    server.stop()
    server.db = dataclasses.replace(db, env=plugin_env(db, indexer))
    server.start()


def start_worker(
    db: Database, indexer: bool, batch: int | None, lane_process: bool = False
) -> Workers:
    """`ordertally worker` with every consumer and lane, or without the search indexer; with
    `lane_process` (indexer on) the search lane in a process of its own."""
    env = plugin_env(db, indexer)
    if batch:
        env["ORDERTALLY_WORKER_BATCH_SIZE"] = str(batch)
    name = "worker-" + ("on" if indexer else "off")
    with_env = dataclasses.replace(db, env=env)
    if indexer and lane_process:
        return Workers(
            [
                Process(with_env, "worker", "--no-lanes", name=name).start(),
                Process(with_env, "worker", "--lane", "search", name="lane").start(),
            ]
        )
    return Workers([Process(with_env, "worker", name=name).start()])


def wait_ready(server: Server, conn: Conn, worker: Workers, timeout: float = 120) -> None:
    """Until the worker consumes: one order created and its events all consumed (a worker
    still importing or loading its dictionary would count as lag, or as idle time)."""
    body = json.loads(order_body(99_999_999))
    status, answer = server.request("POST", "/api/v1/orders", body)
    if status != 201:
        raise RuntimeError(f"the probe order answered {status}: {answer}\n{server.log_tail()}")
    deadline = time.monotonic() + timeout
    while pending_events(conn):
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the worker is not consuming:\n{worker.log_tail()}")
        time.sleep(0.2)


def _load_args(args: argparse.Namespace, rate: float) -> argparse.Namespace:
    return argparse.Namespace(
        clients=args.clients,
        duration=args.duration,
        warmup=args.warmup,
        rate=rate,
        bundle_share=0.0,
        quiet_wait=args.quiet_wait,
        max_background=20.0,
    )


def writes(db: Database, server: Server, conn: Conn, args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop orders/s with the indexer off and on, interleaved."""
    from bench.__main__ import run_load

    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(args.runs):
        for mode in ("off", "on"):
            use_server(server, db, mode == "on")
            worker = start_worker(db, mode == "on", args.worker_batch, args.lane_process)
            try:
                wait_ready(server, conn, worker)
                load = os.getloadavg()[0]
                low, cpu0 = max_order_id(conn), worker.cpu()
                result = run_load(server, "closed", _load_args(args, 500.0))
                caught_up = drain(conn, worker, args.drain_timeout)
                orders, cpu1 = max_order_id(conn) - low, worker.cpu()
            finally:
                worker.stop()
            run = {
                "orders_per_s": result["orders_per_s"],
                "p99_ms": result["latency_ms"]["p99"],
                "errors": result["errors"],
                "load_1m": round(load, 2),
                "drain": caught_up,
                "orders": orders,
                "worker_cpu_ms_per_order": cpu_per_order(cpu0, cpu1, orders),
                "server_cpu": result.get("cpu"),
            }
            runs[mode].append(run)
            print(
                f"  writes indexer {mode:<3} run {i + 1}: {run['orders_per_s']:.1f} orders/s, "
                f"p99 {run['p99_ms']:.1f} ms (load {load:.2f}); then {caught_up['events']} "
                f"events drained at {caught_up['events_per_s']}/s; worker CPU ms/order "
                f"{run['worker_cpu_ms_per_order']}",
                file=sys.stderr,
                flush=True,
            )
    off = statistics.median(r["orders_per_s"] for r in runs["off"])
    on = statistics.median(r["orders_per_s"] for r in runs["on"])

    def drain_rate(mode: str) -> float | None:
        rates = [r["drain"]["events_per_s"] for r in runs[mode] if r["drain"]["events_per_s"]]
        return statistics.median(rates) if rates else None

    return {
        "off_orders_per_s": off,
        "on_orders_per_s": on,
        "ratio": round(on / off, 3) if off else None,
        "target": TARGET_RATIO,
        "drain_events_per_s": {"off": drain_rate("off"), "on": drain_rate("on")},
        "runs": runs,
    }


class Visibility(threading.Thread):
    """Polls which orders have their search row: the first time each is seen."""

    def __init__(self, db: Database, period: float) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.period = period
        self.created: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.low = 0
        self.polls = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = Conn(self.db)
        try:
            self.low = int(conn.fetch("SELECT coalesce(max(id), 0) FROM sales_order")[0][0])
            while not self.stop.is_set():
                rows = conn.fetch(
                    "SELECT o.id, o.created_at, s.order_id IS NOT NULL FROM sales_order o "
                    "LEFT JOIN search_doc s ON s.order_id = o.id WHERE o.id > ? ORDER BY o.id",
                    self.low,
                )
                now = time.time()
                self.polls += 1
                waiting = None
                for order_id, created_at, indexed in rows:
                    self.created.setdefault(order_id, epoch(created_at))
                    if indexed:
                        self.seen.setdefault(order_id, now)
                    elif waiting is None:
                        waiting = order_id
                if rows:
                    self.low = (waiting - 1) if waiting is not None else rows[-1][0]
                self.stop.wait(self.period)
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            conn.close()

    def unseen(self) -> int:
        return sum(1 for i in self.created if i not in self.seen)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def lag(
    db: Database, server: Server, conn: Conn, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Open loop at `rate` with the worker (indexer on): the index's lag behind the orders."""
    from bench.__main__ import run_load

    worker = start_worker(db, True, args.worker_batch, args.lane_process)
    watcher = Visibility(db, args.poll_ms / 1000)
    try:
        wait_ready(server, conn, worker)
        watcher.start()  # after the probe order: the window starts with the load
        load = os.getloadavg()[0]
        low, cpu0 = max_order_id(conn), worker.cpu()
        result = run_load(server, "open", _load_args(args, rate))
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and watcher.unseen():
            if not worker.alive():
                raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
            time.sleep(0.2)
        watcher.stop.set()
        watcher.join(timeout=10)
        if watcher.error is not None:
            raise RuntimeError(f"the reader failed: {watcher.error!r}")
        caught_up = drain(conn, worker, args.drain_timeout)
        orders, cpu1 = max_order_id(conn) - low, worker.cpu()
    finally:
        watcher.stop.set()
        worker.stop()
    # The measured window: what the load generator counts (its warm-up's orders left out).
    first = min(watcher.created.values(), default=0.0)
    window = {i: at for i, at in watcher.created.items() if at >= first + args.warmup}
    seen = [watcher.seen[i] - at for i, at in window.items() if i in watcher.seen]
    recorded: list[float] = []
    if window:
        rows = conn.fetch(
            "SELECT order_id, source_at, indexed_at FROM search_doc "
            "WHERE order_id >= ? AND order_id <= ?",
            min(window),
            max(window),
        )
        recorded = [epoch(b) - epoch(a) for i, a, b in rows if i in window]
    return {
        "offered_per_s": rate,
        "created_per_s": result["orders_per_s"],
        "unsent": result.get("unsent", 0),
        "create_p99_ms": result["latency_ms"]["p99"],
        "load_1m": round(load, 2),
        "window_orders": len(window),
        "not_indexed": len(window) - len(seen),
        "visible_lag_s": _quantiles(seen),
        "recorded_lag_s": _quantiles(recorded),
        "poll_ms": args.poll_ms,
        "polls": watcher.polls,
        "drain_after": caught_up,
        "orders": orders,
        "worker_cpu_ms_per_order": cpu_per_order(cpu0, cpu1, orders),
        "server_cpu": result.get("cpu"),
    }


def idle(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """What an idle search lane costs: `ordertally worker --lane search` alone on an empty
    queue for --idle-seconds (after 5 s of start-up), its CPU and PostgreSQL's, per second."""
    from bench.cpu import postgres_seconds, tree_seconds

    with scratch_database(kind, args.pg_url, {}) as db:
        lane = Process(db, "worker", "--lane", "search", name="lane-idle").start()
        try:
            time.sleep(5)
            if not lane.alive():
                raise RuntimeError(f"the lane died:\n{lane.log_tail()}")
            lane0 = tree_seconds(lane.pid) or 0.0
            pg0 = postgres_seconds(db.pg_name) if db.pg_name else 0.0
            time.sleep(args.idle_seconds)
            lane1 = tree_seconds(lane.pid) or 0.0
            pg1 = postgres_seconds(db.pg_name) if db.pg_name else 0.0
        finally:
            lane.stop()
    seconds = args.idle_seconds
    return {
        "database": kind,
        "seconds": seconds,
        "poll_seconds": 0.05,
        "lane_cpu_ms_per_s": round(1000 * (lane1 - lane0) / seconds, 2),
        "postgres_cpu_ms_per_s": round(1000 * (pg1 - pg0) / seconds, 2) if db.pg_name else None,
        "load_1m": os.getloadavg()[0],
    }


def bench(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both figures on one scratch database of this kind."""
    report: dict[str, Any] = {"database": kind, "load_1m_start": os.getloadavg()[0]}
    workers = args.api_workers if kind == "pg" else 1
    with scratch_database(kind, args.pg_url, {}) as db, Server(db, workers) as server:
        server.seed_stock(args.buckets)
        conn = Conn(db)
        try:
            if not args.skip_writes:
                report["writes"] = writes(db, server, conn, args)
                w = report["writes"]
                print(
                    f"{kind} writes: indexer off {w['off_orders_per_s']:.1f}/s, on "
                    f"{w['on_orders_per_s']:.1f}/s, ratio {w['ratio']} (target {TARGET_RATIO}); "
                    f"worker drain off {w['drain_events_per_s']['off']} / on "
                    f"{w['drain_events_per_s']['on']} events/s",
                    file=sys.stderr,
                    flush=True,
                )
            report["lag"] = []
            use_server(server, db, True)
            for rate in args.lag_rates:
                found = lag(db, server, conn, rate, args)
                report["lag"].append(found)
                print(
                    f"{kind} lag at {rate:g}/s offered ({found['created_per_s']}/s created, load "
                    f"{found['load_1m']}): visible {found['visible_lag_s']}, recorded "
                    f"{found['recorded_lag_s']}, not indexed {found['not_indexed']}; worker CPU "
                    f"ms/order {found['worker_cpu_ms_per_order']}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            conn.close()
    report["api_workers"] = workers
    report["load_1m_end"] = os.getloadavg()[0]
    return report


def _rates(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_writes", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "pg"], default="pg")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--api-workers", type=int, default=2, help="API processes (PostgreSQL)")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--worker-batch", type=int, default=0, help="events per worker batch")
    parser.add_argument("--lag-rates", type=_rates, default=[1000.0], help="e.g. 1000,500")
    parser.add_argument("--poll-ms", type=float, default=50.0)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--skip-writes", action="store_true", help="the lag figure only")
    parser.add_argument(
        "--lane-process",
        action="store_true",
        help="the search lane in a process of its own (ordertally worker --lane search)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=0.0, help="only: an idle lane's cost over N s"
    )
    parser.add_argument("--out-suffix", default="", help="appended to the result file's name")
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    args = parser.parse_args(argv)
    if args.idle_seconds:
        found = idle(args.db, args)
        print(json.dumps(found, indent=1))
        return 0
    report = bench(args.db, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"search-writes-{args.db}{args.out_suffix}.json"
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
