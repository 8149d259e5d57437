"""`python -m bench.search`: search latency over real HTTP and relevance, on a database loaded
by `python -m bench.search_data` (its manifest in bench/results/).

`ordertally serve --no-worker` runs in its own process group against the loaded database (the
manifest's PII key, so the query tokens match the rows); this process runs --clients searchers
in a closed loop over keep-alive HTTP connections for --seconds, cycling through the
manifest's queries (every kind), and reports p50/p95/p99. Then every query once: hit@5 (the
expected order among the first five) and, for full order numbers, waybills and full phones,
the expected order first. Figures go to bench/results/ and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.server import HOST, free_port, ordertally_command, stop_group

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_P95_MS = {"pg": 20.0, "sqlite": 50.0}


def _env(manifest: dict[str, Any], data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env |= {
        "ORDERTALLY_DATABASE_URL": manifest["url"],
        "ORDERTALLY_PII_KEY": manifest["pii_key"],
        "ORDERTALLY_DATA_DIR": str(data_dir),
        "ORDERTALLY_RATE_LIMIT_PER_KEY": "1000000/second",
        "ORDERTALLY_RATE_LIMIT_PER_IP": "1000000/second",
        # The PostgreSQL server is shared with other work: a small pool per server process.
        "ORDERTALLY_DB_POOL_SIZE": os.environ.get("BENCH_SEARCH_POOL", "4"),
    }
    return env


def _key(env: dict[str, str], data_dir: Path) -> str:
    out = subprocess.run(
        [*ordertally_command(), "apikey", "create", "--name", "search-bench", "--role", "cs"],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()[-1].strip()


async def _load(
    base: str, key: str, queries: list[str], clients: int, seconds: float
) -> list[float]:
    """Closed loop: each searcher sends its next query as soon as the last one answered."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:

        async def searcher(n: int) -> None:
            nonlocal errors
            i = n
            headers = {"Authorization": f"Bearer {key}"}
            while time.perf_counter() < stop:
                q = queries[i % len(queries)]
                i += clients
                started = time.perf_counter()
                try:
                    r = await client.get("/api/v1/search", params={"q": q}, headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200:
                    errors += 1

        await asyncio.gather(*(searcher(n) for n in range(clients)))
    if errors:
        print(f"  {errors} errors", file=sys.stderr)
    return latencies


async def _relevance(base: str, key: str, queries: list[dict[str, Any]]) -> dict[str, Any]:
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # n, hit@5, exact n, first
    misses: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for item in queries:
            r = await client.get(
                "/api/v1/search",
                params={"q": item["q"], "limit": 5},
                headers={"Authorization": f"Bearer {key}"},
            )
            found = [i["order_no"] for i in r.json()["items"]]
            row = per_kind[item["kind"]]
            row[0] += 1
            hit = item["expect"] in found
            row[1] += hit
            if item["exact"]:
                row[2] += 1
                row[3] += bool(found) and found[0] == item["expect"]
            if not hit:
                misses.append({"q": item["q"], "kind": item["kind"], "got": found[:5]})
    total = sum(r[0] for r in per_kind.values())
    hits = sum(r[1] for r in per_kind.values())
    exact = sum(r[2] for r in per_kind.values())
    first = sum(r[3] for r in per_kind.values())
    return {
        "queries": total,
        "hit_at_5": round(hits / total, 4),
        "exact_first": round(first / exact, 4) if exact else None,
        "per_kind": {k: {"n": v[0], "hit@5": v[1]} for k, v in sorted(per_kind.items())},
        "misses": misses[:30],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(RESULTS / "search-ot_search_1m.json"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-workers", type=int, default=2)
    args = parser.parse_args()

    manifest = json.loads(Path(args.manifest).read_text())
    kind = "sqlite" if manifest["url"].startswith("sqlite") else "pg"
    data_dir = Path(args.manifest).with_suffix("")
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _env(manifest, data_dir)
    key = _key(env, data_dir)
    port = free_port()
    command = [*ordertally_command(), "serve", "--no-worker", "--host", HOST, "--port", str(port)]
    if args.server_workers > 1:
        command += ["--workers", str(args.server_workers)]
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115  (closed after the server stops)
    server = subprocess.Popen(
        command, env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start; see serve.log")
            time.sleep(0.2)
        queries = [q["q"] for q in manifest["queries"]]
        asyncio.run(_load(base, key, queries, args.clients, 3))  # warm-up
        runs = []
        for n in range(args.runs):
            load = os.getloadavg()[0]
            lat = asyncio.run(_load(base, key, queries, args.clients, args.seconds))
            lat.sort()
            run = {
                "requests": len(lat),
                "rps": round(len(lat) / args.seconds, 1),
                "p50_ms": round(statistics.median(lat), 2),
                "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 2),
                "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
                "load_1m": round(load, 2),
            }
            runs.append(run)
            print(f"  run {n + 1}: {run}", file=sys.stderr)
        relevance = asyncio.run(_relevance(base, key, manifest["queries"]))
    finally:
        stop_group(server)
        log.close()
    p95 = statistics.median(r["p95_ms"] for r in runs)
    result = {
        "database": kind,
        "orders": manifest["orders"],
        "clients": args.clients,
        "server_workers": args.server_workers,
        "runs": runs,
        "p95_ms_median": p95,
        "p95_target_ms": TARGET_P95_MS[kind],
        "relevance": relevance,
        "index_bytes_per_order": manifest.get("index_bytes_per_order"),
        "load_seconds": manifest.get("load_seconds"),
    }
    out = RESULTS / f"search-bench-{kind}-{manifest['orders']}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "relevance"}, ensure_ascii=False))
    print(
        f"p95 {p95} ms (target {TARGET_P95_MS[kind]}); hit@5 {relevance['hit_at_5']:.1%}, "
        f"exact first {relevance['exact_first']}; -> {out}"
    )


if __name__ == "__main__":
    main()
