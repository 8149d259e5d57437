"""`python -m bench.search_engines`: the search engines side by side on the same blind tokens —
PostgreSQL GIN (the loaded database, read only), Tantivy (embedded, Rust) and SQLite FTS5 —
for ADR 0032.

The `search_doc` rows (order id and token text, already made by `python -m bench.search_data`)
are read once from the manifest's database into memory. Tantivy indexes them in a temporary
directory (the token text through its `whitespace` tokenizer, doc ids only, the order id as a
fast field to sort by); SQLite indexes them in a temporary file exactly as the migration does
(an external-content FTS5 table, `detail=none`, filled by its `rebuild` command). Each of the
manifest's queries is parsed once by `search/query.py` into its tree of token alternatives,
then asked of every engine in its own terms — PostgreSQL the `to_tsquery` of
`search/repository.py`, FTS5 its MATCH expression, Tantivy a boolean query of term (set)
queries — newest order first, top five. Reported: build time, size per order, per-query
latency in this process (p50/p95 over every query, repeated), and whether each engine returns
the same five orders as PostgreSQL. Figures go to bench/results/ and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.search_engine import use_manifest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOP = 5
FETCH = 50_000
PG_SQL = (
    "SELECT order_id FROM search_doc WHERE hand_tsv @@ to_tsquery('simple'::regconfig, $1) "
    "ORDER BY order_id + 0 DESC LIMIT $2"
)
FTS_SQL = (
    "SELECT order_id FROM search_doc WHERE order_id IN "
    "(SELECT rowid FROM hand_search_fts WHERE hand_search_fts MATCH ?) "
    "ORDER BY order_id DESC LIMIT ?"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    from bench.loadgen import percentile

    ordered = sorted(values_ms)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p95_ms": round(percentile(ordered, 0.95), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else 0.0,
    }


def _latency(per_query: list[list[float]], queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles over every timed query, and the median per query kind."""
    by_kind: dict[str, list[float]] = {}
    for q, times in zip(queries, per_query, strict=True):
        by_kind.setdefault(q["kind"], []).extend(times)
    return {
        **_percentiles([t for times in per_query for t in times]),
        "median_by_kind_ms": {
            k: round(statistics.median(v), 3) for k, v in sorted(by_kind.items())
        },
    }


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- the queries ------------------------------------------------------------------------------


async def parsed_queries(url: str, texts: list[str]) -> list[Any]:
    """Each query's tree, as the API parses it (the catalogue's words in the segmenter, the
    merchant's synonyms)."""
    from ordertally.core.db import Database
    from ordertally.search import dictionary, service
    from ordertally.search import query as parser

    db = Database(url, pool_size=1)
    try:
        async with db.reads() as session:
            await dictionary.ensure_current(session)
            synonyms = await service.synonym_map(session)
    finally:
        await db.dispose()
    today = service.today()
    return [parser.AllOf(tuple(t.node for t in parser.parse(q, today, synonyms))) for q in texts]


# --- PostgreSQL -------------------------------------------------------------------------------


async def read_rows(url: str, orders: int | None) -> list[tuple[int, str]]:
    """(order_id, tokens) of every index row, in order id order (read only)."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    rows: list[tuple[int, str]] = []
    try:
        async with conn.transaction(readonly=True):
            sql = "SELECT order_id, tokens FROM search_doc ORDER BY order_id"
            if orders:
                sql += f" LIMIT {int(orders)}"
            cursor = await conn.cursor(sql)
            while batch := await cursor.fetch(FETCH):
                rows.extend((r[0], r[1]) for r in batch)
                print(f"  read {len(rows)} rows", file=sys.stderr, end="\r", flush=True)
    finally:
        await conn.close()
    print(file=sys.stderr)
    return rows


async def pg_side(url: str, expressions: list[str], repeat: int) -> dict[str, Any]:
    """Every query `repeat` times (after one warm-up pass): latencies and the top five."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        statement = await conn.prepare(PG_SQL)
        sizes = await conn.fetchrow(
            "SELECT pg_total_relation_size('search_doc') AS total, "
            "pg_relation_size('hand_search_doc_tsv') AS gin, "
            "(SELECT count(*) FROM search_doc) AS rows"
        )
        top: list[list[int]] = []
        for e in expressions:
            top.append([r[0] for r in await statement.fetch(e, TOP)])
        latencies: list[list[float]] = [[] for _ in expressions]
        for _ in range(repeat):
            for i, e in enumerate(expressions):
                started = time.perf_counter()
                await statement.fetch(e, TOP)
                latencies[i].append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return {
        "rows": sizes["rows"],
        "bytes_table_and_indexes": sizes["total"],
        "bytes_gin": sizes["gin"],
        "top": top,
        "per_query_ms": latencies,
    }


# --- Tantivy ----------------------------------------------------------------------------------


def tantivy_build(rows: list[tuple[int, str]], directory: Path, threads: int) -> dict[str, Any]:
    """A Tantivy index of the rows: token text by whitespace, doc ids only; order id fast."""
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("tokens", tokenizer_name="whitespace", index_option="basic")
    builder.add_integer_field("order_id", fast=True)
    schema = builder.build()
    directory.mkdir(parents=True)
    started = time.perf_counter()
    index = tantivy.Index(schema, path=str(directory))
    writer = index.writer(heap_size=512_000_000, num_threads=threads)
    for order_id, tokens in rows:
        writer.add_document(tantivy.Document(order_id=order_id, tokens=tokens))
    writer.commit()
    writer.wait_merging_threads()
    seconds = time.perf_counter() - started
    index.reload()
    return {
        "index": index,
        "schema": schema,
        "build_seconds": round(seconds, 1),
        "bytes": _du(directory),
        "segments": index.searcher().num_segments,
    }


def tantivy_query(node: Any, schema: Any) -> Any:
    """The tree of token alternatives as a Tantivy query (AND: must, OR: should)."""
    import tantivy

    from ordertally.search import query as parser

    if isinstance(node, parser.Leaf):
        return tantivy.Query.term_query(schema, "tokens", node.token, index_option="basic")
    if isinstance(node, parser.AnyOf) and all(isinstance(c, parser.Leaf) for c in node.children):
        return tantivy.Query.term_set_query(schema, "tokens", [c.token for c in node.children])
    occur = tantivy.Occur.Should if isinstance(node, parser.AnyOf) else tantivy.Occur.Must
    return tantivy.Query.boolean_query([(occur, tantivy_query(c, schema)) for c in node.children])


def tantivy_side(built: dict[str, Any], trees: list[Any], repeat: int) -> dict[str, Any]:
    """Every query `repeat` times (after one warm-up pass), the query built from the tree
    each time: latencies and the top five."""
    import tantivy

    searcher, schema = built["index"].searcher(), built["schema"]

    def ask(tree: Any) -> list[int]:
        result = searcher.search(
            tantivy_query(tree, schema),
            limit=TOP,
            count=False,
            order_by_field="order_id",
            order=tantivy.Order.Desc,
        )
        return [int(value) for value, _ in result.hits]

    top = [ask(t) for t in trees]
    latencies: list[list[float]] = [[] for _ in trees]
    for _ in range(repeat):
        for i, t in enumerate(trees):
            started = time.perf_counter()
            ask(t)
            latencies[i].append((time.perf_counter() - started) * 1000)
    return {"top": top, "per_query_ms": latencies}


# --- SQLite FTS5 ------------------------------------------------------------------------------


def fts5_build(rows: list[tuple[int, str]], path: Path) -> dict[str, Any]:
    """The migration's FTS5 table (external content over search_doc.tokens, `detail=none`)
    over the rows: the content table filled, then the index built by FTS5's `rebuild`."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE search_doc (order_id INTEGER PRIMARY KEY, tokens TEXT NOT NULL)")
        conn.execute(
            "CREATE VIRTUAL TABLE hand_search_fts USING fts5(tokens, content='search_doc', "
            "content_rowid='order_id', tokenize='unicode61', detail='none')"
        )
        started = time.perf_counter()
        with conn:
            conn.executemany("INSERT INTO search_doc (order_id, tokens) VALUES (?, ?)", rows)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        with conn:
            conn.execute("INSERT INTO hand_search_fts(hand_search_fts) VALUES ('rebuild')")
            conn.execute("INSERT INTO hand_search_fts(hand_search_fts) VALUES ('optimize')")
        seconds = time.perf_counter() - started
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            fts_bytes = conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'hand_search_fts%'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # dbstat is a compile-time option
            fts_bytes = None
    finally:
        conn.close()
    return {
        "content_load_seconds": round(loaded, 1),
        "build_seconds": round(seconds, 1),
        "bytes_file": path.stat().st_size,
        "bytes_fts": fts_bytes,
    }


def fts5_side(path: Path, expressions: list[str], repeat: int) -> dict[str, Any]:
    """Every query `repeat` times (after one warm-up pass): latencies and the top five."""
    conn = sqlite3.connect(path)
    try:
        top = [[r[0] for r in conn.execute(FTS_SQL, (e, TOP))] for e in expressions]
        latencies: list[list[float]] = [[] for _ in expressions]
        for _ in range(repeat):
            for i, e in enumerate(expressions):
                started = time.perf_counter()
                conn.execute(FTS_SQL, (e, TOP)).fetchall()
                latencies[i].append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return {"top": top, "per_query_ms": latencies}


# --- comparison -------------------------------------------------------------------------------


def agreement(
    reference: list[list[int]], other: list[list[int]], queries: list[dict[str, Any]]
) -> dict[str, Any]:
    """How many queries return the same top five as the reference, and the first that do not."""
    same = [a == b for a, b in zip(reference, other, strict=True)]
    differ = [
        {"q": q["q"], "kind": q["kind"], "pg": a, "other": b}
        for q, a, b, s in zip(queries, reference, other, same, strict=True)
        if not s
    ]
    return {"same_top5": sum(same), "of": len(same), "differences": differ[:10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(RESULTS / "search-ot_search_1m.json"))
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the queries")
    parser.add_argument(
        "--orders",
        type=int,
        default=0,
        help="index only the first N rows (a smoke run: the "
        "embedded engines then differ from PostgreSQL, which holds them all)",
    )
    parser.add_argument("--threads", type=int, default=2, help="Tantivy indexing threads")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--tmp", default=None, help="where the temporary indexes go")
    args = parser.parse_args()

    manifest = use_manifest(args.manifest)
    from ordertally.search import query as parser_

    url = manifest["url"]
    queries = manifest["queries"]
    trees = asyncio.run(parsed_queries(url, [q["q"] for q in queries]))
    pg_expressions = [parser_.render(t, "pg") for t in trees]
    fts_expressions = [parser_.render(t, "sqlite") for t in trees]
    load = {"start": round(os.getloadavg()[0], 2)}

    started = time.perf_counter()
    rows = asyncio.run(read_rows(url, args.orders or None))
    read_seconds = time.perf_counter() - started
    token_bytes = sum(len(t) for _, t in rows)
    print(f"  {len(rows)} rows read in {read_seconds:.0f} s", file=sys.stderr)

    result: dict[str, Any] = {
        "orders": len(rows),
        "queries": len(queries),
        "repeat": args.repeat,
        "read_seconds": round(read_seconds, 1),
        "token_text_bytes_per_order": round(token_bytes / max(len(rows), 1)),
        "manifest_gin_build_seconds": manifest.get("gin_seconds"),
    }
    scratch = Path(tempfile.mkdtemp(prefix="ot-engines-", dir=args.tmp))
    try:
        print("  PostgreSQL ...", file=sys.stderr)
        pg = asyncio.run(pg_side(url, pg_expressions, args.repeat))
        result["postgresql"] = {k: v for k, v in pg.items() if k not in ("top", "per_query_ms")}
        result["postgresql"]["latency"] = _latency(pg["per_query_ms"], queries)
        result["postgresql"]["gin_bytes_per_order"] = round(pg["bytes_gin"] / pg["rows"])
        result["postgresql"]["total_bytes_per_order"] = round(
            pg["bytes_table_and_indexes"] / pg["rows"]
        )
        load["after_pg"] = round(os.getloadavg()[0], 2)

        print("  Tantivy build ...", file=sys.stderr)
        built = tantivy_build(rows, scratch / "tantivy", args.threads)
        tv = tantivy_side(built, trees, args.repeat)
        result["tantivy"] = {
            "build_seconds": built["build_seconds"],
            "orders_per_s": round(len(rows) / max(built["build_seconds"], 1e-9)),
            "bytes": built["bytes"],
            "bytes_per_order": round(built["bytes"] / max(len(rows), 1)),
            "segments": built["segments"],
            "latency": _latency(tv["per_query_ms"], queries),
            "vs_postgresql": agreement(pg["top"], tv["top"], queries),
        }
        del built
        shutil.rmtree(scratch / "tantivy", ignore_errors=True)
        load["after_tantivy"] = round(os.getloadavg()[0], 2)

        if not args.no_sqlite:
            print("  SQLite FTS5 build ...", file=sys.stderr)
            path = scratch / "fts5.sqlite"
            fts = fts5_build(rows, path)
            side = fts5_side(path, fts_expressions, args.repeat)
            fts_bytes = fts["bytes_fts"]
            result["sqlite_fts5"] = {
                **fts,
                "orders_per_s": round(len(rows) / max(fts["build_seconds"], 1e-9)),
                "fts_bytes_per_order": round(fts_bytes / len(rows)) if fts_bytes else None,
                "latency": _latency(side["per_query_ms"], queries),
                "vs_postgresql": agreement(pg["top"], side["top"], queries),
            }
            load["after_sqlite"] = round(os.getloadavg()[0], 2)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_1m"] = load
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"search-engines-{len(rows)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
