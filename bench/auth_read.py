"""`python -m bench.auth_read`: what the auth revision read costs every request (ADR 0026).

A request that would use the key cache first reads the auth revision, from a read that starts
after it arrived. Before: a read transaction through an ORM session (BEGIN, SELECT, COMMIT).
After: `Database.read_one`, one autocommit statement on a pooled connection (PostgreSQL). Each
way runs --reads sequential reads, --rounds times interleaved, in one process against a scratch
PostgreSQL database; the figures are the process's CPU time and the wall time per read (CPU time
holds up on a busy machine, wall time does not), medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from bench.__main__ import DEFAULT_PG_URL
from bench.server import scratch_database


async def _measure(url: str, reads: int, rounds: int) -> dict[str, Any]:
    from ordertally.auth import repository
    from ordertally.core.db import Database

    db = Database(url, pool_size=2)
    try:

        async def before() -> int:
            async with db.transaction(write=False) as session:
                return await repository.revision(session)

        async def after() -> int:
            return await repository.revision_now(db)

        ways = {"transaction": before, "read_one": after}
        for way in ways.values():  # warm: connections open, statements prepared
            for _ in range(200):
                await way()
        figures: dict[str, dict[str, list[float]]] = {
            name: {"cpu_us": [], "wall_us": []} for name in ways
        }
        for _ in range(rounds):
            for name, way in ways.items():
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(reads):
                    await way()
                figures[name]["cpu_us"].append((time.process_time() - cpu0) / reads * 1e6)
                figures[name]["wall_us"].append((time.perf_counter() - wall0) / reads * 1e6)
    finally:
        await db.dispose()
    out: dict[str, Any] = {
        name: {k: round(statistics.median(v), 1) for k, v in f.items()}
        for name, f in figures.items()
    }
    out["cpu_ratio"] = round(out["read_one"]["cpu_us"] / out["transaction"]["cpu_us"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL", DEFAULT_PG_URL)
    )
    args = parser.parse_args()
    with scratch_database("pg", args.pg_url, {}) as db:
        result = asyncio.run(_measure(db.url, args.reads, args.rounds))
    result["load_1m"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
