"""The floor: the statements `POST /api/v1/orders` (with an Idempotency-Key) runs per order,
issued straight through the driver in one process, with no HTTP, no framework and no ORM.

The sequence mirrors what the app emits (read off its SQL echo at commit 080acb9), in one
transaction: PostgreSQL's advisory lock on the key, the key lookup, the sales_order row, its
order_line rows, the routing read of the stock buckets, one conditional stock UPDATE per SKU,
the reservation rows, the allocation row, the order_event row, the outbox row and the
idempotency_key upsert: 14 round trips with BEGIN and COMMIT on either database (SQLite has no
advisory lock but inserts the two lines one by one, as SQLAlchemy does there). Values are
precomputed where the app computes them (encryption, routing explanation, response body): the
floor measures the database work and the driver, nothing else.

PostgreSQL: asyncpg, a pool of `concurrency` connections driven by as many tasks.
SQLite: the stdlib sqlite3 module on one connection (WAL, synchronous=FULL, BEGIN IMMEDIATE,
as the app configures it); and, for comparison, aiosqlite, the driver the app goes through.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench import cpu, payload
from bench.loadgen import percentile

SCOPE = "bench:direct"
STRATEGY = "fewest_splits,nearest,priority,cost"
LINES = [(sku, qty, round(float(price) * 100)) for sku, (qty, price) in payload.LINES.items()]
SKUS = sorted(payload.LINES)

ORDER_COLUMNS = (
    "order_no, channel, external_id, status, version, currency, subtotal_minor, discount_minor, "
    "total_minor, base_currency, fx_rate, customer_name_enc, customer_name_masked, "
    "customer_phone_enc, customer_phone_bidx, customer_phone_masked, customer_phone_last4, "
    "shipping_address_enc, ship_name_masked, ship_phone_masked, ship_province, ship_city, "
    "ship_district, fingerprint, created_by, payment_deadline_at, created_at, updated_at"
)
LINE_COLUMNS = "order_id, line_no, sku, quantity, unit_price_minor, discount_minor, total_minor"
RESERVATION_COLUMNS = (
    "order_id, order_line_id, stock_id, warehouse_id, sku, quantity, state, expires_at, "
    "created_at, updated_at"
)
EVENT_COLUMNS = (
    "order_id, version, event, from_status, to_status, actor_kind, actor_id, source_ip, "
    "evidence_ref, note, occurred_at"
)
OUTBOX_COLUMNS = (
    "event_id, event_type, event_version, aggregate_type, aggregate_id, payload, occurred_at, "
    "status, attempts, available_at"
)
KEY_COLUMNS = "scope, key, request_hash, response_status, response_body, created_at, expires_at"
KEY_UPDATE = (
    "ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, "
    "response_status = excluded.response_status, response_body = excluded.response_body, "
    "created_at = excluded.created_at, expires_at = excluded.expires_at"
)
CANDIDATES = (
    "SELECT stock.id, stock.warehouse_id, stock.sku, stock.bucket, "
    "stock.on_hand - stock.reserved - stock.safety_stock AS available, warehouse.code, "
    "warehouse.province, warehouse.latitude, warehouse.longitude, warehouse.priority, "
    "warehouse.cost_factor FROM stock JOIN warehouse ON warehouse.id = stock.warehouse_id "
    "WHERE stock.sku IN ({skus}) AND warehouse.active IS {true} "
    "ORDER BY stock.warehouse_id, stock.sku, stock.bucket"
)
TRY_RESERVE = (
    "UPDATE stock SET reserved = stock.reserved + {0} WHERE stock.id = {1} "
    "AND stock.on_hand - stock.reserved - stock.safety_stock >= {2}"
)


def _marks(style: str, count: int, start: int = 1) -> str:
    return ", ".join("?" if style == "?" else f"${i}" for i in range(start, start + count))


def _count(columns: str) -> int:
    return len(columns.split(","))


def _statements(style: str) -> dict[str, str]:
    """The statements in the driver's parameter style ("$" for asyncpg, "?" for sqlite3)."""
    pg = style == "$"
    n_line = _count(LINE_COLUMNS)
    line_values = (
        f"({_marks(style, n_line)}), ({_marks(style, n_line, n_line + 1)})"
        if pg  # PostgreSQL: both lines in one statement, as SQLAlchemy's insertmanyvalues does
        else f"({_marks(style, n_line)})"
    )
    return {
        "lock": "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || $2 || $3, 0))",
        "get_key": (
            "SELECT request_hash, response_status, response_body, expires_at FROM "
            f"idempotency_key WHERE scope = {'$1' if pg else '?'} AND key = {'$2' if pg else '?'}"
        ),
        "order": (
            f"INSERT INTO sales_order ({ORDER_COLUMNS}) "
            f"VALUES ({_marks(style, _count(ORDER_COLUMNS))}) RETURNING id"
        ),
        "lines": f"INSERT INTO order_line ({LINE_COLUMNS}) VALUES {line_values} RETURNING id",
        "candidates": CANDIDATES.format(skus=_marks(style, len(SKUS)), true="true" if pg else "1"),
        "reserve": TRY_RESERVE.format(*(("$1", "$2", "$3") if pg else ("?", "?", "?"))),
        "reservation": (
            f"INSERT INTO reservation ({RESERVATION_COLUMNS}) "
            f"VALUES ({_marks(style, _count(RESERVATION_COLUMNS))})"
        ),
        "allocation": (
            "INSERT INTO allocation (order_id, strategy, explanation, created_at) "
            f"VALUES ({_marks(style, 4)})"
        ),
        "event": f"INSERT INTO order_event ({EVENT_COLUMNS}) VALUES ({_marks(style, 11)})",
        "outbox": f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ({_marks(style, 10)})",
        "key": f"INSERT INTO idempotency_key ({KEY_COLUMNS}) VALUES ({_marks(style, 7)}) "
        + KEY_UPDATE,
    }


def _token(size: int) -> str:
    return "k1:" + base64.b64encode(os.urandom(size)).decode()


# What the app stores that does not change the database's work: same sizes, fixed content.
EXPLANATION = orjson.dumps(
    {
        "strategy": STRATEGY.split(","),
        "method": "fewest_splits",
        "ship_to": payload.PROVINCE,
        "splits": 1,
        "candidates": [
            {
                "warehouse": "SH01",
                "rank": 1,
                "distance_km": 26.7,
                "priority": 1,
                "cost_factor": 1.0,
                "can_fulfil_alone": True,
            }
        ],
        "chosen": [
            {
                "warehouse": "SH01",
                "units": {sku: qty for sku, qty, _ in LINES},
                "reason": "holds every line, so the order ships in one parcel; ranked 1 of 1 by "
                "nearest, then priority, then cost (27 km)",
            }
        ],
        "shortfall": {},
    }
).decode()
RESPONSE_BODY = orjson.dumps({"order_no": "OT000000000000000000", "pad": "x" * 1560}).decode()


class Order:
    """The values of one order, computed the way the app shapes them."""

    __slots__ = ("deadline", "key", "no", "now", "values")

    def __init__(self, n: int, run: str) -> None:
        now = datetime.now(UTC)
        self.now = now
        self.deadline = now + timedelta(minutes=30)
        self.no = f"OT{now:%y%m%d}{random.randrange(10**12):012d}"
        self.key = f"{run}-{n}"
        phone = payload.phone(n)
        subtotal = sum(qty * price for _, qty, price in LINES)
        self.values = [
            self.no,
            payload.CHANNEL,
            None,
            "pending_payment",
            1,
            "CNY",
            subtotal,
            0,
            subtotal,
            "CNY",
            "1",
            _token(22),
            "张*",
            _token(40),
            os.urandom(32).hex(),
            f"{phone[:3]}****{phone[-4:]}",
            phone[-4:],
            _token(200),
            "张*",
            f"{phone[:3]}****{phone[-4:]}",
            payload.PROVINCE,
            "上海市",
            "浦东新区",
            os.urandom(32).hex(),
            "bench",
            self.deadline,
            now,
            now,
        ]

    def event(self, order_id: int, at: Any) -> tuple[Any, ...]:
        """The order_event row's values."""
        # order_id, version, event, from, to, actor kind, actor id, source ip, evidence, note, at
        return (
            order_id,
            1,
            "create",
            None,
            "pending_payment",
            "api",
            "bench",
            "127.0.0.1",
            None,
            None,
            at,
        )

    def outbox(self, order_id: int, at: Any) -> tuple[Any, ...]:
        """The outbox row's values, with the OrderCreated payload the app writes."""
        data = orjson.dumps(
            {
                "order_id": order_id,
                "order_no": self.no,
                "channel": payload.CHANNEL,
                "external_id": None,
                "status": "pending_payment",
                "currency": "CNY",
                "total_minor": self.values[8],
                "base_currency": "CNY",
                "fx_rate": "1",
                "line_count": len(LINES),
                "created_at": self.now.isoformat().replace("+00:00", "Z"),
            }
        ).decode()
        return (_uuid7(), "OrderCreated", 1, "order", self.no, data, at, "pending", 0, at)


def _pick_buckets(rows: list[Any]) -> dict[str, list[tuple[int, int, int]]]:
    """sku -> [(stock id, warehouse id, available)] from the routing read."""
    buckets: dict[str, list[tuple[int, int, int]]] = {}
    for row in rows:
        buckets.setdefault(row[2], []).append((int(row[0]), int(row[1]), int(row[4])))
    return buckets


async def _reserve(
    update: Callable[[int, int], Awaitable[bool]],
    buckets: dict[str, list[tuple[int, int, int]]],
) -> list[tuple[str, int, int, int]]:
    """One conditional UPDATE per SKU on a random bucket (the next one if it is short)."""
    taken = []
    for sku, qty, _ in sorted(LINES):
        rows = buckets[sku]
        start = random.randrange(len(rows))
        for stock_id, warehouse_id, available in rows[start:] + rows[:start]:
            if available >= qty and await update(stock_id, qty):
                taken.append((sku, qty, stock_id, warehouse_id))
                break
        else:
            raise RuntimeError(f"no stock left for {sku}")
    return taken


# --- PostgreSQL (asyncpg) ----------------------------------------------------------------------


async def _pg_order(conn: Any, sql: dict[str, str], order: Order) -> None:
    async with conn.transaction():
        await conn.fetchval(sql["lock"], SCOPE, "\x1f", order.key)
        await conn.fetchrow(sql["get_key"], SCOPE, order.key)
        order_id = await conn.fetchval(sql["order"], *order.values)
        line_params: list[Any] = []
        for line_no, (sku, qty, price) in enumerate(LINES, start=1):
            line_params += [order_id, line_no, sku, qty, price, 0, qty * price]
        line_ids = [r[0] for r in await conn.fetch(sql["lines"], *line_params)]
        buckets = _pick_buckets(await conn.fetch(sql["candidates"], *SKUS))

        async def update(stock_id: int, qty: int) -> bool:
            return str(await conn.execute(sql["reserve"], qty, stock_id, qty)) == "UPDATE 1"

        taken = await _reserve(update, buckets)
        line_of = {sku: line_ids[i] for i, (sku, _, _) in enumerate(LINES)}
        expires = order.deadline + timedelta(minutes=5)
        now = datetime.now(UTC)
        await conn.executemany(
            sql["reservation"],
            [
                (order_id, line_of[sku], stock_id, wh, sku, qty, "held", expires, now, now)
                for sku, qty, stock_id, wh in taken
            ],
        )
        await conn.execute(sql["allocation"], order_id, STRATEGY, EXPLANATION, now)
        await conn.execute(sql["event"], *order.event(order_id, order.now))
        await conn.execute(sql["outbox"], *order.outbox(order_id, now))
        await conn.execute(
            sql["key"],
            SCOPE,
            order.key,
            os.urandom(32).hex(),
            201,
            RESPONSE_BODY,
            now,
            now + timedelta(hours=24),
        )


def _uuid7() -> str:
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


class _CpuWindow:
    """CPU snapshots at the start and end of the measured window."""

    def __init__(self, pg_database: str | None) -> None:
        self.pg_database = pg_database
        self.before: cpu.Snapshot | None = None
        self.after: cpu.Snapshot | None = None

    def mark(self, now: float, measure_from: float) -> None:
        if self.before is None and now >= measure_from:
            self.before = cpu.snapshot(None, self.pg_database)

    def close(self) -> dict[str, float]:
        self.after = cpu.snapshot(None, self.pg_database)
        if self.before is None:
            return {}
        used = cpu.usage(self.before, self.after)
        used["driver_process"] = used.pop("loadgen")
        return used


async def pg_floor(
    dsn: str, *, duration: float, warmup: float, concurrency: int, run: str, pg_database: str
) -> dict[str, Any]:
    """Orders per second through asyncpg: `concurrency` tasks over a pool of as many."""
    import asyncpg

    sql = _statements("$")
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**12))
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    window = _CpuWindow(pg_database)

    async def worker() -> None:
        while (t0 := time.perf_counter()) < stop_at:
            window.mark(t0, measure_from)
            order = Order(next(counter), run)
            try:
                async with pool.acquire() as conn:
                    await _pg_order(conn, sql, order)
            except Exception as exc:
                if t0 >= measure_from:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            t1 = time.perf_counter()
            if measure_from <= t1 < stop_at:
                latencies.append(t1 - t0)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        used = window.close()
    finally:
        await pool.close()
    return _summary("asyncpg", concurrency, duration, latencies, errors, used)


# --- SQLite (sqlite3, aiosqlite) ---------------------------------------------------------------


def _sqlite_time(value: datetime) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite."""
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class _Sqlite3:
    """sqlite3 behind the same awaitable calls as aiosqlite (the awaits cost ~1 µs)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def rows(self, sql: str, params: Any) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    async def run(self, sql: str, params: Any) -> int:
        return self.conn.execute(sql, params).rowcount

    async def many(self, sql: str, rows: list[Any]) -> None:
        self.conn.executemany(sql, rows)


class _Aiosqlite:
    """aiosqlite the way SQLAlchemy's adapter drives it: execute, then fetch, each awaited."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def rows(self, sql: str, params: Any) -> list[Any]:
        cursor = await self.conn.execute(sql, params)
        rows = list(await cursor.fetchall())
        await cursor.close()
        return rows

    async def run(self, sql: str, params: Any) -> int:
        cursor = await self.conn.execute(sql, params)
        count = int(cursor.rowcount)
        await cursor.close()
        return count

    async def many(self, sql: str, rows: list[Any]) -> None:
        await self.conn.executemany(sql, rows)


async def _sqlite_order(db: _Sqlite3 | _Aiosqlite, sql: dict[str, str], order: Order) -> None:
    t = _sqlite_time
    values = [t(v) if isinstance(v, datetime) else v for v in order.values]
    await db.run("BEGIN IMMEDIATE", ())
    try:
        await db.rows(sql["get_key"], (SCOPE, order.key))
        order_id = (await db.rows(sql["order"], values))[0][0]
        line_ids = []
        for line_no, (sku, qty, price) in enumerate(LINES, start=1):
            params = (order_id, line_no, sku, qty, price, 0, qty * price)
            line_ids.append((await db.rows(sql["lines"], params))[0][0])
        buckets = _pick_buckets(await db.rows(sql["candidates"], SKUS))

        async def update(stock_id: int, qty: int) -> bool:
            return await db.run(sql["reserve"], (qty, stock_id, qty)) == 1

        taken = await _reserve(update, buckets)
        line_of = {sku: line_ids[i] for i, (sku, _, _) in enumerate(LINES)}
        expires = t(order.deadline + timedelta(minutes=5))
        now = t(datetime.now(UTC))
        await db.many(
            sql["reservation"],
            [
                (order_id, line_of[sku], stock_id, wh, sku, qty, "held", expires, now, now)
                for sku, qty, stock_id, wh in taken
            ],
        )
        await db.run(sql["allocation"], (order_id, STRATEGY, EXPLANATION, now))
        await db.run(sql["event"], order.event(order_id, t(order.now)))
        await db.run(sql["outbox"], order.outbox(order_id, now))
        expiry = t(datetime.now(UTC) + timedelta(hours=24))
        await db.run(
            sql["key"], (SCOPE, order.key, os.urandom(32).hex(), 201, RESPONSE_BODY, now, expiry)
        )
        await db.run("COMMIT", ())
    except BaseException:
        await db.run("ROLLBACK", ())
        raise


_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=FULL",
)


async def sqlite_floor(
    path: str, *, driver: str, duration: float, warmup: float, run: str
) -> dict[str, Any]:
    """Orders per second on one connection, one write transaction after the other (SQLite has
    one writer; the app serialises its writers the same way)."""
    sql = _statements("?")
    db: _Sqlite3 | _Aiosqlite
    if driver == "sqlite3":
        raw = sqlite3.connect(path, isolation_level=None, timeout=30)
        for pragma in _PRAGMAS:
            raw.execute(pragma)
        db = _Sqlite3(raw)
    else:
        import aiosqlite

        conn = await aiosqlite.connect(path, isolation_level=None, timeout=30)
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
        db = _Aiosqlite(conn)
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    n = 0
    window = _CpuWindow(None)
    try:
        while (t0 := time.perf_counter()) < stop_at:
            window.mark(t0, measure_from)
            n += 1
            try:
                await _sqlite_order(db, sql, Order(n, run))
            except Exception as exc:
                if t0 >= measure_from:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            t1 = time.perf_counter()
            if measure_from <= t1 < stop_at:
                latencies.append(t1 - t0)
    finally:
        if isinstance(db, _Sqlite3):
            db.conn.close()
        else:
            await db.conn.close()
    return _summary(driver, 1, duration, latencies, errors, window.close())


def _summary(
    driver: str,
    concurrency: int,
    duration: float,
    latencies: list[float],
    errors: list[str],
    used: dict[str, float],
) -> dict[str, Any]:
    ordered = sorted(latencies)
    rate = len(ordered) / duration
    return {
        "driver": driver,
        "concurrency": concurrency,
        "duration_s": duration,
        "ok": len(ordered),
        "errors": len(errors),
        "error_samples": errors[:5],
        "orders_per_s": round(len(ordered) / duration, 1),
        "latency_ms": {
            "p50": round(1000 * percentile(ordered, 0.5), 2),
            "p99": round(1000 * percentile(ordered, 0.99), 2),
        },
        "cpu_percent": used,
        "cpu_ms_per_order": {
            name: round(10 * used[name] / rate, 2) if rate else 0.0
            for name in ("driver_process", "postgres")
            if name in used
        },
    }
