"""`python -m bench.flat`: order creation on an empty database and on a preloaded one (issue 21,
flat with data: within 10% of each other).

The preloaded database is the one `python -m bench.preload --name NAME` made (its manifest in
bench/results/ gives the URL and the PII key); the empty one is a scratch database created and
dropped here. Both are measured with the order-creation bench's own machinery
(bench/__main__.py `run_load` and `median_of` over bench/loadgen.py): `ordertally serve
--workers 2 --no-worker`, the hot SKUs spread over --buckets stock rows, a closed loop
(throughput and p99) and an open loop at --rate orders/s (p50, p99). Runs are interleaved
(empty, preloaded, preloaded, empty, ...: drift on a shared machine falls on both alike), each
figure is the median of --runs, and the ratio preloaded / empty is reported per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import bench.__main__ as order_bench
from bench import preload
from bench.server import Database, Server, asyncpg_dsn, existing_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The bound: preloaded within 10% of empty.
TOLERANCE = 0.10
FIGURES = (
    ("closed", "orders_per_s", "closed loop orders/s", True),
    ("closed", "p99", "closed loop p99 ms", False),
    ("open", "p50", "open loop p50 ms", False),
    ("open", "p99", "open loop p99 ms", False),
)


def add_load_arguments(parser: argparse.ArgumentParser, runs: int) -> None:
    """The preloaded database and the creation load run on it (flat and pg_cost)."""
    parser.add_argument("--name", default="ordertally_preload", help="the preloaded database")
    parser.add_argument("--runs", type=int, default=runs, help="runs per database and mode")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop orders/s")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or preload.DEFAULT_PG_URL
    )
    parser.add_argument("--quiet-wait", type=float, default=20.0)


def load_args(args: argparse.Namespace, runs: int) -> argparse.Namespace:
    """The order-creation bench's arguments for `args` (see add_load_arguments)."""
    return order_bench.parse_args(
        [
            "--db", "pg", "--runs", str(runs), "--duration", str(args.duration),
            "--warmup", str(args.warmup), "--clients", str(args.clients),
            "--rate", str(args.rate), "--buckets", str(args.buckets),
            "--api-workers", str(args.api_workers), "--pg-url", args.pg_url,
            "--quiet-wait", str(args.quiet_wait),
        ]
    )  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flat", description=__doc__.split("\n")[0]
    )
    add_load_arguments(parser, runs=3)
    args = parser.parse_args(argv)
    return args, load_args(args, args.runs)


async def _has_stock(db: Database) -> bool:
    import asyncpg

    from bench import payload

    conn = await asyncpg.connect(asyncpg_dsn(db.url))
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM sku WHERE code = $1", next(iter(payload.LINES))
            )
        )
    finally:
        await conn.close()


def seed_once(server: Server, buckets: int) -> None:
    """The bench's warehouse and hot SKUs, unless an earlier run on this database made them."""
    if not asyncio.run(_has_stock(server.db)):
        server.seed_stock(buckets)


def ratios(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """preloaded / empty for each figure, and whether it is within the tolerance."""
    rows = []
    for mode, figure, label, higher_is_better in FIGURES:

        def value(which: str, mode: str = mode, figure: str = figure) -> float:
            fig = figures[which][mode]
            return float(
                fig["orders_per_s"] if figure == "orders_per_s" else fig["latency_ms"][figure]
            )

        empty, loaded = value("empty"), value("preloaded")
        ratio = loaded / empty if empty else 0.0
        within = ratio >= 1 - TOLERANCE if higher_is_better else ratio <= 1 + TOLERANCE
        rows.append(
            {
                "figure": label,
                "empty": empty,
                "preloaded": loaded,
                "ratio": round(ratio, 3),
                "within_10pct": within,
            }
        )
    return rows


def costs(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU milliseconds per order of the server and of PostgreSQL, empty and preloaded: on a
    machine shared with other work these move less than throughput and latency do."""
    rows = []
    for mode in ("closed", "open"):
        for name in ("server", "postgres"):
            empty = figures["empty"][mode]["cpu_ms_per_order"].get(name, 0.0)
            loaded = figures["preloaded"][mode]["cpu_ms_per_order"].get(name, 0.0)
            rows.append(
                {
                    "figure": f"{mode} {name} CPU ms/order",
                    "empty": empty,
                    "preloaded": loaded,
                    "ratio": round(loaded / empty, 3) if empty else 0.0,
                }
            )
    return rows


def run(args: argparse.Namespace, load: argparse.Namespace) -> dict[str, Any]:
    manifest = preload.load_manifest(args.name)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        which: {"closed": [], "open": []} for which in ("empty", "preloaded")
    }
    with ExitStack() as stack:
        dbs = {
            "empty": stack.enter_context(scratch_database("pg", args.pg_url, {})),
            "preloaded": stack.enter_context(
                existing_database(manifest["url"], manifest["pii_key"], {})
            ),
        }
        sizes_before = asyncio.run(_sizes(dbs["preloaded"]))
        for r in range(args.runs):
            order = ("empty", "preloaded") if r % 2 == 0 else ("preloaded", "empty")
            for which in order:
                with Server(dbs[which], args.api_workers) as server:
                    seed_once(server, args.buckets)
                    for mode in ("closed", "open"):
                        result = order_bench.run_load(server, mode, load)
                        runs[which][mode].append(result)
                        label = "closed" if mode == "closed" else f"open {args.rate:g}/s"
                        _say(
                            f"  round {r + 1} {which:<9} {label:<12} {order_bench._brief(result)}"
                            f"  load {os.getloadavg()[0]:.2f}"
                        )
    figures = {
        which: {mode: order_bench.median_of(each) for mode, each in modes.items()}
        for which, modes in runs.items()
    }
    return {
        "manifest": {k: manifest[k] for k in ("name", "orders", "retention", "rows_total")},
        "figures": figures,
        "ratios": ratios(figures),
        "costs": costs(figures),
        "preloaded_sizes": sizes_before,
        "growth_per_million_orders": preload.growth(sizes_before, manifest["orders"]),
    }


async def _sizes(db: Database) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(db.url))
    try:
        return await preload.table_sizes(conn)
    finally:
        await conn.close()


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    m = result["manifest"]
    lines = [
        "",
        f"order creation, empty vs {m['orders']:,} orders preloaded ({m['name']}, retention "
        f"{m['retention']}): {args.api_workers} API processes, {args.clients} clients closed loop, "
        f"{args.rate:g}/s open loop, {args.buckets} buckets, {args.duration:g} s x {args.runs} "
        "runs interleaved, medians",
        "",
        f"{'figure':<30}{'empty':>10}{'preloaded':>11}{'ratio':>8}  within 10%",
    ]
    for row in result["ratios"]:
        lines.append(
            f"{row['figure']:<30}{row['empty']:>10.1f}{row['preloaded']:>11.1f}"
            f"{row['ratio']:>8.3f}  {'yes' if row['within_10pct'] else 'NO'}"
        )
    for row in result["costs"]:
        lines.append(
            f"{row['figure']:<30}{row['empty']:>10.2f}{row['preloaded']:>11.2f}{row['ratio']:>8.3f}"
        )
    lines += ["", "growth per million orders (the preloaded database):"]
    lines.append(preload.growth_table(result["growth_per_million_orders"]))
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args, load = parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {
        "started": started,
        "command": "python -m bench.flat " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": order_bench.machine(),
        **run(args, load),
        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"flat-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    _say(table(result, args))
    _say(f"\nresults: {out.relative_to(ROOT)}")
    # Like `python -m bench`, a missed target is reported, not an error; failed requests are.
    errors = sum(f["errors"] for modes in result["figures"].values() for f in modes.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
