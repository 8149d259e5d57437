"""The exception workbench's figures on PostgreSQL (issue 17):
`python -m bench.casework [--orders N] [--cases M] [--runs R] [--queries Q]`.

A scratch database, migrated, then:
- batch: N paid orders (inserted server-side with generate_series, one line each); R times a
  sub-status batch (each run a new value, so every order changes) is previewed, confirmed and
  run by `casework.batch.run` (chunks of 500, one transaction each); timed end to end, then
  checked: N `batch_audit` rows and N `order_event` rows per run.
- listing: M cases COPY-loaded over the orders (a year of cases, about 5% still active; types,
  sides, roles and due times spread), VACUUM ANALYZE, then Q calls per filter shape of the list
  use case (`casework.service.list_cases`: one page of 50 + facet counts per type, category,
  state and role), each in its own read transaction; p50/p95 per shape.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
TYPES = ["double_payment", "stock_shortage", "tracking_stale", "sku_unmapped", "address_changed"]
SIDES = {
    "double_payment": "customer",
    "stock_shortage": "supply_chain",
    "tracking_stale": "supply_chain",
    "sku_unmapped": "system",
    "address_changed": "customer",
}
# A year of cases: most are closed; about 5% still need work (the workbench's usual view).
STATES = ["open", "in_progress", "escalated", "resolved", "cancelled"]
STATE_WEIGHTS = [2, 2, 1, 85, 10]
ROLES = ["ops", "cs", "finance", "warehouse"]
COPY_COLUMNS = [
    "order_id", "category", "type", "status", "blocking", "detail", "created_at",
    "side", "severity", "owner_role", "due_at", "announced_at",
]  # fmt: skip


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


async def _seed_orders(db: Any, count: int) -> None:
    async with db.transaction() as session:
        await session.execute(
            text(
                """
                INSERT INTO sales_order (order_no, channel, status, version, currency,
                  subtotal_minor, discount_minor, total_minor, base_currency, fx_rate,
                  customer_name_enc, customer_name_masked, customer_phone_enc,
                  customer_phone_bidx, customer_phone_masked, customer_phone_last4,
                  shipping_address_enc, ship_name_masked, ship_phone_masked, ship_province,
                  ship_city, ship_district, fingerprint, created_by, created_at, updated_at,
                  shipping_minor, tax_minor, fee_minor)
                SELECT 'B' || lpad(g::text, 12, '0'), CASE WHEN g % 3 = 0 THEN 'douyin'
                  ELSE 'wechat_mini' END, 'paid', 2, 'CNY', 1000, 0, 1000, 'CNY', '1',
                  'x', '张*', 'x', md5(g::text), '138****0000', '0000', 'x', '张*',
                  '138****0000', '上海市', '上海市', '浦东新区', md5(g::text), 'bench',
                  now(), now(), 0, 0, 0
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": count},
        )
        await session.execute(
            text(
                """
                INSERT INTO order_line (order_id, line_no, sku, quantity, unit_price_minor,
                  discount_minor, total_minor)
                SELECT id, 1, 'SKU-' || (id % 50), 1, 1000, 0, 1000 FROM sales_order
                """
            )
        )


async def _bench_batch(db: Any, orders: int, runs: int) -> list[float]:
    from sqlalchemy import func, select

    from ordertally.casework import batch
    from ordertally.casework.models import BatchAudit
    from ordertally.exceptions.service import Who
    from ordertally.orders.models import OrderEvent

    times: list[float] = []
    for run in range(runs):
        started = time.perf_counter()
        async with db.transaction() as session:
            batch_id, total, _ = await batch.create(
                session,
                "sub_status",
                "orders",
                {"status": "paid"},
                {"sub_status": f"海关查验中 #{run}"},
                Who("bench"),
            )
            await batch.confirm(session, batch_id)
        state = await batch.run(db, batch_id)
        times.append(time.perf_counter() - started)
        async with db.transaction(write=False) as session:
            audit = await session.scalar(
                select(func.count()).where(BatchAudit.batch_id == batch_id)
            )
            events = await session.scalar(
                select(func.count()).where(OrderEvent.event == "set_sub_status")
            )
        assert (state, total, audit, events) == ("done", orders, orders, orders * (run + 1)), (
            state,
            total,
            audit,
            events,
        )
        print(f"  batch run {run + 1}: {times[-1]:.2f} s ({orders} orders, {audit} audit rows)")
    return times


async def _copy_cases(url: str, cases: int, orders: int) -> None:
    import asyncpg

    rng = random.Random(17)
    now = datetime.now(UTC)
    records = []
    for i in range(cases):
        case_type = TYPES[i % len(TYPES)]
        created = now - timedelta(minutes=rng.randrange(0, 60 * 24 * 365))
        records.append(
            (
                rng.randrange(1, orders + 1),
                "bench",
                case_type,
                rng.choices(STATES, STATE_WEIGHTS)[0],
                False,
                "{}",
                created,
                SIDES[case_type],
                "normal",
                rng.choice(ROLES),
                created + timedelta(hours=rng.choice((2, 4, 24))),
                created,
            )
        )
    pg = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(pg)
    try:
        await conn.copy_records_to_table(
            "exception_case",
            records=records,
            columns=COPY_COLUMNS,
        )
        await conn.execute("VACUUM ANALYZE exception_case")
    finally:
        await conn.close()


async def _bench_listing(db: Any, queries: int) -> dict[str, tuple[float, float]]:
    from ordertally.casework import service
    from ordertally.casework.filters import CaseFilter
    from ordertally.core import clock

    now = clock.now()
    shapes = {
        "state=open": CaseFilter(state="open", now=now),
        "state=escalated + category": CaseFilter(state="escalated", category="customer", now=now),
        "type + state": CaseFilter(type="stock_shortage", state="in_progress", now=now),
        "role + breached (all states)": CaseFilter(role="finance", breached=True, now=now),
        "channel + sku (order facts)": CaseFilter(
            state="open", channel="douyin", sku="SKU-7", now=now
        ),
        "all cases, no filter": CaseFilter(now=now),
    }
    out: dict[str, tuple[float, float]] = {}
    for name, f in shapes.items():
        samples: list[float] = []
        for _ in range(queries):
            started = time.perf_counter()
            async with db.transaction(write=False) as session:
                page = await service.list_cases(session, f, None, 50)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        p95 = samples[int(len(samples) * 0.95) - 1]
        out[name] = (statistics.median(samples), p95)
        print(f"  {name}: p50 {out[name][0]:.1f} ms, p95 {p95:.1f} ms ({len(page['items'])} rows)")
    return out


async def main(args: argparse.Namespace) -> None:
    from ordertally.core.db import Database
    from ordertally.ops.migrations import upgrade

    admin = os.environ.get("ORDERTALLY_TEST_PG_URL", DEFAULT_PG_URL)
    name = f"ordertally_bench_{secrets.token_hex(6)}"
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade, url)
        db = Database(url, pool_size=5)
        try:
            await _seed_orders(db, args.orders)
            print(f"batch action over {args.orders} orders (PostgreSQL):")
            times = await _bench_batch(db, args.orders, args.runs)
            print(f"  median {statistics.median(times):.2f} s (target <= 30 s)")
            print(f"case listing with facet counts at {args.cases} cases (PostgreSQL):")
            await _copy_cases(url, args.cases, args.orders)
            await _bench_listing(db, args.queries)
        finally:
            await db.dispose()
    finally:
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
