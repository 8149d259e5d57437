"""File import benchmark: `python -m bench.channels_import [--orders N] [--rounds R] [--url URL]`.

Writes an N-order Douyin-style XLSX export with XlsxWriter (one row per line; a third of the
orders have two lines) into a temp dir, creates a fresh database (SQLite by default, the app's
default backend; `--url` for PostgreSQL), migrates it, seeds a warehouse with stock and a
`douyin` account, then runs the import exactly as `ordertally import` does
(`channels.import_cli.import_file`, chunks of `import_chunk_orders`). Prints parse time (rows
to canonical orders), ingest time (orders stored), total and orders/s, per round and the median
over rounds (a fresh database each round). The target of issue 6 is 100,000 orders in ≤ 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from bench.seed import stocked_warehouse

SKUS = ("TEA-LJ-250", "CUP-CER-01", "TEA-BLK-100")
HEADER = (
    "主订单编号",
    "子订单编号",
    "选购商品",
    "商品数量",
    "商品ID",
    "商家编码",
    "商品单价",
    "运费",
    "商家优惠",
    "收件人",
    "收件人手机号",
    "省",
    "市",
    "区",
    "详细地址",
    "订单提交时间",
    "支付完成时间",
    "订单状态",
)


def write_xlsx(path: Path, n: int) -> int:
    """An N-order export; returns its data rows."""
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = workbook.add_worksheet("订单")
    sheet.write_row(0, 0, HEADER)
    t0 = datetime(2026, 11, 20, 8, 0)
    row = 1
    for i in range(n):
        placed = t0 + timedelta(seconds=i)
        lines = 2 if i % 3 == 0 else 1
        phone = f"138{i % 100_000_000:08d}"
        for j in range(lines):
            sku = SKUS[(i + j) % 3]
            sheet.write_row(
                row,
                0,
                (
                    f"69{i:016d}",
                    f"69{i:016d}{j}",
                    f"商品 {sku}",
                    1 + (i + j) % 2,
                    f"358{(i + j) % 3}",
                    sku,
                    "59.90" if j == 0 else "39.90",
                    "0.00",
                    "0.00",
                    "张三",
                    phone,
                    "上海市",
                    "上海市",
                    "浦东新区",
                    "世纪大道1号",
                    placed.strftime("%Y/%m/%d %H:%M:%S"),
                    (placed + timedelta(seconds=30)).strftime("%Y/%m/%d %H:%M:%S"),
                    "待发货",
                ),
            )
            row += 1
    workbook.close()
    return row - 1


async def _prepare(url: str) -> None:
    from ordertally.channels import service
    from ordertally.channels.schemas import AccountCreate
    from ordertally.core.db import Database

    db = Database(url)
    async with db.transaction() as session:
        await stocked_warehouse(session, SKUS)
        await service.create_account(
            session, AccountCreate(code="bench_douyin", platform="douyin", name="抖店基准")
        )
    await db.dispose()


async def _import(url: str, path: Path) -> tuple[float, float, float, int, int, float]:
    from ordertally.channels.import_cli import import_file
    from ordertally.core.db import Database
    from ordertally.core.settings import get_settings

    db = Database(url)
    updates = [0]

    def progress(rows: int, total: int | None, stored: int) -> None:
        updates[0] += 1  # what the CLI's progress bar receives, without drawing it

    cpu = time.process_time()
    try:
        summary = await import_file(
            db,
            "bench_douyin",
            path,
            chunk=get_settings().import_chunk_orders,
            progress=progress,
        )
    finally:
        await db.dispose()
    cpu = time.process_time() - cpu
    assert summary.rejected_rows == 0 and not summary.not_stored, summary
    return (
        summary.parse_seconds,
        summary.ingest_seconds,
        summary.total_seconds,
        summary.created,
        summary.rows,
        cpu,
    )


async def _drop(server_url: str, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        name = make_url(url).database
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def _database(base: Path, url: str | None) -> str:
    if url is None:
        return f"sqlite+aiosqlite:///{base / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"ot_bench_import_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        await engine.dispose()

    asyncio.run(create())
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--url", default=None, help="PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ordertally-bench-import-"))
    os.environ.setdefault("ORDERTALLY_DATA_DIR", str(base))
    os.environ.setdefault("ORDERTALLY_PII_KEY", base64.b64encode(secrets.token_bytes(32)).decode())

    from ordertally.core.settings import reset_settings
    from ordertally.ops.migrations import upgrade

    source = base / "douyin-orders.xlsx"
    started = time.perf_counter()
    rows = write_xlsx(source, args.orders)
    print(
        f"wrote {args.orders:,} orders ({rows:,} rows, {source.stat().st_size / 1e6:.1f} MB) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    totals: list[tuple[float, float, float]] = []
    for round_no in range(1, args.rounds + 1):
        url = _database(base, args.url)
        os.environ["ORDERTALLY_DATABASE_URL"] = url
        reset_settings()
        upgrade(url)
        asyncio.run(_prepare(url))
        parse_s, ingest_s, total_s, created, read, cpu_s = asyncio.run(_import(url, source))
        if args.url:
            asyncio.run(_drop(args.url, url))
        assert created == args.orders, (created, args.orders)
        totals.append((parse_s, ingest_s, total_s))
        print(
            f"round {round_no}: parse {parse_s:.2f} s, ingest {ingest_s:.2f} s, "
            f"total {total_s:.2f} s, {created / total_s:,.0f} orders/s ({read:,} rows; "
            f"process CPU {cpu_s:.2f} s)"
        )
    parse_m = statistics.median(t[0] for t in totals)
    ingest_m = statistics.median(t[1] for t in totals)
    total_m = statistics.median(t[2] for t in totals)
    backend = "postgresql" if args.url else "sqlite"
    print(
        f"median of {len(totals)} ({backend}): parse {parse_m:.2f} s, ingest {ingest_m:.2f} s, "
        f"total {total_m:.2f} s, {args.orders / total_m:,.0f} orders/s "
        f"(target: {args.orders:,} orders in ≤ 60 s: {'met' if total_m <= 60 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
