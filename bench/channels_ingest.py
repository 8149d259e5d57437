"""Channel ingest throughput: `python -m bench.channels_ingest [--orders N] [--url URL]`.

Creates a scratch database (SQLite by default, the app's default backend), migrates it, seeds
one warehouse with stock for a few SKUs, then times `ingest_orders` over N new orders in chunks
of 1,000 (the file import's call pattern), then the same N again (all duplicates), then the
"exactly once" proof: the same orders delivered by webhook, pull and file, repeated and
interleaved, must leave exactly N orders.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.seed import stocked_warehouse


def _env(url: str | None) -> str:
    tmp = tempfile.mkdtemp(prefix="ordertally-bench-channels-")
    os.environ.setdefault("ORDERTALLY_DATA_DIR", tmp)
    os.environ.setdefault("ORDERTALLY_PII_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    url = url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    os.environ["ORDERTALLY_DATABASE_URL"] = url
    return url


async def _run(url: str, n: int, chunk: int, profile: bool) -> None:
    from sqlalchemy import func, select

    from ordertally.channels import service
    from ordertally.channels.canonical import (
        CanonicalAddress,
        CanonicalLine,
        CanonicalOrder,
        PlatformStatus,
    )
    from ordertally.channels.ingest import ingest_orders
    from ordertally.channels.schemas import AccountCreate
    from ordertally.core.db import Database
    from ordertally.orders.models import SalesOrder

    db = Database(url)
    skus = ["TEA-LJ-250", "CUP-CER-01", "TEA-BLK-100"]
    async with db.transaction() as session:
        await stocked_warehouse(session, skus)
        await service.create_account(
            session, AccountCreate(code="bench_file", platform="file", name="bench")
        )
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    orders = [
        CanonicalOrder(
            platform="file",
            external_id=f"B{i:08d}",
            status=PlatformStatus.PAID,
            currency="CNY",
            lines=(
                CanonicalLine(skus[i % 3], 1 + i % 2, 5990, category="tea"),
                CanonicalLine(skus[(i + 1) % 3], 1, 3990),
            ),
            buyer_name="张三",
            buyer_phone=f"138{i % 100_000_000:08d}",
            address=CanonicalAddress(
                "张三", f"138{i % 100_000_000:08d}", "上海市", "上海市", "浦东新区", "世纪大道1号"
            ),
            placed_at=t0,
            updated_at=t0 + timedelta(seconds=i),
            paid_at=t0,
        )
        for i in range(n)
    ]

    async def ingest_all(via: str) -> tuple[float, int, int]:
        created = duplicates = 0
        started = time.perf_counter()
        for start in range(0, n, chunk):
            result = await ingest_orders(db, "bench_file", orders[start : start + chunk], via=via)
            created += result.created
            duplicates += result.duplicates
            assert not result.errors, result.errors[:3]
        return time.perf_counter() - started, created, duplicates

    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    elapsed, created, _ = await ingest_all("file")
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    print(f"backend      {db.dialect}")
    print(f"new orders   {created} in {elapsed:.2f} s = {created / elapsed:,.0f} orders/s")
    elapsed, _, duplicates = await ingest_all("pull")
    print(f"duplicates   {duplicates} in {elapsed:.2f} s = {duplicates / elapsed:,.0f} orders/s")
    # Exactly once: webhook, pull and file, repeated and interleaved.
    started = time.perf_counter()
    tasks = [
        ingest_orders(db, "bench_file", orders[::-1], via="webhook"),
        ingest_orders(db, "bench_file", orders, via="pull"),
        ingest_orders(db, "bench_file", orders[n // 2 :] + orders[: n // 2], via="file"),
    ]
    results = await asyncio.gather(*tasks)
    async with db.transaction(write=False) as session:
        count = await session.scalar(select(func.count()).select_from(SalesOrder))
    print(
        f"interleaved  3 x {n} deliveries in {time.perf_counter() - started:.2f} s: "
        f"{sum(r.created for r in results)} created, {count} orders in total (expected {n})"
    )
    assert count == n
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--url", default=None, help="database URL (default: scratch SQLite)")
    parser.add_argument("--profile", action="store_true", help="cProfile the first pass")
    args = parser.parse_args()
    url = _env(args.url)
    from ordertally.ops.migrations import upgrade

    upgrade(url)
    asyncio.run(_run(url, args.orders, args.chunk, args.profile))


if __name__ == "__main__":
    main()
