"""`python -m bench.search_engine --manifest M`: each relevance query of a search manifest timed
through the search service in this one process, one at a time, no HTTP (the engine's and the
service's share of a search, apart from the server's CPU queue). Both databases.

Every query of the manifest --rounds times (the first round unmeasured: the segmenter's
dictionary, the synonyms, the database's cache); per query the median of its rounds, then
p50/p95/max over the queries, per kind too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * q + 0.5) - 1)], 2)


async def _measure(url: str, queries: list[dict[str, Any]], rounds: int) -> dict[str, list[float]]:
    from ordertally.core.db import Database
    from ordertally.search import service
    from ordertally.search.repository import Filters

    db = Database(url, pool_size=1)
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for n in range(rounds + 1):
            for q in queries:
                started = time.perf_counter()
                async with db.transaction(write=False) as session:
                    await service.search(session, q["q"], Filters(), limit=20)
                if n:
                    times[q["q"]].append((time.perf_counter() - started) * 1000)
    finally:
        await db.dispose()
    return times


def use_manifest(path: str) -> dict[str, Any]:
    """A search manifest, with this process set to its database and PII key (the query tokens
    must be made with the key the rows were)."""
    manifest: dict[str, Any] = json.loads(Path(path).read_text())
    os.environ["ORDERTALLY_PII_KEY"] = manifest["pii_key"]
    os.environ["ORDERTALLY_DATABASE_URL"] = manifest["url"]
    return manifest


def add_split_option(parser: argparse.ArgumentParser) -> None:
    """`--no-split`: the index reads every term (see `split_as_asked`)."""
    parser.add_argument(
        "--no-split",
        action="store_true",
        help="the index reads every term (no broad term checked on the rows: query.split)",
    )


def split_as_asked(args: argparse.Namespace) -> None:
    """With --no-split, no term is common enough to be split off (ADR 0060's before)."""
    if args.no_split:
        from ordertally.search import query

        query.BROAD_SHARE = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    add_split_option(parser)
    args = parser.parse_args()
    split_as_asked(args)
    manifest = use_manifest(args.manifest)
    load = os.getloadavg()[0]
    times = asyncio.run(_measure(manifest["url"], manifest["queries"], args.rounds))
    each = {q: statistics.median(v) for q, v in times.items()}
    kinds: dict[str, list[float]] = defaultdict(list)
    for q in manifest["queries"]:
        kinds[q["kind"]].append(each[q["q"]])
    values = list(each.values())
    result = {
        "engine": manifest.get("engine", "pg"),
        "split": not args.no_split,
        "orders": manifest["orders"],
        "queries": len(values),
        "ms": {"p50": _quantile(values, 0.5), "p95": _quantile(values, 0.95), "max": max(values)},
        "per_kind_p50_max_ms": {
            k: [_quantile(v, 0.5), round(max(v), 2)] for k, v in sorted(kinds.items())
        },
        "load_1m": round(load, 2),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
