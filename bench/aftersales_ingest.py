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

`--mix all` (the default since issue 18's h36; `--mix pdd` is the stream above) spreads the
orders and the records over four accounts: Pinduoduo, Taobao (`taobao.refunds.receive.get`
refunds: refund only, and returns listed first agreed then SUCCESS), JD (refund applications
approved then refunded) and Douyin (`afterSale/List` items: refund only, returns, exchanges),
each received as a pull stores a page (`platforms.receive_pinduoduo` / `receive_listed`: the
sealed inbox, then the batched apply, later stages moving their case). Checks: one case per
distinct refund id, one refund per refund id that reached its refunded stage, no order
refunded past what it paid, and the whole stream again changes nothing.
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


async def _setup(  # type: ignore[no-untyped-def]
    db, orders: int, shipped: int, account: str = "bench_pdd", platform: str = "pinduoduo"
) -> list[str]:
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
        if account == "bench_pdd":
            await stocked_warehouse(session, skus)
        await service.create_account(
            session, AccountCreate(code=account, platform=platform, name="bench")
        )
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    canon = [
        CanonicalOrder(
            platform=platform,
            external_id=f"{_PREFIX[platform]}{i:08d}",
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
        await ingest_orders(db, account, canon[start : start + 1000], via="pull")
    async with db.transaction(write=False) as session:
        found = await orders_service.by_external_ids(
            session, account, [c.external_id for c in canon[:shipped]]
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


_PREFIX = {"pinduoduo": "261120-", "taobao": "2231", "jd": "2983", "douyin": "6936"}
ACCOUNTS = {
    "pinduoduo": "bench_pdd",
    "taobao": "bench_tb",
    "jd": "bench_jd",
    "douyin": "bench_dy",
}


def _listed_items(
    platform: str, external_ids: list[str], shipped: int, n: int, seed: int
) -> list[dict]:  # type: ignore[type-arg]
    """n list records of a Taobao / JD / Douyin account (fields as the fixtures of
    tests/aftersales/fixtures/SOURCES.md): ~90 % distinct refund stages, a third of the refund
    ids listed twice (agreed, then refunded), the rest repeats of earlier records."""
    rng = random.Random(seed)
    out: list[dict] = []  # type: ignore[type-arg]
    i = 0
    while len(out) < int(n * 0.9):
        k = i % len(external_ids)
        rid = f"{80_000_000 + i}"
        advance = rng.random() < 0.33
        if platform == "taobao":
            ret = k < shipped
            base = {
                "refund_id": rid,
                "tid": int(external_ids[k]),
                "has_good_return": ret,
                "refund_fee": "59.90" if ret else "10.00",
                "outer_id": "TEA-LJ-250",
                "num": 1,
                "reason": "bench",
            }
            stages = ["WAIT_BUYER_RETURN_GOODS", "SUCCESS"] if advance and ret else ["SUCCESS"]
            out += [{**base, "status": st} for st in stages]
        elif platform == "jd":
            base = {"id": rid, "orderId": external_ids[k], "applyRefundSum": 1000}
            out += [{**base, "status": st} for st in (["1", "3"] if advance else ["3"])]
        else:
            kind = rng.choice((0, 0, 3)) if k < shipped else 2
            statuses = {0: [7, 12] if advance else [12], 2: [12], 3: [8]}[kind]
            for st in statuses:
                out.append(
                    {
                        "aftersale_info": {
                            "aftersale_id": rid,
                            "aftersale_type": kind,
                            "aftersale_status": st,
                            "related_id": external_ids[k],
                            "refund_amount": 1000 if kind == 2 else 5990 if kind == 0 else 0,
                        },
                        "order_info": {
                            "shop_order_id": external_ids[k],
                            "related_order_info": [
                                {"shop_sku_code": "TEA-LJ-250", "aftersale_item_num": 1}
                            ],
                        },
                    }
                )
        i += 1
    out += [rng.choice(out[: max(1, len(out) // 2)]) for _ in range(n - len(out))]
    rng.shuffle(out)
    return out


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


async def _run_mixed(url: str, n: int, orders: int, shipped: int, chunk: int, seed: int) -> None:
    from sqlalchemy import func, select

    from ordertally.aftersales import platforms, records
    from ordertally.aftersales.models import AftersaleCase, AftersaleMoney, AftersaleRefund
    from ordertally.core.db import Database

    db = Database(url)
    started = time.perf_counter()
    streams: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    per = orders // len(ACCOUNTS)
    ship = shipped // len(ACCOUNTS)
    for index, (platform, account) in enumerate(ACCOUNTS.items()):
        ids = await _setup(db, per, ship, account, platform)
        count = n // len(ACCOUNTS)
        if platform == "pinduoduo":
            streams[platform] = _records(ids, ship, count, seed)  # type: ignore[assignment]
        else:
            streams[platform] = _listed_items(platform, ids, ship, count, seed + index)
    print(
        f"backend      {db.dialect}, mix of {', '.join(ACCOUNTS)}, later stages "
        f"{'batched' if platforms.BATCH_ADVANCES else 'record by record'}"
    )
    print(
        f"setup        {orders} orders ({shipped} shipped) in {time.perf_counter() - started:.1f} s"
    )

    async def receive(platform: str, page: list[dict]) -> platforms.IngestResult:  # type: ignore[type-arg]
        async with db.transaction() as session:
            if platform == "pinduoduo":
                return await platforms.receive_pinduoduo(
                    session, page, "bench", channel=ACCOUNTS[platform]
                )
            return await platforms.receive_listed(
                session, records.SOURCE_OF[platform], page, "bench", ACCOUNTS[platform]
            )

    async def ingest_all() -> tuple[float, dict[str, int]]:
        total = {"created": 0, "advanced": 0, "duplicates": 0, "refused": 0, "undecided": 0}
        cpu = time.process_time()
        t = time.perf_counter()
        # The accounts' pages interleaved, as their pulls would run side by side.
        pages = sorted(
            (start, platform, items[start : start + chunk])
            for platform, items in streams.items()
            for start in range(0, len(items), chunk)
        )
        for _, platform, page in pages:
            result = await receive(platform, page)
            total["created"] += result.created
            total["advanced"] += result.advanced
            total["duplicates"] += result.duplicates
            total["refused"] += len(result.refused)
            total["undecided"] += result.undecided
        elapsed = time.perf_counter() - t
        print(f"cpu          process {time.process_time() - cpu:.2f} s")
        return elapsed, total

    n_all = sum(len(v) for v in streams.values())
    elapsed, first = await ingest_all()
    print(f"records      {n_all} in {elapsed:.2f} s = {n_all / elapsed:,.0f} records/s: {first}")
    again, second = await ingest_all()
    print(f"again        {n_all} in {again:.2f} s: {second}")
    async with db.transaction(write=False) as session:
        cases = await session.scalar(select(func.count()).select_from(AftersaleCase))
        pairs = select(AftersaleCase.channel, AftersaleCase.platform_refund_id).distinct()
        ids = await session.scalar(select(func.count()).select_from(pairs.subquery()))
        refunds = await session.scalar(select(func.count()).select_from(AftersaleRefund))
        over = await session.scalar(
            select(func.count())
            .select_from(AftersaleMoney)
            .where(AftersaleMoney.refunded_minor > AftersaleMoney.paid_minor)
        )
    # Refund ids that reached a stage with money (each should hold exactly one refund).
    money_ids = set()
    for platform, items in streams.items():
        for item in items:
            if platform == "pinduoduo":
                record = platforms.from_pinduoduo(item, ACCOUNTS[platform])
            else:
                record = platforms.from_listed(
                    records.SOURCE_OF[platform], item, ACCOUNTS[platform]
                )
            if record.amount_minor > 0:
                money_ids.add((platform, record.platform_refund_id))
    print(
        f"tally        {cases} cases for {ids} refund ids, {refunds} refunds for "
        f"{len(money_ids)} refund ids that moved money, {over} over paid (ids per account)"
    )
    assert cases == ids == first["created"] and first["refused"] == 0
    assert refunds == len(money_ids) and over == 0
    assert second["created"] == second["advanced"] == 0
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
    parser.add_argument(
        "--advances",
        choices=("batch", "each"),
        default="batch",
        help="with --mix all: later stages as batched pages (batch) or record by record (each)",
    )
    parser.add_argument(
        "--mix",
        choices=("all", "pdd"),
        default="all",
        help="all: Pinduoduo, Taobao, JD and Douyin records; pdd: Pinduoduo's only (--path)",
    )
    args = parser.parse_args()
    url = _env(args.url)
    from ordertally.ops.migrations import upgrade

    upgrade(url)
    if args.mix == "all":
        from ordertally.aftersales import platforms

        platforms.BATCH_ADVANCES = args.advances == "batch"
        asyncio.run(_run_mixed(url, args.records, args.orders, args.shipped, args.chunk, args.seed))
        return
    asyncio.run(
        _run(url, args.records, args.orders, args.shipped, args.chunk, args.seed, args.path)
    )


if __name__ == "__main__":
    main()
