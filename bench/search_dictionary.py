"""`python -m bench.search_dictionary`: what the catalogue-fed user dictionary costs a query.

Before: a query tokenised (`search.query.parse`) with the shipped dictionary only, no read.
After: the same query preceded by the dictionary check (`search.dictionary.ensure_current`:
one read of the catalogue's revision row, in the query's read transaction) and tokenised with
the words of a --skus catalogue loaded. Also: the one-off cost of loading every word in a fresh
process (the first query after a start or an emptied database), and of taking in one new word
(the first query after a catalogue write). Scratch SQLite file and, with --pg-url, a scratch
PostgreSQL database; medians of --rounds rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import secrets
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

QUERIES = (
    "张三 5678 20260125",
    "普洱 5678",
    "西湖龙井明前特级",
    "八马铁观音 浓香",
    "浦东 世纪大道 张三",
    "shifeng 13812345678",
    "TEA-LJ-250 李四",
    "1月25日 王芳 陶瓷杯",
)
# Characters product names are made of (common ones, so words overlap the base dictionary).
CHARS = "茶龙井普洱铁观音红白绿黑乌龙花果香浓清特级礼盒装杯壶瓷紫砂金银芽春秋冬夏山水云雾峰岩"


def names(n: int) -> list[dict[str, Any]]:
    """N SKUs: a Chinese brand (2-3 characters), a name of two runs, a spec."""
    rng = random.Random(22)
    out = []
    for i in range(n):
        brand = "".join(rng.choice(CHARS) for _ in range(rng.choice((2, 3))))
        run = "".join(rng.choice(CHARS) for _ in range(rng.choice((3, 4, 5))))
        out.append(
            {
                "code": f"SKU-{i:07d}",
                "name": f"{brand}{run} {rng.choice(('特级', '一级', '礼盒装'))}",
                "brand": brand,
                "spec_text": f"{rng.choice(('250g', '500g'))} / {rng.choice(('明前', '雨前'))}",
            }
        )
    return out


def _per_query_us(fn: Any, rounds: int, loops: int) -> float:
    for q in QUERIES:  # warm: the segmenter is built on first use
        fn(q)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(loops):
            for q in QUERIES:
                fn(q)
        samples.append((time.perf_counter() - started) / (loops * len(QUERIES)) * 1e6)
    return statistics.median(samples)


async def _measure(url: str, skus: int, rounds: int, loops: int) -> dict[str, Any]:
    from sqlalchemy import text

    from ordertally.catalog import service as catalog_service
    from ordertally.core.db import Database
    from ordertally.search import dictionary
    from ordertally.search import query as parser

    today = date(2026, 1, 26)
    db = Database(url, pool_size=2)
    out: dict[str, Any] = {}
    try:
        dictionary.forget()
        out["parse_shipped_us"] = _per_query_us(lambda q: parser.parse(q, today), rounds, loops)
        started = time.perf_counter()
        rows = names(skus)
        for start in range(0, len(rows), 5000):
            async with db.transaction() as session:
                await catalog_service.add_skus(session, rows[start : start + 5000], "bench")
        out["catalogue_write_s"] = time.perf_counter() - started
        async with db.transaction(write=False) as session:
            _, revision = await catalog_service.word_revision(session)
            out["words"] = len(await catalog_service.words_between(session, 0, revision))
        # the first query of a fresh process: every word loaded
        dictionary.forget()
        started = time.perf_counter()
        async with db.transaction(write=False) as session:
            out["cold_words_added"] = await dictionary.ensure_current(session)
        out["cold_load_ms"] = (time.perf_counter() - started) * 1e3
        out["parse_catalogue_us"] = _per_query_us(lambda q: parser.parse(q, today), rounds, loops)

        async def check_and_parse(with_check: bool) -> float:
            started = time.perf_counter()
            for _ in range(loops):
                for q in QUERIES:
                    async with db.transaction(write=False) as session:
                        # the search's own statement (a search always runs one)
                        await session.execute(text("SELECT 1"))
                        if with_check:
                            await dictionary.ensure_current(session)
                        parser.parse(q, today)
            return (time.perf_counter() - started) / (loops * len(QUERIES)) * 1e6

        without: list[float] = []
        with_check: list[float] = []
        for _ in range(rounds):  # interleaved, so load changes hit both alike
            without.append(await check_and_parse(False))
            with_check.append(await check_and_parse(True))
        out["txn_parse_us"] = statistics.median(without)
        out["txn_check_parse_us"] = statistics.median(with_check)
        # one new word written by another process: the next query takes it in
        async with db.transaction() as session:
            await catalog_service.create_sku(
                session, {"code": "NEW-1", "name": "犇鑫 白茶", "brand": "犇鑫"}, "bench"
            )
        started = time.perf_counter()
        async with db.transaction(write=False) as session:
            out["new_word_added"] = await dictionary.ensure_current(session)
            parser.parse("犇鑫白茶", today)
        out["new_word_query_ms"] = (time.perf_counter() - started) * 1e3
    finally:
        await db.dispose()
    return out


async def _pg_admin(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--pg-url", default="", help="PostgreSQL admin URL (also measure on it)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ordertally-bench-dictionary-"))
    os.environ["ORDERTALLY_DATA_DIR"] = str(base)
    os.environ["ORDERTALLY_PII_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    from sqlalchemy.engine import make_url

    from ordertally.ops.migrations import upgrade

    targets = [("sqlite", f"sqlite+aiosqlite:///{base / 'dictionary.db'}", None)]
    if args.pg_url:
        name = f"ordertally_bench_{secrets.token_hex(6)}"
        url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
        targets.append(("pg", url, name))
    for kind, url, pg_name in targets:
        if pg_name:
            asyncio.run(_pg_admin(args.pg_url, f'CREATE DATABASE "{pg_name}"'))
        try:
            os.environ["ORDERTALLY_DATABASE_URL"] = url
            upgrade(url)
            result = asyncio.run(_measure(url, args.skus, args.rounds, args.loops))
        finally:
            if pg_name:
                asyncio.run(_pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{pg_name}"'))
        print(
            f"{kind}: {result['words']:,} catalogue words from {args.skus:,} SKUs "
            f"(written in {result['catalogue_write_s']:.1f} s); "
            f"parse {result['parse_shipped_us']:.0f} µs/query with the shipped dictionary, "
            f"{result['parse_catalogue_us']:.0f} µs with the catalogue's; "
            f"read transaction (SELECT 1) + parse {result['txn_parse_us']:.0f} µs, "
            f"+ dictionary check {result['txn_check_parse_us']:.0f} µs "
            f"(check {result['txn_check_parse_us'] - result['txn_parse_us']:+.0f} µs); "
            f"cold load of every word {result['cold_load_ms']:.0f} ms; "
            f"first query after a new word {result['new_word_query_ms']:.1f} ms; "
            f"load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
