"""`python -m bench.search`: search latency over real HTTP and relevance, on a database loaded
by `python -m bench.search_data` (its manifest in bench/results/).

`ordertally serve --no-worker` runs in its own process group against the loaded database (the
manifest's PII key, so the query tokens match the rows). The load generator is another process
(`bench.search_load`: raw keep-alive HTTP/1.1, a few tens of µs per request) that runs
--clients searchers cycling through the manifest's queries (every kind):
- closed loop, --runs times for --seconds: each searcher sends its next query as soon as the
  last one is answered (the figure of issue 16: p95 with 20 concurrent searchers);
- paced (--think seconds, 0 to skip): the same searchers at a person's pace, each query
  scheduled --think seconds after the searcher's previous one (an open model: latency from
  the scheduled time). A second, separately labelled figure.
`--client httpx` runs the closed loop with the former in-process httpx searchers instead (to
compare load generators). `--profile` samples the API processes with py-spy during one extra
closed run (bench/profile.py). Then every query once: hit@5 (the expected order among the
first five) and, for full order numbers, waybills and full phones, the expected order first.
Figures go to bench/results/ and docs/benchmarks.md.
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

from bench import cpu, profile
from bench.server import HOST, free_port, ordertally_command, stop_group

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_P95_MS = {"pg": 20.0, "sqlite": 50.0}
# How long the server may take to answer /healthz: two API processes importing the app and
# warming up took more than a minute each on the shared machine at load 15.
START_SECONDS = 240.0


def _env(manifest: dict[str, Any], data_dir: Path, pool: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env |= {
        "ORDERTALLY_DATABASE_URL": manifest["url"],
        "ORDERTALLY_PII_KEY": manifest["pii_key"],
        "ORDERTALLY_DATA_DIR": str(data_dir),
        "ORDERTALLY_RATE_LIMIT_PER_KEY": "1000000/second",
        "ORDERTALLY_RATE_LIMIT_PER_IP": "1000000/second",
        # Enough connections for each API process's share of the searchers: below that, every
        # burst over the pool opens overflow connections that are closed again on return (a
        # TCP connect, a TLS attempt and a PostgreSQL backend each time: 5% of the API's CPU
        # in a profile with 4).
        "ORDERTALLY_DB_POOL_SIZE": os.environ.get("BENCH_SEARCH_POOL", str(pool)),
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


def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    """One run of the load generator process (`bench.search_load`); its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.search_load"],
        input=json.dumps(cfg),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=cfg["warmup"] + cfg["duration"] + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.splitlines()[-1]))


def _httpx_run(
    base: str, key: str, queries: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """A closed run with the former load generator (httpx searchers in this process)."""
    lat = asyncio.run(_load_httpx(base, key, queries, clients, seconds))
    lat.sort()
    return {
        "mode": "closed (httpx in the bench process)",
        "clients": clients,
        "requests": len(lat),
        "rps": round(len(lat) / seconds, 1),
        "p50_ms": round(statistics.median(lat), 2),
        "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
    }


async def _load_httpx(
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


def _profiled(cfg: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """One closed run with py-spy sampling each API process; the run and the summary."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = RESULTS / f"profile-search-{stamp}.txt"
    pids = cpu.workers(server_pid)
    parts = [raw.with_name(f"{raw.stem}-pid{pid}.txt") for pid in pids]
    seconds = cfg["warmup"] + cfg["duration"]
    samplers = [
        profile.start(pid, seconds, part, subprocesses=False)
        for pid, part in zip(pids, parts, strict=True)
    ]
    try:
        run = _load(cfg)
    finally:
        for sampler in samplers:
            try:
                sampler.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.communicate()
    with raw.open("w") as merged:
        for part in parts:
            if part.exists():
                merged.write(part.read_text(errors="replace"))
                part.unlink()
    summary = profile.analyse(raw)
    text = raw.with_name(raw.stem.replace("profile-", "profile-summary-") + ".txt")
    text.write_text(profile.render(summary))
    print(f"  profiled run: {run['rps']} requests/s; {text}", file=sys.stderr)
    print(profile.render(summary), file=sys.stderr)
    return {"run": run, "summary_file": str(text.relative_to(ROOT)), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(RESULTS / "search-ot_search_1m.json"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument(
        "--think",
        type=float,
        default=1.0,
        help="paced run: seconds between a searcher's queries (0: none)",
    )
    parser.add_argument("--paced-seconds", type=float, default=30.0)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--profile", action="store_true", help="py-spy the API during one more run")
    parser.add_argument("--no-relevance", action="store_true")
    parser.add_argument(
        "--start-seconds",
        type=float,
        default=START_SECONDS,
        help="how long the server may take to answer /healthz (its warm-up: longer when loaded)",
    )
    args = parser.parse_args()

    manifest = json.loads(Path(args.manifest).read_text())
    kind = "sqlite" if manifest["url"].startswith("sqlite") else "pg"
    data_dir = Path(args.manifest).with_suffix("")
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _env(manifest, data_dir, -(-args.clients // args.server_workers))
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
    queries = [q["q"] for q in manifest["queries"]]
    pg_database = manifest["url"].rsplit("/", 1)[-1] if kind == "pg" else None
    cfg = {
        "host": HOST,
        "port": port,
        "key": key,
        "queries": queries,
        "clients": args.clients,
        "warmup": 2.0,
        "duration": args.seconds,
        "server_pid": server.pid,
        "pg_database": pg_database,
    }
    profiled = None
    relevance = None
    paced = None
    try:
        deadline = time.monotonic() + args.start_seconds
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start; see serve.log")
            time.sleep(0.2)
        if args.runs or args.think or args.profile:
            _load({**cfg, "warmup": 0.0, "duration": 3.0})  # warm-up: caches, pools, plans
        runs = []
        for n in range(args.runs):
            load = os.getloadavg()[0]
            if args.client == "httpx":
                run = _httpx_run(base, key, queries, args.clients, args.seconds)
            else:
                run = _load(cfg)
            run["load_1m"] = round(load, 2)
            runs.append(run)
            print(f"  closed run {n + 1}: {run}", file=sys.stderr)
        if args.think > 0:
            load = os.getloadavg()[0]
            paced = _load({**cfg, "think": args.think, "duration": args.paced_seconds})
            paced["load_1m"] = round(load, 2)
            print(f"  paced run (think {args.think} s): {paced}", file=sys.stderr)
        if args.profile:
            profiled = _profiled(cfg, server.pid)
        if not args.no_relevance:
            relevance = asyncio.run(_relevance(base, key, manifest["queries"]))
    finally:
        stop_group(server)
        log.close()
    p95 = statistics.median(r["p95_ms"] for r in runs) if runs else None
    result = {
        "database": kind,
        "orders": manifest["orders"],
        "clients": args.clients,
        "client": args.client,
        "server_workers": args.server_workers,
        "runs": runs,
        "p95_ms_median": p95,
        "p95_target_ms": TARGET_P95_MS[kind],
        "paced": paced,
        "relevance": relevance,
        "profile": profiled,
        "index_bytes_per_order": manifest.get("index_bytes_per_order"),
        "load_seconds": manifest.get("load_seconds"),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"search-bench-{kind}-{manifest['orders']}-{stamp}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    shown = {k: v for k, v in result.items() if k not in ("relevance", "profile")}
    print(json.dumps(shown, ensure_ascii=False))
    line = f"closed p95 {p95} ms (target {TARGET_P95_MS[kind]})"
    if paced:
        line += f"; paced p95 {paced['p95_ms']} ms"
    if relevance:
        line += f"; hit@5 {relevance['hit_at_5']:.1%}, exact first {relevance['exact_first']}"
    print(f"{line} -> {out}")


if __name__ == "__main__":
    main()
