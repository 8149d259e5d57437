"""The drill's load: each order's story told over HTTP on 127.0.0.1.

An order is created through the API (POST /api/v1/orders with an Idempotency-Key; some are
sent twice, as a client retry), a payment attempt is opened (the API asks the payment simulator
for a QR code), then the buyer's fate plays out: most pay at the simulator (which notifies
ordertally with its signed callbacks and its misbehaviour), some leave and the order is
cancelled, some pay after the order was cancelled (a late payment). A warehouse loop ships
every shipment that has its waybill. Orders are scheduled open loop at the promotion's rate
(120,000 in 30 minutes times the speed), so a slow server is charged for the wait.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

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
# delivered twice with the same webhook id); the rest through the API.
SHOPIFY_SHARE = 0.2
SHOPIFY_DUPLICATE_RATE = 0.05


SHOPIFY_FIRST_CUSTOMER = 6_000_000_000  # the Shopify customer id of tick 0


def shopify_phone(n: int) -> str:
    """The Shopify buyer's phone of tick `n`: a mainland mobile of the 139 range, so that it is
    neither another Shopify order's buyer nor an API order's (`bench.payload.phone`, 138). Its
    Shopify customer id is `SHOPIFY_FIRST_CUSTOMER + n`: customers/ links a buyer by either."""
    return f"+86139{n % 100_000_000:08d}"


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
        if status not in (200, 201):
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
        n = 0
        while (at := start + n * interval) < start + self.duration:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.rng.random() < SHOPIFY_SHARE:
                copies = 2 if self.rng.random() < SHOPIFY_DUPLICATE_RATE else 1
                self._spawn(self.shopify_order(n, copies))
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
