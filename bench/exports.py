"""Exports and timeliness benchmark (issue 19): `python -m bench.exports [--orders N] [--runs R]`.

Creates a scratch PostgreSQL database (ORDERTALLY_TEST_PG_URL, default postgres on
127.0.0.1:5432), migrates it and COPY-loads N orders spread over November 2026 (a tenth in USD
at a locked rate) with their order timelines. Then, each in a fresh subprocess so that its peak
RSS is its own:

- `csv`, `xlsx`: the real export path (request, claim, one REPEATABLE READ snapshot, render,
  stream to disk, manifest) of the `orders` template for the month; `xlsx` is the sheet
  rendered by PostgreSQL (ADR 0041), `xlsx-rust` the same export through the Rust writer
  (`ORDERTALLY_EXPORT_XLSX_WRITER=rust`, the ADR 0036 path);
- `writer-xlsxwriter`, `writer-rustpy`, `writer-rvgsrust`: the XLSX writers alone on N
  rendered rows of the same shape (XlsxWriter constant_memory; rustpy-xlsxwriter fed by a
  generator of dicts; rvgsrust-xlsxwriter constant_memory fed 1,000 rows a call, the product's
  writer);
- `stage`: the pre-aggregated stage rows rebuilt from the loaded timelines (timed), then the
  stage table for the month (all orders, by channel, by warehouse), R runs, p50 and p95;
- `aftersale`: after-sales cases on ~5.8 % of the orders (one in 19, and a USD one every 200th;
  500 SKUs, 1-2 lines an order) written through the consumer's write path (timelines,
  stage and KPI rows), the shipped rows for every order, then the month's after-sales KPIs
  (all, by channel, SKU, responsibility) and after-sales stage table, R runs, p50 and p95
  (ADR 0040);
- `consumers`: the analytics timeline and tally consumers draining 7 events per order
  (created, paid, allocated, picking, shipped, parcel shipped, delivered) for
  --consumer-orders orders (default 5,000).

Prints one JSON line per measurement, then drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

PG = os.environ.get(
    "ORDERTALLY_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
MONTH = datetime(2026, 11, 1, tzinfo=UTC) - timedelta(hours=8)  # 1 Nov 00:00 Asia/Shanghai
SECONDS = 30 * 86400
KEY = base64.b64encode(b"b" * 32).decode()
MEASURES = (
    "csv",
    "xlsx",
    "xlsx-rust",
    "writer-xlsxwriter",
    "writer-rustpy",
    "writer-rvgsrust",
    "stage",
    "aftersale",
    "consumers",
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's across exec)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _admin(url: str, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as c:
        await c.execute(text(sql))
    await engine.dispose()


def _records(n: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """sales_order and order_timeline rows (the same ciphertext for every buyer)."""
    from ordertally.core.crypto import get_cipher
    from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE

    cipher = get_cipher()
    name, phone = cipher.encrypt("张三", PII_NAME), cipher.encrypt("+8613812345678", PII_PHONE)
    address = cipher.encrypt('{"line1": "世纪大道1号"}', PII_ADDRESS)
    channels = ("douyin", "jd", "pdd", "taobao", "shopify")
    orders, timelines = [], []
    for i in range(1, n + 1):
        created = MONTH + timedelta(seconds=i * SECONDS // n)
        usd = i % 10 == 0
        total = 1990 + i % 5000
        paid = created + timedelta(minutes=5 + i % 30)
        shipped = paid + timedelta(hours=2 + i % 40)
        channel = channels[i % 5]
        orders.append(
            (
                i,
                f"OT{i:018d}",
                channel,
                f"P{i}",
                "shipped",
                5,
                "USD" if usd else "CNY",
                total,
                0,
                total,
                "CNY",
                "7.10430000" if usd else "1",
                0,
                0,
                0,
                (total * 71043 + 5000) // 10000 if usd else total,
                name,
                "张*",
                phone,
                f"bidx{i % 1000}",
                "138****5678",
                "5678",
                address,
                "李*",
                "139****4321",
                "上海市",
                "上海市",
                "浦东新区",
                f"fp{i}",
                "bench",
                None,
                f"YT{i:010d}",
                created,
                shipped,
            )
        )
        timelines.append(
            (
                i,
                f"OT{i:018d}",
                channel,
                "USD" if usd else "CNY",
                total,
                (created + timedelta(hours=8)).date().isoformat(),
                created,
                paid,
                paid + timedelta(minutes=30),
                paid + timedelta(hours=1),
                shipped,
                shipped + timedelta(hours=30 + i % 60),
                None,
                paid,
                None,
                f"WH-{i % 3}",
                ("zto", "sf", "yto")[i % 3],
            )
        )
    return orders, timelines


ORDER_COLUMNS = [
    "id", "order_no", "channel", "external_id", "status", "version", "currency",
    "subtotal_minor", "discount_minor", "total_minor", "base_currency", "fx_rate",
    "shipping_minor", "tax_minor", "fee_minor", "base_total_minor",
    "customer_name_enc", "customer_name_masked", "customer_phone_enc", "customer_phone_bidx",
    "customer_phone_masked", "customer_phone_last4", "shipping_address_enc", "ship_name_masked",
    "ship_phone_masked", "ship_province", "ship_city", "ship_district", "fingerprint",
    "created_by", "payment_deadline_at", "waybill_nos", "created_at", "updated_at",
]  # fmt: skip
TIMELINE_COLUMNS = [
    "order_id", "order_no", "channel", "currency", "total_minor", "day_date", "created_at",
    "paid_at", "allocated_at", "picking_at", "shipped_at", "delivered_at", "completed_at",
    "fulfillment_start_at", "ship_by_at", "warehouse", "carrier",
]  # fmt: skip


async def load(url: str, n: int) -> float:
    """COPY n orders and their timelines; returns the seconds it took."""
    import asyncpg
    from sqlalchemy.engine import make_url

    orders, timelines = _records(n)
    raw = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    t0 = time.perf_counter()
    conn = await asyncpg.connect(raw)
    try:
        await conn.copy_records_to_table("sales_order", records=orders, columns=ORDER_COLUMNS)
        await conn.copy_records_to_table(
            "order_timeline", records=timelines, columns=TIMELINE_COLUMNS
        )
        await conn.execute(f"SELECT setval('sales_order_id_seq', {n})")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


def _proc_cpu(pid: int) -> float:
    """A process's user + system CPU seconds (a PostgreSQL backend's, read from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_export(url: str, fmt: str) -> dict[str, Any]:
    """The real export path for the month's orders; the CPU of this process and of the
    PostgreSQL backend that read (and, on the COPY path, rendered) the rows."""
    from sqlalchemy import text

    from ordertally.core.db import Database
    from ordertally.exports import repository, service
    from ordertally.exports.schemas import ExportIn

    backend: list[tuple[int, float]] = []
    open_snapshot = repository.open_snapshot

    async def snapshot_with_pid(session: Any) -> Any:
        at = await open_snapshot(session)
        pid = int(await session.scalar(text("SELECT pg_backend_pid()")))
        backend.append((pid, _proc_cpu(pid)))
        return at

    repository.open_snapshot = snapshot_with_pid
    db = Database(url)
    body = ExportIn(
        template="orders", format=fmt, date_from=date(2026, 11, 1), date_to=date(2026, 11, 30)
    )  # type: ignore[arg-type]
    async with db.transaction() as session:
        queued = await service.request_export(
            session, body, service.Requester("bench", "finance", None)
        )
    claimed = await service.claim(db, queued.export_no)
    assert claimed is not None
    before, cpu0 = _peak_mb(), _cpu()
    t0 = time.perf_counter()
    manifest = await service.run_export(db, claimed)
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    pid, db_cpu0 = backend[0]
    db_cpu = _proc_cpu(pid) - db_cpu0
    await db.dispose()
    return {
        "measure": fmt,
        "rows": manifest["row_count"],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "db_backend_cpu_seconds": round(db_cpu, 2),
        "rows_per_s": round(manifest["row_count"] / seconds),
        "file_mb": round(manifest["file_bytes"] / 2**20, 1),
        "rss_before_mb": round(before),
        "peak_rss_mb": round(_peak_mb()),
    }


def _rendered(n: int) -> Any:
    """n rows shaped like the orders template's cells (strings, Decimals, ints)."""
    for i in range(n):
        yield [
            f"OT{i:018d}", "douyin", f"P{i}", "shipped", "2026-11-20",
            "2026-11-20 10:00:00+08:00", "2026-11-20 02:00:00Z", "CNY",
            Decimal("19.90"), Decimal("0.00"), Decimal("0.00"), Decimal("0.00"),
            Decimal("0.00"), Decimal(i % 5000).scaleb(-2), "1", "CNY", Decimal("19.90"),
            "张*", "138****5678", "上海市 上海市 浦东新区", f"YT{i:010d}",
            "2026-11-20 12:00:00+08:00", "2026-11-20 04:00:00Z",
        ]  # fmt: skip


def measure_writer(kind: str, n: int, out: str) -> dict[str, Any]:
    """One XLSX writer alone on n rendered rows."""
    before, cpu0 = _peak_mb(), _cpu()
    t0 = time.perf_counter()
    if kind == "writer-xlsxwriter":
        import xlsxwriter

        book = xlsxwriter.Workbook(out, {"constant_memory": True})
        sheet = book.add_worksheet("export")
        money = book.add_format({"num_format": "0.00"})
        for r, row in enumerate(_rendered(n)):
            for c, v in enumerate(row):
                if isinstance(v, Decimal):
                    sheet.write_number(r, c, float(v), money)
                else:
                    sheet.write_string(r, c, v)
        book.close()
    elif kind == "writer-rvgsrust":
        import rvgsrust_xlsxwriter

        book = rvgsrust_xlsxwriter.Workbook(out)
        sheet = book.add_worksheet("export", constant_memory=True)
        money = book.add_format()
        money.set_num_format("0.00")
        for c in (8, 9, 10, 11, 12, 13, 16):
            sheet.set_column_format(c, money)
        batch: list[list[Any]] = []
        start = 0
        for row in _rendered(n):
            batch.append([float(v) if isinstance(v, Decimal) else v for v in row])
            if len(batch) == 1000:
                sheet.write_rows(start, 0, batch)
                start, batch = start + len(batch), []
        if batch:
            sheet.write_rows(start, 0, batch)
        book.close()
    else:
        import rustpy_xlsxwriter

        keys = [f"c{i}" for i in range(23)]

        def records() -> Any:
            for row in _rendered(n):
                yield {
                    k: float(v) if isinstance(v, Decimal) else v
                    for k, v in zip(keys, row, strict=True)
                }

        rustpy_xlsxwriter.write_worksheet(records(), out, float_format="0.00")
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {
        "measure": kind,
        "rows": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "rows_per_s": round(n / seconds),
        "file_mb": round(os.path.getsize(out) / 2**20, 1),
        "rss_before_mb": round(before),
        "peak_rss_mb": round(_peak_mb()),
    }


async def measure_stage(url: str, runs: int) -> dict[str, Any]:
    """The stage rows rebuilt from the COPY-loaded timelines (timed on its own), then the
    month's stage table from them, `runs` times per dimension."""
    from sqlalchemy import text

    from ordertally.analytics import service
    from ordertally.core.db import Database

    db = Database(url)
    backends0 = await _backends_cpu(db)
    t0 = time.perf_counter()
    stage_rows = await service.rebuild_stages(db)
    rebuild_s = time.perf_counter() - t0
    backends = await _backends_cpu(db)
    result: dict[str, Any] = {
        "measure": "stage",
        "rebuild": {
            "stage_rows": stage_rows,
            "seconds": round(rebuild_s, 2),
            "db_backend_cpu_seconds": round(
                sum(c - backends0.get(pid, 0.0) for pid, c in backends.items()), 2
            ),
        },
    }
    async with db.transaction() as session:
        await session.execute(text("ANALYZE stage_daily_stat"))
    for by in ("all", "channel", "warehouse"):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            async with db.transaction(write=False) as session:
                rows = await service.stage_table(session, date(2026, 11, 1), date(2026, 11, 30), by)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        result[by] = {
            "rows": len(rows),
            "p50_ms": round(statistics.median(times)),
            "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))]),
        }
    await db.dispose()
    return result


def _aftersale_records(n: int) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """After-sales timeline rows of ~5.5 % of the n orders (the shape `_records` gives them),
    and every order's (order_id, channel, shipped_at, lines) for the shipped rows."""
    from ordertally.analytics import aftersale_rows, service

    channels = ("douyin", "jd", "pdd", "taobao", "shopify")
    kinds = ("refund_only", "return_refund", "exchange", "reship", "refused")
    blame = ("", "buyer", "merchant", "warehouse", "carrier", "supplier")
    cases, shipped = [], []
    for i in range(1, n + 1):
        created = MONTH + timedelta(seconds=i * SECONDS // n)
        at = created + timedelta(minutes=5 + i % 30) + timedelta(hours=2 + i % 40)
        lines = [(f"SKU-{i // 7 % 500:03d}", 1 + i % 3)]
        if i % 4 == 0:
            lines.append((f"SKU-{i * 7 % 500:03d}", 1))
        shipped.append((i, channels[i % 5], at, lines))
        if i % 19 != 3 and i % 200 != 10:
            continue
        requested = at + timedelta(hours=24 + i % 100)
        kind = kinds[i % 5]
        reached = {"requested": requested, "approved": requested + timedelta(hours=1 + i % 30)}
        if kind in ("return_refund", "exchange", "refused"):
            reached["returned"] = reached["approved"] + timedelta(hours=48 + i % 90)
            reached["inspected"] = reached["returned"] + timedelta(hours=2 + i % 30)
        end = reached.get("inspected", reached["approved"]) + timedelta(hours=1 + i % 5)
        reached[{"exchange": "exchanged", "reship": "reshipped"}.get(kind, "refunded")] = end
        if i % 3:
            reached["closed"] = end + timedelta(hours=1)
        facts = {
            "case_no": f"AS{i:018d}",
            "order_no": f"OT{i:018d}",
            "channel": channels[i % 5],
            "type": kind,
            "currency": "USD" if i % 10 == 0 else "CNY",
            "responsibility": blame[i % 6] or None,
            "created_at": requested,
            "reached": reached,
            "lines": lines,
            "refunded_minor": 1990 + i % 5000 if kind not in ("exchange", "reship") else 0,
        }
        cases.append(aftersale_rows.timeline_row(facts, service.local_day))
    return cases, shipped


async def measure_aftersale(url: str, n: int, runs: int) -> dict[str, Any]:
    """After-sales rows written through the consumer's write path, then the month's KPIs
    and after-sales stage table, `runs` times each."""
    from sqlalchemy import text

    from ordertally.analytics import aftersale, aftersale_rows, repository, service
    from ordertally.core.db import Database

    db = Database(url)
    cases, shipped = _aftersale_records(n)
    t0 = time.perf_counter()
    for start in range(0, len(cases), 2000):
        async with db.transaction() as session:
            await aftersale.store(session, [], cases[start : start + 2000])
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    deltas = aftersale_rows.add_deltas(
        [],
        (aftersale_rows.shipped_contribution({"shipped_at": at, "channel": ch}, lines,
                                             service.local_day)
         for _, ch, at, lines in shipped),
    )  # fmt: skip
    async with db.transaction() as session:
        for start in range(0, len(deltas), 10_000):
            await repository.add_shipped_deltas(session, deltas[start : start + 10_000])
    shipped_s = time.perf_counter() - t0
    async with db.transaction() as session:
        await session.execute(text("ANALYZE"))
        counts = {
            t: int((await session.execute(text(f"SELECT count(*) FROM {t}"))).scalar() or 0)
            for t in ("aftersale_timeline", "aftersale_daily_stat", "shipped_daily_stat")
        }
    result: dict[str, Any] = {
        "measure": "aftersale",
        "cases": len(cases),
        "rows": counts,
        "write_cases_seconds": round(write_s, 1),
        "shipped_rows_seconds": round(shipped_s, 1),
    }
    month = (date(2026, 11, 1), date(2026, 11, 30))
    reads: list[tuple[str, Any]] = [
        (f"kpis_{by}", lambda s, by=by: aftersale.kpis(s, *month, by))
        for by in ("all", "channel", "sku", "responsibility")
    ]
    reads.append(("kpis_sku_jd", lambda s: aftersale.kpis(s, *month, "sku", ("jd",))))
    reads.append(("stages_all", lambda s: aftersale.stage_table(s, *month, "all")))
    reads.append(("stages_type", lambda s: aftersale.stage_table(s, *month, "type")))
    for name, read in reads:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            async with db.transaction(write=False) as session:
                rows = await read(session)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        result[name] = {
            "rows": len(rows),
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
        }
    await db.dispose()
    return result


async def measure_consumers(url: str, orders: int) -> dict[str, Any]:
    """Analytics consumers draining 7 events per order."""
    import ordertally.fulfillment.events
    import ordertally.orders.events  # noqa: F401
    from ordertally.analytics import wiring
    from ordertally.core.db import Database
    from ordertally.core.settings import get_settings
    from ordertally.events.dispatcher import drain
    from ordertally.events.outbox import build_row, publish_rows

    wiring.register(None)
    db = Database(url)
    base = 10_000_000
    t = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    rows = []
    for i in range(base, base + orders):
        no = f"OT{i:018d}"
        common = {"order_id": i, "order_no": no, "version": 1, "actor_kind": "api"}
        rows.append(
            build_row(
                "OrderCreated",
                {
                    "order_id": i,
                    "order_no": no,
                    "channel": "douyin",
                    "external_id": None,
                    "status": "pending_payment",
                    "currency": "CNY",
                    "total_minor": 1990,
                    "base_currency": "CNY",
                    "fx_rate": "1",
                    "line_count": 1,
                    "created_at": t,
                },
                aggregate_type="order",
                aggregate_id=str(i),
            )
        )
        for event, to in (
            ("OrderPaid", "paid"),
            ("OrderAllocated", "allocated"),
            ("OrderFulfillmentStarted", "fulfilling"),
            ("OrderShipped", "shipped"),
            ("OrderDelivered", "delivered"),
        ):
            payload = {
                **common, "transition": to, "from_status": None, "to_status": to,
                "actor_id": "bench", "evidence_ref": None, "occurred_at": t,
            }  # fmt: skip
            rows.append(build_row(event, payload, aggregate_type="order", aggregate_id=str(i)))
        rows.append(
            build_row(
                "ShipmentShipped",
                {
                    "shipment_id": i,
                    "order_id": i,
                    "order_no": no,
                    "warehouse": "WH-1",
                    "carrier": "zto",
                    "waybill_no": "YT1",
                    "tracking_url": "x",
                    "shipped_at": t,
                },
                aggregate_type="order",
                aggregate_id=str(i),
            )
        )
    for start in range(0, len(rows), 5000):
        async with db.transaction() as session:
            await publish_rows(session, rows[start : start + 5000])
    backends0 = await _backends_cpu(db)
    t0, cpu0 = time.perf_counter(), _cpu()
    events = await drain(db, get_settings())
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    backends = await _backends_cpu(db)
    db_cpu = sum(c - backends0.get(pid, 0.0) for pid, c in backends.items())
    await db.dispose()
    return {
        "measure": "consumers",
        "orders": orders,
        "events": events,
        "batch_size": get_settings().worker_batch_size,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "db_backend_cpu_seconds": round(db_cpu, 2),
        "orders_per_s": round(orders / seconds),
        "events_per_s": round(events / seconds),
        "orders_per_cpu_s": round(orders / cpu),
        "orders_per_total_cpu_s": round(orders / (cpu + db_cpu)),
    }


async def _backends_cpu(db: Any) -> dict[int, float]:
    """CPU seconds of every PostgreSQL backend connected to the bench database (the pool's)."""
    from sqlalchemy import text

    async with db.transaction(write=False) as session:
        pids = (
            await session.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        ).all()
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[int(pid)] = _proc_cpu(int(pid))
    return out


def run_measure(args: argparse.Namespace) -> None:
    os.environ["ORDERTALLY_DATABASE_URL"] = args.url
    os.environ["ORDERTALLY_DATA_DIR"] = args.data_dir
    os.environ["ORDERTALLY_PII_KEY"] = KEY
    if args.measure in ("csv", "xlsx", "xlsx-rust"):
        if args.measure == "xlsx-rust":
            os.environ["ORDERTALLY_EXPORT_XLSX_WRITER"] = "rust"
        out = asyncio.run(measure_export(args.url, args.measure.split("-")[0]))
        out["measure"] = args.measure
    elif args.measure.startswith("writer-"):
        out = measure_writer(args.measure, args.orders, os.path.join(args.data_dir, "w.xlsx"))
    elif args.measure == "stage":
        out = asyncio.run(measure_stage(args.url, args.runs))
    elif args.measure == "aftersale":
        out = asyncio.run(measure_aftersale(args.url, args.orders, args.runs))
    else:
        out = asyncio.run(measure_consumers(args.url, args.consumer_orders))
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--consumer-orders", type=int, default=5000)
    parser.add_argument("--only", nargs="*", choices=MEASURES, default=list(MEASURES))
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        run_measure(args)
        return
    from sqlalchemy.engine import make_url

    from ordertally.ops.migrations import upgrade

    os.environ["ORDERTALLY_PII_KEY"] = KEY
    name = f"ot_bench_exports_{uuid.uuid4().hex[:8]}"
    url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(PG, f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)
        print(json.dumps({"measure": "load", "orders": args.orders, "seconds": round(
            asyncio.run(load(url, args.orders)), 1)}))  # fmt: skip
        with tempfile.TemporaryDirectory() as data_dir:
            for measure in args.only:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.exports",
                        "--measure",
                        measure,
                        "--url",
                        url,
                        "--data-dir",
                        data_dir,
                        "--orders",
                        str(args.orders),
                        "--runs",
                        str(args.runs),
                        "--consumer-orders",
                        str(args.consumer_orders),
                    ],
                    check=True,
                )
                print(json.dumps({"uptime": os.getloadavg()}), flush=True)
    finally:
        asyncio.run(_admin(PG, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
