"""Platform after-sale records ingested exactly once: `python -m bench.aftersales_ingest
[--records N] [--url URL]`.

Creates a scratch database (SQLite by default), migrates it and imports Pinduoduo orders
through the channel ingest (most paid, `--shipped` of them walked to shipped: setup, not
timed). Then times `aftersales.platforms.ingest` (`--path each`: the per-record path,
`ingest_each`) over N `pdd.refund.list.increment.get`-shaped
records in pages of `--chunk` (one transaction each, as a pull would): refund only on paid
orders, return and refund, exchange and reshipment on shipped ones, with ~10 % of the records
repeated (a platform's pages overlap). Then the whole stream again (all duplicates). Checks:
one case per distinct refund id, one refund record per distinct refund that moved money,
refunded ≤ paid on every order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.seed import stocked_warehouse


def _env(url: str | None) -> str:
    tmp = tempfile.mkdtemp(prefix="ordertally-bench-aftersales-")
    os.environ.setdefault("ORDERTALLY_DATA_DIR", tmp)
    os.environ.setdefault("ORDERTALLY_PII_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    os.environ["ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE"] = "false"
    url = url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    os.environ["ORDERTALLY_DATABASE_URL"] = url
    return url


async def _setup(db, orders: int, shipped: int) -> list[str]:  # type: ignore[no-untyped-def]
    from ordertally.channels import service
    from ordertally.channels.canonical import (
        CanonicalAddress,
        CanonicalLine,
        CanonicalOrder,
        PlatformStatus,
    )
    from ordertally.channels.ingest import ingest_orders
    from ordertally.channels.schemas import AccountCreate
    from ordertally.orders import service as orders_service
    from ordertally.orders.state_machine import Actor, ActorKind

    skus = ["TEA-LJ-250", "CUP-CER-01"]
    async with db.transaction() as session:
        await stocked_warehouse(session, skus)
        await service.create_account(
            session, AccountCreate(code="bench_pdd", platform="pinduoduo", name="bench")
        )
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    canon = [
        CanonicalOrder(
            platform="pinduoduo",
            external_id=f"261120-{i:08d}",
            status=PlatformStatus.PAID,
            currency="CNY",
            lines=(CanonicalLine(skus[0], 2, 5990), CanonicalLine(skus[1], 1, 3990)),
            buyer_name="张三",
            buyer_phone=f"138{i % 100_000_000:08d}",
            address=CanonicalAddress(
                "张三", f"138{i % 100_000_000:08d}", "上海市", "上海市", "浦东新区", "世纪大道1号"
            ),
            placed_at=t0,
            updated_at=t0 + timedelta(seconds=i),
            paid_at=t0,
        )
        for i in range(orders)
    ]
    for start in range(0, orders, 1000):
        await ingest_orders(db, "bench_pdd", canon[start : start + 1000], via="pull")
    async with db.transaction(write=False) as session:
        found = await orders_service.by_external_ids(
            session, "bench_pdd", [c.external_id for c in canon[:shipped]]
        )
    steps = [
        ("allocate", ActorKind.ALLOCATOR),
        ("start_fulfillment", ActorKind.WAREHOUSE),
        ("ship", ActorKind.WAREHOUSE),
    ]
    for _, order_no in found.values():
        async with db.transaction() as session:
            for name, kind in steps:
                await orders_service.transition(session, order_no, name, Actor(kind, "bench"))
    return [c.external_id for c in canon]


def _records(
    external_ids: list[str], shipped: int, n: int, seed: int
) -> list[dict[str, int | str]]:
    """n refund-list items: ~90 % distinct refund ids, the rest repeats of earlier ones."""
    rng = random.Random(seed)
    out: list[dict[str, int | str]] = []
    distinct = int(n * 0.9)
    for i in range(distinct):
        k = i % len(external_ids)
        # Shipped orders: return and refund, exchange, reship; the others: refund only.
        kind = rng.choice((3, 3, 4, 5)) if k < shipped else 2
        item: dict[str, int | str] = {
            "id": 9_000_000 + i,
            "order_sn": external_ids[k],
            "after_sales_type": kind,
            "refund_amount": "10.00" if kind == 2 else "59.90",
            "outer_id": "TEA-LJ-250" if kind != 5 else "CUP-CER-01",
            "goods_number": 1,
        }
        out.append(item)
    out += [rng.choice(out[: max(1, len(out) // 2)]) for _ in range(n - distinct)]
    rng.shuffle(out)
    return out


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes with these ids have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _run(
    url: str, n: int, orders: int, shipped: int, chunk: int, seed: int, path: str
) -> None:
    from sqlalchemy import func, select, text

    from ordertally.aftersales import platforms
    from ordertally.aftersales.models import AftersaleCase, AftersaleMoney, AftersaleRefund
    from ordertally.core.db import Database

    ingest = platforms.ingest if path == "batch" else platforms.ingest_each
    db = Database(url)
    started = time.perf_counter()
    external_ids = await _setup(db, orders, shipped)
    print(f"backend      {db.dialect}, path {path}")
    print(
        f"setup        {orders} orders ({shipped} shipped) in {time.perf_counter() - started:.1f} s"
    )
    items = _records(external_ids, shipped, n, seed)
    records = [platforms.from_pinduoduo(i, "bench_pdd") for i in items]
    distinct = {r.platform_refund_id for r in records}

    async def backend_cpu() -> float:
        """CPU seconds of this database's PostgreSQL backends (same machine; 0 on SQLite,
        whose work is in this process)."""
        if db.dialect != "postgresql":
            return 0.0
        async with db.transaction(write=False) as session:
            pids = (
                await session.scalars(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).all()
        return _proc_cpu(list(pids))

    async def ingest_all() -> tuple[float, int, int, int]:
        created = duplicates = refused = 0
        cpu, backend = time.process_time(), await backend_cpu()
        t = time.perf_counter()
        for start in range(0, len(records), chunk):
            async with db.transaction() as session:
                result = await ingest(session, records[start : start + chunk], "bench")
            created += result.created
            duplicates += result.duplicates
            refused += len(result.refused)
        elapsed = time.perf_counter() - t
        print(
            f"cpu          process {time.process_time() - cpu:.2f} s, database backends "
            f"{await backend_cpu() - backend:.2f} s"
        )
        return elapsed, created, duplicates, refused

    elapsed, created, duplicates, refused = await ingest_all()
    print(
        f"records      {len(records)} ({len(distinct)} distinct) in {elapsed:.2f} s = "
        f"{len(records) / elapsed:,.0f} records/s: {created} cases, {duplicates} duplicates, "
        f"{refused} refused"
    )
    again, created2, duplicates2, _ = await ingest_all()
    print(f"again        {len(records)} in {again:.2f} s: {created2} created, {duplicates2} dups")
    async with db.transaction(write=False) as session:
        cases = await session.scalar(select(func.count()).select_from(AftersaleCase))
        ids = await session.scalar(
            select(func.count(func.distinct(AftersaleCase.platform_refund_id)))
        )
        refunds = await session.scalar(select(func.count()).select_from(AftersaleRefund))
        over = await session.scalar(
            select(func.count())
            .select_from(AftersaleMoney)
            .where(AftersaleMoney.refunded_minor > AftersaleMoney.paid_minor)
        )
    money_cases = len({r.platform_refund_id for r in records if r.amount_minor > 0})
    print(f"tally        {cases} cases for {ids} refund ids, {refunds} refunds, {over} over paid")
    assert cases == ids == created == len(distinct) - refused and created2 == 0
    assert refunds <= money_cases and over == 0
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=8_000)
    parser.add_argument("--shipped", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--url", default=None, help="database URL (default: scratch SQLite)")
    parser.add_argument(
        "--path",
        choices=("batch", "each"),
        default="batch",
        help="batch: platforms.ingest (pages); each: the per-record path (ingest_each)",
    )
    args = parser.parse_args()
    url = _env(args.url)
    from ordertally.ops.migrations import upgrade

    upgrade(url)
    asyncio.run(
        _run(url, args.records, args.orders, args.shipped, args.chunk, args.seed, args.path)
    )


if __name__ == "__main__":
    main()
