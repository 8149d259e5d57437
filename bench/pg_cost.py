"""`python -m bench.pg_cost`: where PostgreSQL's time and WAL go when orders are created, per
statement and per table and index, on an empty database and on a preloaded one (issue 21, flat
with data).

Each run is one `ordertally serve --no-worker` (2 API processes) under the order-creation
bench's load (bench/__main__.py `run_load`: a closed loop, then an open loop at --rate), stopped
before the second reading so that its backends' statistics are flushed. Around it:

- `pg_stat_user_tables` / `pg_statio_user_tables` / `pg_statio_user_indexes` of the database:
  rows inserted (the orders created are `sales_order`'s), blocks hit and read per index;
- `pg_stat_wal`, `pg_stat_bgwriter` (the whole cluster: run it alone);
- the WAL written between the two readings, read with `pg_waldump` (it needs the data
  directory: run as root or postgres) and charged to the relation of each record's blocks of
  this database: records, bytes, full-page images (FPIs) and distinct blocks changed per order;
- `pg_stat_statements`, when the library is loaded (it needs `shared_preload_libraries`, so a
  restart: never done here) and the extension exists in the database.

`--variant NAME=TREE:PRELOADED` runs the server from another source tree (its `src` on
PYTHONPATH, e.g. the main checkout for "before") against its own copy of the preloaded
database; each variant gets its own empty scratch database migrated by its tree. Runs are
interleaved: round r goes through the variants and databases in order, then reversed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import bench.__main__ as order_bench
from bench import preload
from bench.flat import add_load_arguments, load_args, seed_once
from bench.server import Database, Server, asyncpg_dsn, existing_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

_BLOCK = re.compile(r"rel (\d+)/(\d+)/(\d+)(?: fork (\w+))? blk (\d+)( FPW)?")
_LENGTH = re.compile(r"len \(rec/tot\):\s*(\d+)/\s*(\d+)")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pg_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=TREE:PRELOADED",
        help="a source tree and its preloaded database (preload manifest name); repeatable; "
        "default: this tree and --name",
    )
    add_load_arguments(parser, runs=2)
    parser.add_argument("--modes", default="closed,open")
    parser.add_argument("--skip-empty", action="store_true")
    parser.add_argument("--no-waldump", action="store_true")
    parser.add_argument("--top", type=int, default=14, help="relations shown per run")
    args = parser.parse_args(argv)
    return args, load_args(args, 1)


def variants(args: argparse.Namespace) -> list[tuple[str, Path, str]]:
    if not args.variant:
        return [("this", ROOT, args.name)]
    out = []
    for item in args.variant:
        name, _, rest = item.partition("=")
        tree, _, preloaded = rest.rpartition(":")
        out.append((name, Path(tree).resolve(), preloaded))
    return out


def tree_env(tree: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{tree / 'src'}:{tree}"}


# --- readings --------------------------------------------------------------------------------

_READ_SQL = {
    "tables": "SELECT relname AS name, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd"
    " FROM pg_stat_user_tables",
    "tables_io": "SELECT relname AS name, heap_blks_read, heap_blks_hit,"
    " coalesce(toast_blks_read, 0) AS toast_blks_read,"
    " coalesce(toast_blks_hit, 0) AS toast_blks_hit"
    " FROM pg_statio_user_tables",
    "indexes_io": "SELECT indexrelname AS name, idx_blks_read, idx_blks_hit"
    " FROM pg_statio_user_indexes",
    "wal": "SELECT wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes, wal_write, wal_sync"
    " FROM pg_stat_wal",
    "bgwriter": "SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_clean,"
    " buffers_backend, buffers_alloc FROM pg_stat_bgwriter",
    "database": "SELECT blks_read, blks_hit, xact_commit, tup_inserted"
    " FROM pg_stat_database WHERE datname = current_database()",
}
_STATEMENTS_SQL = (
    "SELECT queryid::text AS name, left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS query,"
    " calls, rows, total_exec_time, shared_blks_hit, shared_blks_read, shared_blks_dirtied,"
    " shared_blks_written, wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
    " WHERE datname = current_database())"
)


async def reading(url: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        out: dict[str, Any] = {"lsn": lsn}
        for key, sql in _READ_SQL.items():
            rows = [dict(r) for r in await conn.fetch(sql)]
            out[key] = {r.pop("name"): r for r in rows} if rows and "name" in rows[0] else rows[0]
        try:
            rows = [dict(r) for r in await conn.fetch(_STATEMENTS_SQL)]
            out["statements"] = {r.pop("name"): r for r in rows}
        except asyncpg.PostgresError:
            out["statements"] = None
        out["relfilenodes"] = {
            str(r["node"]): r["relname"]
            for r in await conn.fetch(
                "SELECT pg_relation_filenode(oid) AS node, relname FROM pg_class"
                " WHERE pg_relation_filenode(oid) IS NOT NULL"
            )
        }
        out["db_oid"] = str(
            await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        )
        out["data_directory"] = await conn.fetchval("SHOW data_directory")
        return out
    finally:
        await conn.close()


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before, for each numeric field (nested one level for per-name readings)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict):
            out[key] = _delta(old or {}, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value - (old or 0)
    return out


def waldump(data_dir: str, start: str, end: str, db_oid: str) -> dict[str, dict[str, int]]:
    """Per relfilenode of database `db_oid`: WAL records (charged to a record's first block),
    their bytes, FPIs and distinct blocks; "(other)" holds records of no block of it."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    blocks: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
    process = subprocess.Popen(
        [
            "nice", "-n", "10", "/usr/lib/postgresql/15/bin/pg_waldump",
            "-p", f"{data_dir}/pg_wal", "-s", start, "-e", end,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        length = _LENGTH.search(line)
        if length is None:
            continue
        refs = [m for m in _BLOCK.finditer(line) if m.group(2) == db_oid]
        owner = refs[0].group(3) if refs else "(other)"
        per[owner]["records"] += 1
        per[owner]["bytes"] += int(length.group(2))
        for m in refs:
            node = m.group(3)
            if m.group(6):
                per[node]["fpi"] += 1
            blocks[node].add((m.group(4), m.group(5)))
    process.wait()
    for node, seen in blocks.items():
        per[node]["blocks"] = len(seen)
    return {k: dict(v) for k, v in per.items()}


# --- one run ---------------------------------------------------------------------------------


def measure(
    db: Database, mode: str, load: argparse.Namespace, args: argparse.Namespace, seeded: set[str]
) -> dict[str, Any]:
    with Server(db, args.api_workers) as server:
        if db.url not in seeded:
            seed_once(server, args.buckets)
            seeded.add(db.url)
        before = asyncio.run(reading(db.url))
        result = order_bench.run_load(server, mode, load)
    time.sleep(1.0)  # the server's backends have exited and flushed their statistics
    after = asyncio.run(reading(db.url))
    delta = _delta(before, after)
    orders = int(delta["tables"].get("sales_order", {}).get("n_tup_ins", 0))
    run: dict[str, Any] = {
        "orders": orders,
        "orders_per_s": result["orders_per_s"],
        "latency_ms": result["latency_ms"],
        "errors": result["errors"],
        "cpu_percent": result.get("cpu_percent", {}),
        "cpu_ms_per_order": {
            name: round(order_bench._cpu_ms(result, name), 3) for name in ("server", "postgres")
        },
        "delta": delta,
        "lsn": [before["lsn"], after["lsn"]],
    }
    if after["statements"] is not None:
        run["statements"] = {
            k: {**v, "query": after["statements"][k]["query"]}
            for k, v in _delta(before["statements"], after["statements"]).items()
            if v.get("calls")
        }
    if not args.no_waldump:
        per_node = waldump(after["data_directory"], before["lsn"], after["lsn"], after["db_oid"])
        names = after["relfilenodes"]
        run["wal_by_relation"] = {names.get(k, k): v for k, v in per_node.items()}
    return run


def per_order(run: dict[str, Any]) -> dict[str, Any]:
    """The run's counts divided by the orders it created."""
    n = max(run["orders"], 1)
    wal = run["delta"]["wal"]
    rels: dict[str, dict[str, float]] = defaultdict(dict)
    for name, row in run.get("wal_by_relation", {}).items():
        for key, value in row.items():
            rels[name][f"wal_{key}"] = round(value / n, 3)
    for name, row in run["delta"]["indexes_io"].items():
        if row["idx_blks_hit"] or row["idx_blks_read"]:
            rels[name]["hit"] = round(row["idx_blks_hit"] / n, 3)
            rels[name]["read"] = round(row["idx_blks_read"] / n, 3)
    for name, row in run["delta"]["tables_io"].items():
        if row["heap_blks_hit"] or row["heap_blks_read"]:
            rels[name]["hit"] = round(row["heap_blks_hit"] / n, 3)
            rels[name]["read"] = round(row["heap_blks_read"] / n, 3)
    return {
        "wal_bytes": round(wal["wal_bytes"] / n, 1),
        "wal_fpi": round(wal["wal_fpi"] / n, 3),
        "wal_records": round(wal["wal_records"] / n, 2),
        "buffers_written": round(
            sum(
                run["delta"]["bgwriter"][k]
                for k in ("buffers_checkpoint", "buffers_clean", "buffers_backend")
            )
            / n,
            3,
        ),
        "blks_read": round(run["delta"]["database"]["blks_read"] / n, 3),
        "blks_hit": round(run["delta"]["database"]["blks_hit"] / n, 2),
        "relations": dict(rels),
    }


def brief(label: str, run: dict[str, Any], top: int) -> str:
    p = run["per_order"]
    lat = run["latency_ms"]
    lines = [
        f"{label}: {run['orders']} orders, {run['orders_per_s']:.1f}/s p50 {lat['p50']:.1f}"
        f" p99 {lat['p99']:.1f} ms, CPU ms/order server {run['cpu_ms_per_order']['server']:.3f}"
        f" pg {run['cpu_ms_per_order']['postgres']:.3f}; per order: WAL {p['wal_bytes']:.0f} B,"
        f" {p['wal_fpi']:.3f} FPI, {p['wal_records']:.1f} records, blocks hit {p['blks_hit']:.1f}"
        f" read {p['blks_read']:.2f}, buffers written {p['buffers_written']:.3f}"
        f"  load {run['load']:.2f}",
        f"    {'relation':<44}{'WAL B':>8}{'FPI':>7}{'blocks':>8}{'records':>9}{'hit':>7}"
        f"{'read':>7}",
    ]
    rels = sorted(
        p["relations"].items(),
        key=lambda kv: -(kv[1].get("wal_bytes", 0.0) + 8192 * kv[1].get("read", 0.0)),
    )
    for name, r in rels[:top]:
        lines.append(
            f"    {name[:44]:<44}{r.get('wal_bytes', 0):>8.0f}{r.get('wal_fpi', 0):>7.3f}"
            f"{r.get('wal_blocks', 0):>8.3f}{r.get('wal_records', 0):>9.2f}{r.get('hit', 0):>7.2f}"
            f"{r.get('read', 0):>7.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, load = parse_args(argv)
    modes = args.modes.split(",")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs: list[dict[str, Any]] = []
    seeded: set[str] = set()
    with ExitStack() as stack:
        dbs: list[tuple[str, str, Database]] = []
        for name, tree, preloaded in variants(args):
            env = tree_env(tree)
            if not args.skip_empty:
                dbs.append(
                    (name, "empty", stack.enter_context(scratch_database("pg", args.pg_url, env)))
                )
            manifest = preload.load_manifest(preloaded)
            dbs.append(
                (
                    name,
                    "preloaded",
                    stack.enter_context(
                        existing_database(manifest["url"], manifest["pii_key"], env)
                    ),
                )
            )
        for r in range(args.runs):
            order = dbs if r % 2 == 0 else list(reversed(dbs))
            for variant, which, db in order:
                for mode in modes:
                    run = measure(db, mode, load, args, seeded)
                    run.update(variant=variant, database=which, mode=mode, round=r + 1)
                    run["load"] = os.getloadavg()[0]
                    run["per_order"] = per_order(run)
                    runs.append(run)
                    print(
                        brief(f"round {r + 1} {variant} {which} {mode}", run, args.top), flush=True
                    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pg-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {"started": started, "command": "python -m bench.pg_cost " + " ".join(sys.argv[1:]),
             "machine": order_bench.machine(), "runs": runs},
            indent=1, default=str,
        )
    )  # fmt: skip
    print(f"\nresults: {out.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
