"""The drill's load: each order's story told over HTTP on 127.0.0.1.

An order is created through the API (POST /api/v1/orders with an Idempotency-Key; some are
sent twice, as a client retry), a payment attempt is opened (the API asks the payment simulator
for a QR code), then the buyer's fate plays out: most pay at the simulator (which notifies
ordertally with its signed callbacks and its misbehaviour), some leave and the order is
cancelled, some pay after the order was cancelled (a late payment). A warehouse loop ships
every shipment that has its waybill. Orders are scheduled open loop at the promotion's rate
(120,000 in 30 minutes times the speed), so a slow server is charged for the wait.

The channels' orders come the three ways a shop's do: Shopify sends signed webhooks, Pinduoduo
is pulled (the simulator holds the order; the worker's scheduled sync reads it with
pdd.order.number.list.increment.get and decrypts its receiver), and an operator uploads a
Taobao order export halfway through the load (the API's file import; some of its rows are
wrong and must be rejected with a reason), then uploads the same file again by mistake.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from bench.loadgen import Connection, HttpError
from bench.payload import order_body

HOST = "127.0.0.1"
PROMOTION_ORDERS = 120_000
PROMOTION_SECONDS = 1800.0
TIMEOUT = 30.0
MAX_ERROR_SAMPLES = 20

# What happens to an order after it is created (probabilities; the rest pay).
ABANDON_RATE = 0.04  # the buyer leaves: the order is cancelled unpaid
LATE_RATE = 0.02  # the order is cancelled, then the buyer pays anyway
RETRY_RATE = 0.02  # the client sends the same order again (same Idempotency-Key)
# Where orders come from: this share arrives as signed Shopify webhooks (paid orders, some
# delivered twice with the same webhook id), this one is pulled from Pinduoduo; the rest
# through the API. On top, a Taobao export of IMPORT_SHARE of the scheduled orders is uploaded
# halfway through, with IMPORT_BAD_ROWS rows the import must reject.
SHOPIFY_SHARE = 0.15
SHOPIFY_DUPLICATE_RATE = 0.05
PDD_SHARE = 0.1
IMPORT_SHARE = 0.05
IMPORT_MIN_ORDERS = 5
# Pinduoduo's increment API serves only windows that end at least 3 minutes before its clock
# (so does the simulator, and the sync reads up to 3 min 5 s behind it): an order is stamped as
# updated this long before the drill hands it to the simulator, so that it is as old as the
# API requires the moment it is added, and the pull finds it on its next run (the worker's
# `channels_sync_due`, every 30 s) instead of three minutes of wall time later.
PDD_BACKDATE = timedelta(minutes=3, seconds=15)
IMPORT_POLL_SECONDS = 0.5
IMPORT_WAIT_SECONDS = 180.0
BEIJING = timezone(timedelta(hours=8))
# The Taobao export's header, as tests/channels/fixtures/taobao_orders.csv (the platform's
# 订单报表 columns).
TAOBAO_HEADER = (
    "订单编号,买家会员名,买家应付邮费,店铺优惠,订单状态,收货人姓名,收货地址,联系手机,"
    "订单创建时间,订单付款时间,标题,价格,购买数量,商家编码"
)


SHOPIFY_FIRST_CUSTOMER = 6_000_000_000  # the Shopify customer id of tick 0


def shopify_phone(n: int) -> str:
    """The Shopify buyer's phone of tick `n`: a mainland mobile of the 139 range, so that it is
    neither another Shopify order's buyer nor an API order's (`bench.payload.phone`, 138). Its
    Shopify customer id is `SHOPIFY_FIRST_CUSTOMER + n`: customers/ links a buyer by either."""
    return f"+86139{n % 100_000_000:08d}"


def pdd_phone(n: int) -> str:
    """The Pinduoduo buyer's phone of tick `n` (137 range: nobody else's buyer)."""
    return f"137{n % 100_000_000:08d}"


def pdd_order_sn(n: int, day: datetime) -> str:
    """A Pinduoduo order number of tick `n`: yymmdd-15 digits, as the platform writes them."""
    return f"{day:%y%m%d}-{n:015d}"


def taobao_export(first: int, count: int) -> tuple[bytes, list[str], dict[str, str]]:
    """A Taobao order export of `count` paid orders (one line each, buyers of the 136 range)
    and three wrong rows: (the file, the good order ids, bad order id -> what is wrong)."""
    now = datetime.now(BEIJING).replace(tzinfo=None)
    placed = (now - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    paid = (now - timedelta(minutes=4)).strftime("%Y-%m-%d %H:%M:%S")
    rows = [TAOBAO_HEADER]

    def row(number: str, status: str, quantity: str, sku: str, k: int) -> str:
        return (
            f"'{number},tb_drill_{k},0.00,0.00,{status},钱十,"
            f"上海市 上海市 浦东新区 世纪大道{k % 999 + 1}号,'136{k % 100_000_000:08d},"
            f"{placed},{paid},西湖龙井 250g,59.90,{quantity},{sku}"
        )

    good = []
    for k in range(first, first + count):
        number = f"2088{k:012d}"
        good.append(number)
        rows.append(row(number, "买家已付款，等待卖家发货", "2", "TEA-LJ-250", k))
    bad = {
        f"2088{first + count:012d}": "unknown status",
        f"2088{first + count + 1:012d}": "missing SKU",
        f"2088{first + count + 2:012d}": "quantity not a number",
    }
    k = first + count
    rows.append(row(f"2088{k:012d}", "神秘状态", "1", "TEA-LJ-250", k))
    rows.append(row(f"2088{k + 1:012d}", "买家已付款，等待卖家发货", "1", "", k + 1))
    rows.append(row(f"2088{k + 2:012d}", "买家已付款，等待卖家发货", "两", "TEA-LJ-250", k + 2))
    return ("\n".join(rows) + "\n").encode("utf-8-sig"), good, bad


def promotion_rate(speed: float) -> float:
    """Orders per second of the promotion at `speed` (x1 = 120,000 in 30 minutes)."""
    return PROMOTION_ORDERS / PROMOTION_SECONDS * speed


# uvicorn closes a keep-alive connection idle for 5 s; one idle this long is opened again
# rather than written to while the server may be closing it (the connection's own expiry).
IDLE_RECONNECT_SECONDS = 2.0


class Pool:
    """Keep-alive HTTP/1.1 connections to one server, handed out one request at a time."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(Connection(HOST, port, idle_expiry=IDLE_RECONNECT_SECONDS))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """One request on a free connection: (status, body); status 0 for a failed connection."""
        conn = await self.idle.get()
        try:
            for attempt in (1, 2):
                reused = conn.writer is not None and not conn.expired()
                try:
                    return await asyncio.wait_for(conn.send(request), TIMEOUT)
                except HttpError as exc:
                    conn.close()
                    # A keep-alive connection the server closed as the request went out: the
                    # request was not read; send it once more on a new connection (what HTTP
                    # clients do).
                    if not (reused and attempt == 1):
                        return 0, f"{type(exc).__name__}: {exc}".encode()
                except (OSError, TimeoutError) as exc:
                    conn.close()
                    return 0, f"{type(exc).__name__}: {exc}".encode()
            return 0, b"unreachable"
        finally:
            self.idle.put_nowait(conn)

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


def request(
    method: str,
    path: str,
    port: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request."""
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Stage:
    """Client-side observations of one stage: (end time, latency) in seconds since the start."""

    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Tally:
    """What the load saw: per stage latencies, each order's fate, the errors."""

    start: float
    stages: dict[str, Stage] = field(default_factory=dict)
    fates: dict[str, str] = field(default_factory=dict)  # order_no -> paid | abandoned | late
    trades: dict[str, str] = field(default_factory=dict)  # out_trade_no -> order_no
    retried: dict[str, str] = field(default_factory=dict)  # order_no -> order_no of the retry
    scheduled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    shipped: set[int] = field(default_factory=set)
    shopify: set[str] = field(default_factory=set)  # platform order ids sent by webhook
    pdd: dict[str, float] = field(default_factory=dict)  # order_sn -> epoch it was added
    imports: list[dict[str, Any]] = field(default_factory=list)  # each upload and its outcome
    import_good: list[str] = field(default_factory=list)  # order ids the file holds right
    import_bad: dict[str, str] = field(default_factory=dict)  # order id -> what is wrong

    def record(self, stage: str, began: float, ended: float) -> None:
        self.stages.setdefault(stage, Stage(stage)).samples.append(
            (ended - self.start, ended - began)
        )

    def error(self, stage: str, status: int, body: bytes) -> None:
        key = f"{stage}:{status}"
        self.errors[key] = self.errors.get(key, 0) + 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{key}: {body[:300].decode(errors='replace')}")


@dataclass
class Targets:
    """Where the load goes."""

    api_port: int
    api_key: str
    paysim_port: int
    channelsim_port: int
    import_account: str = "drill_taobao"


class Scenario:
    """The promotion at one speed: orders scheduled open loop, each followed to its fate."""

    def __init__(
        self, targets: Targets, speed: float, duration: float, seed: int, run_id: str
    ) -> None:
        self.t = targets
        self.rate = promotion_rate(speed)
        self.duration = duration
        self.rng = random.Random(seed)
        self.run_id = run_id
        connections = max(32, min(256, int(self.rate * 0.5)))
        # One pool per kind of client: a burst of shipping must not hold up the buyers.
        self.pools = {
            "api_order": Pool(targets.api_port, connections),
            "payment_open": Pool(targets.api_port, connections),
            "other": Pool(targets.api_port, max(8, connections // 4)),
            "ship": Pool(targets.api_port, 16),
        }
        self.paysim = Pool(targets.paysim_port, max(8, connections // 2))
        self.channelsim = Pool(targets.channelsim_port, max(8, connections // 4))
        self.auth = {"Authorization": f"Bearer {targets.api_key}"}
        self.tally = Tally(start=time.perf_counter())
        self.tasks: set[asyncio.Task[None]] = set()

    # --- requests ---------------------------------------------------------------------------

    async def _api(
        self,
        stage: str,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        began: float | None = None,
    ) -> tuple[int, Any]:
        began = time.perf_counter() if began is None else began
        pool = self.pools.get(stage, self.pools["other"])
        status, raw = await pool.send(
            request(method, path, self.t.api_port, body, {**self.auth, **headers})
        )
        self.tally.record(stage, began, time.perf_counter())
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if status not in (200, 201, 202):
            self.tally.error(stage, status, raw)
        return status, doc

    async def _sim(
        self, stage: str, path: str, doc: dict[str, Any], pool: Pool | None = None
    ) -> tuple[int, bytes]:
        began = time.perf_counter()
        pool = pool or self.paysim
        body = json.dumps(doc).encode()
        status, raw = await pool.send(
            request("POST", path, pool.port, body, {"Content-Type": "application/json"})
        )
        self.tally.record(stage, began, time.perf_counter())
        if status != 200:
            self.tally.error(stage, status, raw)
        return status, raw

    async def shopify_order(self, n: int, copies: int) -> None:
        """A paid Shopify order: the channel simulator sends its signed orders/create webhook.
        Each has a buyer of its own (`shopify_phone`, a customer id), as the API's orders have:
        one buyer for all would trip `builtin.same_item_burst` from their fourth order on."""
        status, raw = await self._sim(
            "shopify_send",
            "/sim/shopify/orders",
            {
                "topic": "orders/create",
                "copies": copies,
                "sku": "TEA-LJ-250",
                "quantity": 2,
                "phone": shopify_phone(n),
                "customer_id": SHOPIFY_FIRST_CUSTOMER + n,
            },
            self.channelsim,
        )
        if status == 200:
            self.tally.shopify.add(str(json.loads(raw)["order_id"]))

    async def pdd_order(self, n: int) -> None:
        """A paid Pinduoduo order held at the simulator for the scheduled pull, its buyer's
        phone sealed as the platform seals it (the sync decrypts it)."""
        now = datetime.now(UTC)
        order_sn = pdd_order_sn(n, now.astimezone(BEIJING))
        status, _ = await self._sim(
            "pdd_add",
            "/sim/pinduoduo/orders",
            {
                "order_sn": order_sn,
                "updated_at": (now - PDD_BACKDATE).isoformat(),
                "sku": "TEA-LJ-250",
                "quantity": 2,
                "phone": pdd_phone(n),
            },
            self.channelsim,
        )
        if status == 200:
            self.tally.pdd[order_sn] = now.timestamp()

    async def file_import(self, count: int) -> None:
        """An operator uploads a Taobao export through the API, waits for the worker to import
        it, then uploads the same file again by mistake (which must create nothing)."""
        body, good, bad = taobao_export(1, count)
        self.tally.import_good, self.tally.import_bad = good, bad
        for upload in ("first", "again"):
            began = time.perf_counter()
            query = urlencode({"filename": "淘宝订单导出.csv", "template": "taobao"})
            status, doc = await self._api(
                "file_upload",
                "POST",
                f"/api/v1/channels/{self.t.import_account}/imports?{query}",
                body,
                {"Content-Type": "text/csv"},
            )
            if status != 202 or not isinstance(doc, dict):
                return
            entry: dict[str, Any] = {"upload": upload, "id": doc["id"], "state": doc["state"]}
            self.tally.imports.append(entry)
            deadline = began + IMPORT_WAIT_SECONDS
            while entry["state"] in ("queued", "running") and time.perf_counter() < deadline:
                await asyncio.sleep(IMPORT_POLL_SECONDS)
                status, doc = await self._api(
                    "file_poll", "GET", f"/api/v1/channels/imports/{entry['id']}", b"", {}
                )
                if status == 200 and isinstance(doc, dict):
                    entry.update(doc)
            self.tally.record("file_import", began, time.perf_counter())

    # --- one order --------------------------------------------------------------------------

    async def order(
        self, n: int, fate: str, retry: bool, provider: str, think: float, scheduled: float
    ) -> None:
        """Create order `n`, open its payment, then play its fate. The order's latency runs
        from its scheduled time (open loop)."""
        key = {"Idempotency-Key": f"{self.run_id}-{n}", "Content-Type": "application/json"}
        body = order_body(n)
        status, doc = await self._api(
            "api_order", "POST", "/api/v1/orders", body, key, began=scheduled
        )
        if status != 201 or not isinstance(doc, dict):
            return
        order_no = str(doc["order_no"])
        self.tally.fates[order_no] = fate
        if retry:
            again, replay = await self._api("api_order_retry", "POST", "/api/v1/orders", body, key)
            if again in (200, 201) and isinstance(replay, dict):
                self.tally.retried[order_no] = str(replay.get("order_no"))
        pay = json.dumps({"provider": provider}).encode()
        status, attempt = await self._api(
            "payment_open",
            "POST",
            f"/api/v1/orders/{order_no}/payments",
            pay,
            {"Content-Type": "application/json"},
        )
        if status != 201 or not isinstance(attempt, dict):
            return
        trade = {"provider": provider, "out_trade_no": str(attempt["out_trade_no"])}
        self.tally.trades[trade["out_trade_no"]] = order_no
        await asyncio.sleep(think)
        if fate in ("abandoned", "late"):
            await self._api(
                "cancel",
                "POST",
                f"/api/v1/orders/{order_no}/cancel",
                b'{"reason": "drill: buyer left"}',
                {"Content-Type": "application/json"},
            )
        if fate in ("paid", "late"):
            await self._sim("buyer_pay", "/sim/pay", trade)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> Tally:
        """Schedule the orders for `duration` seconds at the rate; wait for their stories."""
        interval = 1.0 / self.rate
        start = time.perf_counter() + 0.05
        self.tally.start = start
        imported = False
        n = 0
        while (at := start + n * interval) < start + self.duration:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not imported and at >= start + self.duration / 2:
                imported = True
                count = max(IMPORT_MIN_ORDERS, round(self.rate * self.duration * IMPORT_SHARE))
                self._spawn(self.file_import(count))
            channel = self.rng.random()
            if channel < SHOPIFY_SHARE:
                copies = 2 if self.rng.random() < SHOPIFY_DUPLICATE_RATE else 1
                self._spawn(self.shopify_order(n, copies))
                n += 1
                continue
            if channel < SHOPIFY_SHARE + PDD_SHARE:
                self._spawn(self.pdd_order(n))
                n += 1
                continue
            roll = self.rng.random()
            fate = (
                "abandoned"
                if roll < ABANDON_RATE
                else "late"
                if roll < ABANDON_RATE + LATE_RATE
                else "paid"
            )
            retry = self.rng.random() < RETRY_RATE
            provider = "wechatpay" if n % 2 == 0 else "alipay"
            self._spawn(self.order(n, fate, retry, provider, self.rng.uniform(0.1, 1.0), at))
            n += 1
        self.tally.scheduled = n
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=TIMEOUT * 3)
        return self.tally

    # --- the warehouse ----------------------------------------------------------------------

    async def ship(self, shipment_ids: list[int]) -> None:
        """Ship these shipments through the API (the warehouse scanning parcels out)."""
        todo = [i for i in shipment_ids if i not in self.tally.shipped]
        self.tally.shipped.update(todo)

        async def one(sid: int) -> None:
            status, _ = await self._api(
                "ship",
                "POST",
                f"/api/v1/shipments/{sid}/ship",
                b"{}",
                {"Content-Type": "application/json"},
            )
            if status not in (200, 201):
                self.tally.shipped.discard(sid)

        await asyncio.gather(*(one(s) for s in todo))

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.paysim.close()
        self.channelsim.close()
