"""`python -m bench.soak --minutes 10`: orders at a steady open-loop rate for a bounded time with
the API and the workers on, figures per minute, and a trend test on them (issue 21: a soak with
the workers on shows no downward trend).

On the database `python -m bench.preload --name NAME` made (its manifest gives the URL and the
PII key), or with --empty on a scratch database created and dropped here. The processes are
started as the drill starts them (bench/server.py): `ordertally serve --workers 2 --no-worker`
and --worker-processes `ordertally worker`, each in its own process group, stopped at the end.
The load is the order-creation bench's generator (bench/loadgen.py through bench/__main__.py
`run_load`): one open-loop window of 60 s per minute, back to back. The drill's sampler
(bench/drill/sampler.py) reads the queues and each process's CPU every second.

Per minute: accepted orders/s, p50/p99, errors; outbox events produced and consumed, pending
(mean and at the end of the minute); CPU per process; the sizes of the growing tables. Then the
least-squares slope of throughput, p99 and outbox pending over the minutes (the first
--settle-minutes left out), as a change over the run relative to the mean, with a verdict:
throughput must not fall and p99 must not rise by more than 10% over the run, and the outbox
backlog must not keep growing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import bench.__main__ as order_bench
from bench import preload
from bench.drill.sampler import Sampler
from bench.flat import seed_once
from bench.server import Database, Process, Server, asyncpg_dsn, existing_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOLERANCE = 0.10
# Request numbers reserved per one-minute window (its buyers' phones): more than a minute sends.
WINDOW_REQUESTS = 1_000_000
GROWING_TABLES = (
    "sales_order",
    "order_line",
    "order_event",
    "outbox",
    "processed_event",
    "idempotency_key",
    "reservation",
    "customer_order",
    "search_doc",
)
# Pools small enough for PostgreSQL's 100 connections shared with others (as the drill does).
SOAK_SETTINGS = {"ORDERTALLY_DB_POOL_SIZE": "8"}

PROGRESS_SQL = """
SELECT (SELECT coalesce(max(id), 0) FROM outbox) AS outbox_max_id,
       (SELECT count(*) FROM outbox WHERE status = 'pending') AS outbox_pending
"""


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=int, default=10, help="how long (1-120)")
    parser.add_argument("--rate", type=float, default=300.0, help="offered orders/s")
    parser.add_argument("--name", default="ordertally_preload", help="the preloaded database")
    parser.add_argument("--empty", action="store_true", help="a scratch database instead")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument(
        "--settle-minutes", type=int, default=1, help="first minutes left out of the trend"
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or preload.DEFAULT_PG_URL
    )
    args = parser.parse_args(argv)
    if not 1 <= args.minutes <= 120:
        parser.error("--minutes must be between 1 and 120")
    if args.rate <= 0 or not 0 <= args.settle_minutes < args.minutes:
        parser.error("--rate must be positive and --settle-minutes below --minutes")
    load = order_bench.parse_args(
        [
            "--db", "pg", "--duration", "60", "--warmup", "0", "--clients", str(args.clients),
            "--rate", str(args.rate), "--buckets", str(args.buckets), "--pg-url", args.pg_url,
        ]
    )  # fmt: skip
    return args, load


def slope(values: list[float]) -> tuple[float, float]:
    """Least-squares slope per step of a series, and its standard error (0 for < 3 points)."""
    n = len(values)
    if n < 2:
        return 0.0, 0.0
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx
    if n < 3:
        return b, 0.0
    residual = sum((y - (my + b * (x - mx))) ** 2 for x, y in zip(xs, values, strict=True))
    return b, math.sqrt(residual / (n - 2) / sxx)


def trend(minutes: list[dict[str, Any]], settle: int) -> dict[str, Any]:
    """The slopes of throughput, p99 and outbox pending over the measured minutes, as a
    change over the run relative to the mean, and the verdict."""
    kept = minutes[settle:]
    out: dict[str, Any] = {"minutes_used": len(kept)}
    verdicts = []
    for key, worse_if in (("orders_per_s", "falls"), ("p99_ms", "rises"), ("outbox_pending", "")):
        values = [float(m[key]) for m in kept]
        b, se = slope(values)
        mean = statistics.fmean(values) if values else 0.0
        change = b * max(len(values) - 1, 1) / mean if mean else 0.0
        out[key] = {
            "slope_per_minute": round(b, 3),
            "stderr": round(se, 3),
            "mean": round(mean, 2),
            "change_over_run": round(change, 3),
            "significant": bool(se and abs(b) > 2 * se),
        }
        if worse_if == "falls":
            verdicts.append(change >= -TOLERANCE or not out[key]["significant"])
        elif worse_if == "rises":
            verdicts.append(change <= TOLERANCE or not out[key]["significant"])
    # The backlog may wobble; it must not grow steadily past what a few seconds of load make.
    pending = out["outbox_pending"]
    rate = statistics.fmean(float(m["orders_per_s"]) for m in kept) if kept else 0.0
    growing = pending["significant"] and pending["slope_per_minute"] > 0.05 * rate * 60
    verdicts.append(not growing)
    out["outbox_backlog_growing"] = growing
    # Fewer than three minutes give a slope but no spread to judge it by: no verdict.
    out["no_downward_trend"] = all(verdicts) if len(kept) >= 3 else None
    return out


async def _progress(pool: Any) -> dict[str, int]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(PROGRESS_SQL)
        sizes = await conn.fetch(
            "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class "
            "WHERE relname = ANY($1::text[]) AND relkind = 'r'",
            list(GROWING_TABLES),
        )
        db_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    return {
        **{k: int(v) for k, v in dict(row).items()},
        "sizes_mib": {r["relname"]: round(r["bytes"] / 2**20, 1) for r in sizes},
        "database_mib": round(db_bytes / 2**20, 1),
    }


def _minute(
    n: int,
    load: dict[str, Any],
    sampler: Sampler,
    since: float,
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """One minute's figures from the load generator's window and the sampler's seconds."""
    lag = [p for p in sampler.lag if p["t"] >= since]
    cpu = [p for p in sampler.cpu if p["t"] >= since]
    names = sorted({k for p in cpu for k in p if k != "t"})
    produced = after["outbox_max_id"] - before["outbox_max_id"]
    consumed = produced - (after["outbox_pending"] - before["outbox_pending"])
    return {
        "minute": n,
        "orders_per_s": load["orders_per_s"],
        "p50_ms": load["latency_ms"]["p50"],
        "p99_ms": load["latency_ms"]["p99"],
        "max_ms": load["latency_ms"]["max"],
        "errors": load["errors"],
        "unsent": load["unsent"],
        "events_produced_per_s": round(produced / 60, 1),
        "events_consumed_per_s": round(consumed / 60, 1),
        "outbox_pending": after["outbox_pending"],
        "outbox_pending_mean": round(statistics.fmean(p["outbox_pending"] for p in lag), 1)
        if lag
        else 0.0,
        "payment_inbox_mean": round(statistics.fmean(p["payment_inbox"] for p in lag), 1)
        if lag
        else 0.0,
        "cpu_percent": {k: round(statistics.fmean(p.get(k, 0.0) for p in cpu), 1) for k in names},
        "sizes_mib": after["sizes_mib"],
        "database_mib": after["database_mib"],
        "loadavg": round(os.getloadavg()[0], 2),
    }


async def soak(
    args: argparse.Namespace, load: argparse.Namespace, db: Database, server: Server,
    workers: list[Process],
) -> list[dict[str, Any]]:  # fmt: skip
    import asyncpg

    pool = await asyncpg.create_pool(asyncpg_dsn(db.url), min_size=1, max_size=2)
    processes = {"api": server.pid, **{w.name: w.pid for w in workers}}
    sampler = Sampler(pool, processes, db.pg_name or "", time.perf_counter())
    sampling = asyncio.ensure_future(sampler.run())
    minutes: list[dict[str, Any]] = []
    try:
        before = await _progress(pool)
        for n in range(1, args.minutes + 1):
            since = time.perf_counter() - sampler.start
            load.first = (n - 1) * WINDOW_REQUESTS  # new buyers each minute
            figures = await asyncio.to_thread(
                order_bench.run_load, server, "open", load, None, False
            )
            after = await _progress(pool)
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"{w.name} died:\n{w.log_tail()}")
            minutes.append(_minute(n, figures, sampler, since, before, after))
            before = after
            m = minutes[-1]
            _say(
                f"  minute {n:>3}: {m['orders_per_s']:7.1f} orders/s  p50 {m['p50_ms']:7.2f}  "
                f"p99 {m['p99_ms']:8.2f} ms  errors {m['errors']}  events "
                f"{m['events_produced_per_s']:.0f}/s made {m['events_consumed_per_s']:.0f}/s "
                f"consumed, {m['outbox_pending']} pending  db {m['database_mib']:.0f} MiB  "
                f"load {m['loadavg']}"
            )
    finally:
        sampler.stop()
        await sampling
        await pool.close()
    return minutes


def run(args: argparse.Namespace, load: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        if args.empty:
            db = stack.enter_context(scratch_database("pg", args.pg_url, SOAK_SETTINGS))
            about = {"database": "empty (scratch)"}
        else:
            manifest = preload.load_manifest(args.name)
            db = stack.enter_context(
                existing_database(manifest["url"], manifest["pii_key"], SOAK_SETTINGS)
            )
            about = {"database": args.name, "preloaded_orders": manifest["orders"]}
        server = stack.enter_context(Server(db, args.api_workers))
        seed_once(server, args.buckets)
        workers = [
            Process(db, "worker", name=f"worker{i + 1}") for i in range(args.worker_processes)
        ]
        for w in workers:
            stack.callback(w.stop)
            w.start()
        minutes = asyncio.run(soak(args, load, db, server, workers))
    return {**about, "minutes": minutes, "trend": trend(minutes, args.settle_minutes)}


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "",
        f"soak on {result['database']}: {args.rate:g} orders/s offered for {args.minutes} min, "
        f"{args.api_workers} API + {args.worker_processes} worker processes",
        "",
        f"{'min':>4}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'err':>5}{'made/s':>8}"
        f"{'used/s':>8}{'pending':>9}{'DB MiB':>9}{'load':>6}",
    ]
    for m in result["minutes"]:
        lines.append(
            f"{m['minute']:>4}{m['orders_per_s']:>10.1f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}"
            f"{m['errors']:>5}{m['events_produced_per_s']:>8.0f}{m['events_consumed_per_s']:>8.0f}"
            f"{m['outbox_pending']:>9}{m['database_mib']:>9.0f}{m['loadavg']:>6.2f}"
        )
    t = result["trend"]
    lines.append("")
    lines.append(f"trend over minutes {args.settle_minutes + 1}-{args.minutes} (least squares):")
    for key in ("orders_per_s", "p99_ms", "outbox_pending"):
        f = t[key]
        lines.append(
            f"  {key:<16} slope {f['slope_per_minute']:+9.3f}/min (+/- {f['stderr']:.3f})  "
            f"change over the run {100 * f['change_over_run']:+6.1f}% of the mean {f['mean']:g}"
            f"{'  significant' if f['significant'] else ''}"
        )
    verdict = {True: "no downward trend", False: "DOWNWARD TREND", None: "too short to tell"}
    lines.append(
        "verdict: "
        + verdict[t["no_downward_trend"]]
        + (" (outbox backlog growing)" if t["outbox_backlog_growing"] else "")
    )
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args, load = parse_args(argv)
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": order_bench.machine(),
        **run(args, load),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    _say(table(result, args))
    _say(f"\nresults: {out.relative_to(ROOT)}")
    # Like `python -m bench`, a trend is reported, not an error; failed requests are.
    return 1 if any(m["errors"] for m in result["minutes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
