"""`python -m bench.search_plans --manifest M`: PostgreSQL's plan of each kind of search in a
search manifest, as the API's statement runs it, read only.

The API sends one prepared statement per shape of search (bound parameters; the driver keeps it
prepared on the connection), so after five runs PostgreSQL may switch to a generic plan that
cannot see the tokens. For each query kind this prepares the API's statement, runs it six times
and then `EXPLAIN (ANALYZE, BUFFERS) EXECUTE`s it: the plan the server actually uses, with the
index it reads, the rows it expected and found, any Gather and its parallel workers, JIT, and
the time, on a connection of the app's own `Database` (its connection settings).
`--shared`: one prepared statement for every query in turn, each run once then explained, as
on an API connection, where every search of one shape shares the statement and its plan cache
(after five runs, a generic plan may serve every query).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from typing import Any

from bench.search_engine import add_split_option, split_as_asked, use_manifest


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def summary(explained: dict[str, Any]) -> dict[str, Any]:
    """The figures of one `EXPLAIN (ANALYZE, FORMAT JSON)` that say how a search ran."""
    nodes = list(_nodes(explained["Plan"]))
    return {
        "nodes": [n["Node Type"] for n in nodes],
        "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
        "workers_planned": sum(n.get("Workers Planned", 0) for n in nodes),
        "workers_launched": sum(n.get("Workers Launched", 0) for n in nodes),
        "rows_estimated": max(n.get("Plan Rows", 0) for n in nodes),
        "rows_matched": max(
            (n.get("Actual Rows", 0) for n in nodes if n["Node Type"] == "Bitmap Heap Scan"),
            default=None,
        ),
        "cost": explained["Plan"]["Total Cost"],
        # pages read (from shared buffers or not): what a search costs, whatever else runs
        "buffers": explained["Plan"].get("Shared Hit Blocks", 0)
        + explained["Plan"].get("Shared Read Blocks", 0),
        "checked": any("ts_match_vq" in n.get("Filter", "") for n in nodes),
        "jit": bool(explained.get("JIT")),
        "ms": round(explained.get("Execution Time", 0.0), 3),
    }


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _explain(
    url: str, queries: list[dict[str, Any]], per_kind: int, shared: bool
) -> list[dict[str, Any]]:
    from sqlalchemy.dialects.postgresql import asyncpg as pg_dialect

    from ordertally.core.db import Database
    from ordertally.search import dictionary, repository, service

    picked: dict[str, list[str]] = {}
    for q in queries:
        if len(picked.setdefault(q["kind"], [])) < per_kind:
            picked[q["kind"]].append(q["q"])
    db = Database(url, pool_size=1)
    found = []
    prepared = False
    try:
        async with db.reads() as session:
            await dictionary.ensure_current(session)
            synonyms = await service.synonym_map(session)
            shares = await service.token_shares(session)
            driver = (await (await session.connection()).get_raw_connection()).driver_connection
            assert driver is not None
            settings = await driver.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_parallel_workers_per_gather', 'jit', 'plan_cache_mode')"
            )
            for kind, texts in picked.items():
                for text in texts:
                    query = service.prepare(text, synonyms, "pg", shares=shares)
                    stmt, values = repository.search_statement(
                        "postgresql", query.match, repository.Filters(), None, 21
                    )
                    compiled = stmt.compile(dialect=pg_dialect.dialect())
                    params = [
                        compiled.params[k] if k not in values else values[k]
                        for k in compiled.positiontup or []
                    ]
                    literals = ", ".join(_literal(p) for p in params)
                    if not shared:
                        await driver.execute(f"PREPARE ot_plan AS {compiled}")
                    elif not prepared:
                        await driver.execute(f"PREPARE ot_plan AS {compiled}")
                        prepared = True
                    try:
                        for _ in range(1 if shared else 6):
                            await driver.execute(f"EXECUTE ot_plan({literals})")
                        raw = await driver.fetchval(
                            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE ot_plan({literals})"
                        )
                        explained = (json.loads(raw) if isinstance(raw, str) else raw)[0]
                    finally:
                        if not shared:
                            await driver.execute("DEALLOCATE ot_plan")
                    found.append({"kind": kind, "q": text, **summary(explained)})
    finally:
        await db.dispose()
    return [{"settings": {r["name"]: r["setting"] for r in settings}}, *found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--per-kind", type=int, default=1)
    parser.add_argument(
        "--shared",
        action="store_true",
        help="one prepared statement for every query, in turn, as on an API connection",
    )
    add_split_option(parser)
    args = parser.parse_args()
    split_as_asked(args)
    manifest = use_manifest(args.manifest)
    for row in asyncio.run(
        _explain(manifest["url"], manifest["queries"], args.per_kind, args.shared)
    ):
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
