"""`make bench` / `python -m bench`: order creation over real HTTP on SQLite and PostgreSQL.

For each database: a scratch database (migrated, one ops API key, one warehouse stocking the
order's SKUs), `ordertally serve --no-worker` in its own process group, and a load generator
in another process on 127.0.0.1 (`bench/loadgen.py`): a closed loop with --clients
connections (maximum throughput) and an open loop at --rate orders/s (latency from the
scheduled send time). Then the same statements straight through the driver in one process
(`bench/direct.py`): the floor the framework adds on top of. Every figure is the median of
--runs runs. Results go to bench/results/ (git-ignored); the figures are kept in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cpu, direct, profile, server_view
from bench.server import Database, Server, asyncpg_dsn, ordertally_command, scratch_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

# The targets on the 2-core machine.
TARGET_PG_ORDERS = 1000.0
TARGET_PG_OPEN_P99_MS = 50.0
TARGET_SQLITE_ORDERS = 400.0


def _workers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from exc
    if not values or any(v < 1 or v > 8 for v in values):
        raise argparse.ArgumentTypeError("between 1 and 8 processes")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark order creation over HTTP on SQLite and PostgreSQL.",
    )
    parser.add_argument("--db", choices=["sqlite", "pg", "both"], default="both")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run")
    parser.add_argument("--clients", type=int, default=64, help="connections (at least 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is kept")
    parser.add_argument(
        "--api-workers",
        type=_workers,
        default=[1, 2],
        help="uvicorn processes to try on PostgreSQL, e.g. 1,2 (the best is reported)",
    )
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop offered orders/s")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL,
        help="an existing database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument("--buckets", type=int, default=16, help="stock rows per hot SKU (1-64)")
    parser.add_argument(
        "--bundle-share",
        type=float,
        default=0.0,
        help="share of orders (0-1) that buy a gift box of the same SKUs (a bundle) instead",
    )
    parser.add_argument(
        "--direct-concurrency", type=int, default=50, help="asyncpg pool size and tasks"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also sample the server with py-spy (extra run)"
    )
    parser.add_argument(
        "--profile-mode",
        choices=("closed", "open"),
        default="closed",
        help="the profiled run's load: closed loop, or open loop at --rate",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra ORDERTALLY_* setting for the server under test (repeatable)",
    )
    parser.add_argument("--skip-direct", action="store_true", help="no direct-driver floor")
    parser.add_argument(
        "--timing",
        action="store_true",
        help="report where an order waited, from the server's histograms (bench/server_view.py)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this long for other work on the machine to stop",
    )
    parser.add_argument(
        "--max-background",
        type=float,
        default=20.0,
        help="CPU %% (of one core) used by others that counts as quiet",
    )
    args = parser.parse_args(argv)
    if args.clients < 50:
        parser.error("--clients must be at least 50")
    if args.runs < 1 or args.duration <= 0 or args.warmup < 0 or args.rate <= 0:
        parser.error("--runs, --duration and --rate must be positive")
    if not 0 <= args.bundle_share <= 1:
        parser.error("--bundle-share must be between 0 and 1")
    if not 1 <= args.buckets <= 64:
        parser.error("--buckets must be between 1 and 64")
    for item in args.server_env:
        if "=" not in item or not item.startswith("ORDERTALLY_"):
            parser.error(f"--server-env wants ORDERTALLY_NAME=VALUE, not {item!r}")
    return args


# --- one run of the load generator ------------------------------------------------------------


def wait_for_quiet(args: argparse.Namespace) -> float:
    """Wait (up to --quiet-wait s) until the rest of the machine leaves the cores alone: the
    server is idle between runs, so what is busy now belongs to someone else."""
    deadline = time.monotonic() + args.quiet_wait
    while True:
        busy = cpu.background_load(1.0)
        if busy <= args.max_background or time.monotonic() >= deadline:
            if busy > args.max_background:
                _say(f"  (machine still {busy:g}% busy with other work; measuring anyway)")
            return busy
        time.sleep(2)


def run_load(
    server: Server,
    mode: str,
    args: argparse.Namespace,
    during: Callable[[], Any] | None = None,
    quiet_first: bool = True,
) -> dict[str, Any]:
    """Run the load generator process once and return its figures; `during` is called when
    the warm-up is over (to start a profiler on the measured window). Unless `quiet_first` is
    false (back-to-back windows of one long run), it first waits for the machine to be quiet."""
    config = {
        "host": "127.0.0.1",
        "port": server.port,
        "key": server.db.api_key,
        "mode": mode,
        "clients": args.clients,
        "duration": args.duration,
        "warmup": args.warmup,
        "rate": args.rate,
        "bundle_share": args.bundle_share,
        "first": getattr(args, "first", 0),
        "run_id": f"bench-{secrets.token_hex(4)}",
        "server_pid": server.pid,
        "pg_database": server.db.pg_name,
    }
    background = wait_for_quiet(args) if quiet_first else None
    scraped = server_view.scrape(server.port) if getattr(args, "timing", False) else None
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(config))
        process.stdin.close()
        process.stdin = None
        if during is not None:
            time.sleep(args.warmup + 0.2)
            during()
        out, err = process.communicate(timeout=args.warmup + args.duration + 120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["background_cpu_before"] = background
    if server.process is None or server.process.poll() is not None:
        raise RuntimeError(f"the server died during the run:\n{server.log_tail()}")
    if scraped is not None:  # warm-up included: the histograms have no window
        result["server_view"] = server_view.summary(scraped, server_view.scrape(server.port))
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the runs (each figure on its own), errors summed."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    return {
        "runs": len(runs),
        "orders_per_s": med([r["orders_per_s"] for r in runs]),
        "latency_ms": {
            q: med([r["latency_ms"][q] for r in runs]) for q in ("p50", "p90", "p99", "max")
        },
        "errors": sum(r["errors"] for r in runs),
        "sent": sum(r.get("sent", 0) for r in runs),
        "unsent": sum(r.get("unsent", 0) for r in runs),
        "background_cpu_before": [r.get("background_cpu_before") for r in runs],
        "cpu_percent": {
            name: med([r["cpu_percent"].get(name, 0.0) for r in runs])
            for name in runs[0].get("cpu_percent", {})
        },
        "cpu_ms_per_order": {
            name: med([_cpu_ms(r, name) for r in runs])
            for name in ("server", "server_kernel", "postgres", "loadgen")
            if name in runs[0].get("cpu_percent", {})
        },
        "each_orders_per_s": [r["orders_per_s"] for r in runs],
        "each_p99_ms": [r["latency_ms"]["p99"] for r in runs],
        "statuses": _sum_statuses(runs),
        "error_samples": [s for r in runs for s in r.get("error_samples", [])][:5],
    }


def _cpu_ms(run: dict[str, Any], name: str) -> float:
    """CPU milliseconds one order cost a process group (robust to others sharing the cores)."""
    rate = run["orders_per_s"]
    return 10 * run["cpu_percent"].get(name, 0.0) / rate if rate else 0.0


def _sum_statuses(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for status, count in run.get("statuses", {}).items():
            total[status] = total.get(status, 0) + count
    return total


def _say(text: str) -> None:
    print(text, flush=True)


def _brief(fig: dict[str, Any]) -> str:
    lat = fig["latency_ms"]
    return (
        f"{fig['orders_per_s']:8.1f} orders/s  p50 {lat['p50']:7.2f}  p99 {lat['p99']:8.2f}  "
        f"max {lat['max']:8.2f} ms  errors {fig['errors']}  cpu {fig.get('cpu_percent', {})}"
    )


# --- one database -----------------------------------------------------------------------------


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for one database kind."""
    server_env = dict(item.split("=", 1) for item in args.server_env)
    report: dict[str, Any] = {"http": {}, "direct": {}}
    with scratch_database(kind, args.pg_url, server_env) as db:
        report["database_version"] = database_version(db, args)
        seeded = False
        for workers in args.api_workers if kind == "pg" else [1]:
            config: dict[str, Any] = {}
            with Server(db, workers) as server:
                if not seeded:
                    server.seed_stock(args.buckets)
                    seeded = True
                for mode in ("closed", "open"):
                    runs = []
                    for i in range(args.runs):
                        runs.append(run_load(server, mode, args))
                        label = "closed" if mode == "closed" else f"open {args.rate:g}/s"
                        _say(f"  {kind} x{workers} {label:<12} run {i + 1}: {_brief(runs[-1])}")
                        for name, row in runs[-1].get("server_view", {}).items():
                            _say(
                                f"      {name:<20} "
                                + "  ".join(f"{k} {v:g}" for k, v in row.items())
                            )
                    config[mode] = median_of(runs)
                    config[mode]["each"] = runs
            report["http"][str(workers)] = config
        best = max(report["http"], key=lambda w: report["http"][w]["closed"]["orders_per_s"])
        report["best_api_workers"] = int(best)
        report["checks"] = sanity_checks(db, report)
        if args.profile:
            report["profile"] = profile_server(db, int(best), args)
        if not args.skip_direct:
            report["direct"] = direct_floor(db, args)
    return report


def database_version(db: Database, args: argparse.Namespace) -> str:
    if db.kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"

    async def version() -> str:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(db.url))
        try:
            return str(await conn.fetchval("SELECT version()"))
        finally:
            await conn.close()

    return asyncio.run(version())


def sanity_checks(db: Database, report: dict[str, Any]) -> dict[str, Any]:
    """Orders in the database cover every 201 counted, and the stock still adds up."""
    counted = sum(
        mode["statuses"].get("201", 0) for cfg in report["http"].values() for mode in cfg.values()
    )
    done = subprocess.run(
        [*ordertally_command(), "doctor", "--json"],
        env=db.env,
        cwd=db.data_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    checks = {c["name"]: c for c in json.loads(done.stdout).get("checks", [])}
    stock_ok = {
        name: bool(checks[name]["ok"])
        for name in ("reserved_matches_reservations", "available_not_negative")
        if name in checks
    }
    stored = asyncio.run(_count_orders(db))
    return {"measured_201": counted, "orders_in_database": stored, **stock_ok}


async def _count_orders(db: Database) -> int:
    if db.kind == "sqlite":
        assert db.sqlite_file is not None
        with sqlite3.connect(db.sqlite_file) as conn:
            return int(conn.execute("SELECT count(*) FROM sales_order").fetchone()[0])
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(db.url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sales_order"))
    finally:
        await conn.close()


def direct_floor(db: Database, args: argparse.Namespace) -> dict[str, Any]:
    """The same statements through the bare driver, --runs times; medians."""
    drivers = ["asyncpg"] if db.kind == "pg" else ["sqlite3", "aiosqlite"]
    floors: dict[str, Any] = {}
    for driver in drivers:
        runs = []
        for i in range(args.runs):
            wait_for_quiet(args)
            run_id = f"direct-{secrets.token_hex(4)}"
            if driver == "asyncpg":
                coro = direct.pg_floor(
                    asyncpg_dsn(db.url),
                    duration=args.duration,
                    warmup=args.warmup,
                    concurrency=args.direct_concurrency,
                    run=run_id,
                    pg_database=db.pg_name or "",
                )
            else:
                assert db.sqlite_file is not None
                coro = direct.sqlite_floor(
                    str(db.sqlite_file),
                    driver=driver,
                    duration=args.duration,
                    warmup=args.warmup,
                    run=run_id,
                )
            runs.append(_run_async(coro))
            r = runs[-1]
            _say(
                f"  {db.kind} direct {driver:<9} run {i + 1}: {r['orders_per_s']:8.1f} orders/s  "
                f"p50 {r['latency_ms']['p50']:.2f}  p99 {r['latency_ms']['p99']:.2f} ms  "
                f"errors {r['errors']}  cpu {r['cpu_percent']}"
            )
        floors[driver] = {
            "orders_per_s": round(statistics.median(r["orders_per_s"] for r in runs), 1),
            "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in runs), 2),
            "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in runs), 2),
            "errors": sum(r["errors"] for r in runs),
            "each_orders_per_s": [r["orders_per_s"] for r in runs],
            "concurrency": runs[0]["concurrency"],
            "cpu_ms_per_order": {
                name: round(statistics.median(r["cpu_ms_per_order"].get(name, 0) for r in runs), 2)
                for name in runs[0]["cpu_ms_per_order"]
            },
            "others_cpu_percent": [r["cpu_percent"].get("others") for r in runs],
            "error_samples": [s for r in runs for s in r["error_samples"]][:5],
        }
    return floors


def _run_async(coro: Any) -> dict[str, Any]:
    try:
        import uvloop

        return dict(uvloop.run(coro))
    except ImportError:
        return dict(asyncio.run(coro))


def profile_server(db: Database, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One extra run (closed loop, or open loop at --rate) with py-spy sampling the server; the
    summary and files."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = RESULTS / f"profile-{db.kind}-x{workers}-{stamp}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    samplers: list[subprocess.Popen[bytes]] = []
    raws: list[Path] = []
    with Server(db, workers) as server:

        def start_sampling() -> None:
            # One sampler per serving process (not the supervisor, which only waits).
            pids = cpu.workers(server.pid) if workers > 1 else [server.pid]
            for pid in pids:
                raws.append(raw.with_name(f"{raw.stem}-pid{pid}.txt"))
                samplers.append(profile.start(pid, args.duration, raws[-1], subprocesses=False))

        try:
            figures = run_load(server, args.profile_mode, args, during=start_sampling)
        finally:
            err = b""
            for sampler in samplers:
                try:
                    _, err = sampler.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    sampler.kill()
                    _, err = sampler.communicate()
    with raw.open("w") as merged:
        for part in raws:
            if part.exists():
                merged.write(part.read_text(errors="replace"))
                part.unlink()
    if not raw.stat().st_size:
        return {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"}
    summary = profile.analyse(raw)
    text_path = raw.with_name(raw.stem.replace("profile-", "profile-summary-") + ".txt")
    text_path.write_text(profile.render(summary))
    shown = text_path.relative_to(ROOT)
    _say(f"  {db.kind} profile ({figures['orders_per_s']} orders/s while sampled): {shown}")
    _say(profile.render(summary))
    return {
        "orders_per_s_while_sampled": figures["orders_per_s"],
        "raw_file": str(raw.relative_to(ROOT)),
        "summary_file": str(text_path.relative_to(ROOT)),
        **summary,
    }


# --- the report -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    info["commit"] = git.stdout.strip() or None
    return info


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the issue's targets: the figure, met or missed, by how much."""
    rows = []

    def add(name: str, value: float, goal: float, higher_is_better: bool) -> None:
        met = value >= goal if higher_is_better else value <= goal
        gap = (value - goal) / goal * 100
        rows.append(
            {
                "target": name,
                "value": value,
                "goal": goal,
                "met": met,
                "gap_pct": round(gap, 1),
            }
        )

    if "pg" in results:
        pg = results["pg"]
        best = pg["http"][str(pg["best_api_workers"])]
        add(
            "PostgreSQL closed loop orders/s",
            best["closed"]["orders_per_s"],
            TARGET_PG_ORDERS,
            True,
        )
        add(
            f"PostgreSQL p99 ms at {results['settings']['rate']:g}/s offered",
            best["open"]["latency_ms"]["p99"],
            TARGET_PG_OPEN_P99_MS,
            False,
        )
    if "sqlite" in results:
        add(
            "SQLite closed loop orders/s",
            results["sqlite"]["http"]["1"]["closed"]["orders_per_s"],
            TARGET_SQLITE_ORDERS,
            True,
        )
    return rows


def table(results: dict[str, Any]) -> str:
    """The figures as a fixed-width table."""
    s = results["settings"]
    lines = [
        "",
        f"POST /api/v1/orders over HTTP, {s['clients']} connections, {s['duration']:g} s measured "
        f"after {s['warmup']:g} s warm-up, median of {s['runs']} runs",
        "",
        f"{'db':<7}{'procs':>6}  {'mode':<13}{'orders/s':>10}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>7}  {'CPU ms/order':>19}  {'others':>6}",
        f"{'':<74}{'server':>8}{'postgres':>10}  {'% core':>7}",
    ]
    for kind in ("sqlite", "pg"):
        if kind not in results:
            continue
        for workers, cfg in results[kind]["http"].items():
            for mode, fig in cfg.items():
                label = "closed" if mode == "closed" else f"open {s['rate']:g}/s"
                lat = fig["latency_ms"]
                ms = fig["cpu_ms_per_order"]
                pg_ms = f"{ms['postgres']:.2f}" if "postgres" in ms else "-"
                lines.append(
                    f"{kind:<7}{workers:>6}  {label:<13}{fig['orders_per_s']:>10.1f}"
                    f"{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}{lat['max']:>9.2f}"
                    f"{fig['errors']:>7}  {ms.get('server', 0):>8.2f}{pg_ms:>10}"
                    f"  {fig['cpu_percent'].get('others', 0):>7g}"
                )
    lines.append("")
    lines.append("direct-driver floor (same statements, one process, no HTTP/framework):")
    for kind in ("sqlite", "pg"):
        if kind not in results:
            continue
        best = results[kind]["http"][str(results[kind]["best_api_workers"])]["closed"]
        for driver, floor in results[kind]["direct"].items():
            ratio = best["orders_per_s"] / floor["orders_per_s"] if floor["orders_per_s"] else 0
            lines.append(
                f"  {kind:<7}{driver:<10} x{floor['concurrency']:<4}{floor['orders_per_s']:>10.1f}"
                f" orders/s  p50 {floor['p50_ms']:.2f} ms  p99 {floor['p99_ms']:.2f} ms  "
                f"errors {floor['errors']}   HTTP/direct = {ratio:.2f}   CPU ms/order "
                + " ".join(f"{k} {v:g}" for k, v in floor.get("cpu_ms_per_order", {}).items())
            )
    lines.append("")
    lines.append("targets:")
    for row in results["targets"]:
        verdict = "met" if row["met"] else "MISSED"
        lines.append(
            f"  {row['target']:<40} {row['value']:>9.1f} vs {row['goal']:>7g}  {verdict:<6} "
            f"({row['gap_pct']:+.1f}%)"
        )
    return "\n".join(lines)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, Any] = {
        "started": started,
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "settings": {
            k: getattr(args, k)
            for k in (
                "db",
                "duration",
                "warmup",
                "clients",
                "runs",
                "api_workers",
                "rate",
                "buckets",
                "direct_concurrency",
                "server_env",
            )
        },
    }
    kinds = ["sqlite", "pg"] if args.db == "both" else [args.db]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for kind in kinds:
        _say(f"== {kind}")
        results[kind] = bench_database(kind, args)
        best = results[kind]["http"][str(results[kind]["best_api_workers"])]
        for floor in results[kind]["direct"].values():
            floor["http_over_direct"] = round(
                best["closed"]["orders_per_s"] / floor["orders_per_s"], 3
            )
        # Written after each database, so an interrupted run keeps what it measured.
        results["targets"] = targets(results)
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    _say(table(results))
    _say(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
