"""The payments benchmark on PostgreSQL: `python -m bench.payments` (`--help` for the knobs).

1. The proof over real HTTP against `ordertally serve` in its own process: 5,000 valid
   notifications (half WeChat Pay, half Alipay), 3,000 duplicates, 1,000 forged (bad
   signature, unknown serial, tampered body, `WECHATPAY/SIGNTEST/` probes), 500 mismatched
   (amount, mchid, appid, seller) and 500 stale, shuffled, up to 50 in parallel. Measures
   callbacks acknowledged per second; then `ordertally worker` processes apply the inbox and
   the time until it is empty gives applied per second. Checks exactly 5,000 orders paid,
   5,000 `payment_succeeded` audit rows, every bad one refused and counted.
2. Acknowledgement latency at a fixed offered rate (default 1,000/s, open loop: latency runs
   from the scheduled send time) while the workers apply concurrently.
3. Reconciliation of a 1,000,000-row WeChat trade bill against a database holding the same
   million payments (plus discrepancies), end to end as `ordertally reconcile` runs it.
4. Refund notifications (phase `refunds`, not run by default: `--phases refunds`): orders paid
   first, then one signed partial-refund notification each (WeChat Pay REFUND.SUCCESS, Alipay
   refund trade_status_sync, numbered like after-sales refunds) offered at the same rate;
   acknowledgement latency, then applied per second, one payment_refund row per notification.
   `--refund-full-every N` makes every Nth refund a full one (the order moves to refunded and
   its stock is released), to measure the batched full refunds (ADR 0039).

Every measurement is repeated `--rounds` times; the medians are printed with the command line.
The load generator is `bench.loadgen.Connection` (raw keep-alive HTTP/1.1, a few µs/request).
Traffic goes to 127.0.0.1 only; every process this starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import String, cast, func, insert, literal, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.loadgen import Connection, HttpError

HOST = "127.0.0.1"
SKU = "PAY-BENCH-1"
WAREHOUSE = "PAYBENCH"
RECON_DAY = datetime(2026, 11, 21, 16, 0, tzinfo=UTC)  # 2026-11-22 00:00 in Beijing
# Paid orders move on (fulfillment allocates them) while the workers apply.
PAID_OR_LATER = ("paid", "allocated", "fulfilling", "shipped", "delivered", "completed")


# --- processes and the database ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


@dataclass
class Env:
    url: str
    vars: dict[str, str]
    keys: Any
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{args[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ordertally", *args],
            env=self.vars,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


async def wait_http(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, HttpError):
            conn = Connection(HOST, port)
            status, _ = await conn.send(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            conn.close()
            if status == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


# --- seeding ---------------------------------------------------------------------------------


async def seed_stock(db: Any) -> None:
    from ordertally.catalog import service as catalog_service
    from ordertally.inventory import service as inventory_service

    async with db.transaction() as session:
        await inventory_service.create_warehouse(
            session,
            {
                "code": WAREHOUSE,
                "name": "支付压测仓",
                "province": "上海市",
                "city": "上海市",
                "latitude": None,
                "longitude": None,
                "priority": 1,
                "cost_factor": 1.0,
                "active": True,
            },
        )
        await catalog_service.add_skus(
            session, [{"code": c, "name": c, "name_en": c} for c in [SKU]], "bench"
        )
        await inventory_service.record_movement(
            session,
            warehouse_code=WAREHOUSE,
            sku=SKU,
            kind="receipt",
            quantity=100_000_000,
            reason="payments bench",
            actor="bench",
        )


def order_command(n: int) -> Any:
    from ordertally.orders.schemas import OrderCreate

    return OrderCreate.model_validate(
        {
            "channel": "bench_pay",
            "external_id": f"pay-{uuid.uuid4().hex}",
            "customer": {"name": "买家", "phone": f"139{n % 100_000_000:08d}"},
            "shipping_address": {
                "name": "买家",
                "phone": f"139{n % 100_000_000:08d}",
                "province": "上海市",
                "city": "上海市",
                "district": "浦东新区",
                "line1": "世纪大道1号",
            },
            "lines": [{"sku": SKU, "quantity": 1, "unit_price": f"{10 + n % 90}.{n % 100:02d}"}],
            "currency": "CNY",
        }
    )


async def make_attempts(db: Any, count: int, provider_of: Any) -> list[Any]:
    """`count` orders with one pending attempt each (through the services, 100 per commit)."""
    from ordertally.orders import service as orders_service
    from ordertally.orders.service import Actor
    from ordertally.orders.state_machine import ActorKind
    from ordertally.payments import service as payments_service

    attempts: list[Any] = []
    for start in range(0, count, 100):
        async with db.transaction() as session:
            for n in range(start, min(count, start + 100)):
                snapshot, _ = await orders_service.create_order(
                    session,
                    order_command(n),
                    Actor(ActorKind.API, "bench"),
                    check_fingerprint=False,
                )
                payment, _ = await payments_service.open_attempt(
                    session, snapshot.order, provider_of(n), "bench"
                )
                attempts.append(payment)
    return attempts


async def drain_outbox(db: Any) -> None:
    from ordertally.core.settings import get_settings
    from ordertally.events import dispatcher

    await dispatcher.drain(db, get_settings())


# --- messages --------------------------------------------------------------------------------


@dataclass
class Message:
    provider: str
    kind: str
    request: bytes


def _request(port: int, provider: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST /callbacks/{provider} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def wechat(port: int, kind: str, headers: dict[str, str], body: bytes) -> Message:
    return Message("wechatpay", kind, _request(port, "wechatpay", headers, body))


def alipay(port: int, kind: str, form: dict[str, str]) -> Message:
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    return Message("alipay", kind, _request(port, "alipay", headers, body))


def tampered(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["summary"] = doc["summary"] + "!"
    return orjson.dumps(doc)


def build_proof(
    keys: Any, port: int, valid: list[Any], wrong: list[Any], sizes: dict[str, int]
) -> list[Message]:
    """The proof's mix: valid, duplicates, forged, mismatched, stale (shuffled)."""
    from ordertally.payments.simulator import messages as m

    out: list[Message] = []
    wx_sent: list[tuple[dict[str, Any], str]] = []
    ali_sent: list[dict[str, str]] = []
    for p in valid:
        if p.provider == "wechatpay":
            txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
            nid = str(uuid.uuid4())
            out.append(
                wechat(port, "valid", *m.wechat_notification(keys, txn, notification_id=nid))
            )
            wx_sent.append((txn, nid))
        else:
            form = m.alipay_notification(keys, p.out_trade_no, m.yuan(p.amount_minor))
            out.append(alipay(port, "valid", form))
            ali_sent.append(form)
    rng = random.Random(11)
    for i in range(sizes["duplicates"]):
        if i % 2 == 0 and wx_sent:
            txn, nid = rng.choice(wx_sent)
            out.append(
                wechat(port, "duplicate", *m.wechat_notification(keys, txn, notification_id=nid))
            )
        else:
            out.append(alipay(port, "duplicate", rng.choice(ali_sent)))
    wx_valid = [p for p in valid if p.provider == "wechatpay"]
    for i in range(sizes["forged"]):
        p = wx_valid[i % len(wx_valid)]
        txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
        variant = i % 4
        if variant == 0:
            out.append(
                wechat(port, "forged", *m.wechat_notification(keys, txn, sign_key=m.forger_key()))
            )
        elif variant == 1:
            out.append(wechat(port, "forged", *m.wechat_notification(keys, txn, serial="F" * 40)))
        elif variant == 2:
            h, b = m.wechat_notification(keys, txn)
            out.append(wechat(port, "forged", h, tampered(b)))
        else:
            b = m.wechat_notification_body(keys, txn)
            out.append(wechat(port, "forged", m.wechat_probe_headers(keys, b), b))
    quarter = sizes["mismatched"] // 4
    for p in wrong[:quarter]:
        txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor + 1)
        out.append(wechat(port, "wrong_amount", *m.wechat_notification(keys, txn)))
    for i in range(sizes["mismatched"] - quarter):
        p = valid[i % len(valid)]
        variant = i % 3
        if variant == 0:
            txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor, mchid="1900000999")
            out.append(wechat(port, "mismatch", *m.wechat_notification(keys, txn)))
        elif variant == 1:
            txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor, appid="wx00000000")
            out.append(wechat(port, "mismatch", *m.wechat_notification(keys, txn)))
        else:
            form = m.alipay_notification(
                keys, p.out_trade_no, m.yuan(p.amount_minor), seller_id="2088999999999999"
            )
            out.append(alipay(port, "mismatch", form))
    stale_at = int(time.time()) - m.STALE_SECONDS
    for i in range(sizes["stale"]):
        p = wx_valid[i % len(wx_valid)]
        txn = m.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
        out.append(wechat(port, "stale", *m.wechat_notification(keys, txn, timestamp=stale_at)))
    rng.shuffle(out)
    return out


# --- load ------------------------------------------------------------------------------------


async def closed_loop(
    port: int, messages: list[Message], parallel: int
) -> tuple[float, list[tuple[Message, int, bytes, float]]]:
    """Send everything with `parallel` keep-alive connections; returns (seconds, results)."""
    queue = iter(messages)
    results: list[tuple[Message, int, bytes, float]] = []

    async def client() -> None:
        conn = Connection(HOST, port)
        for message in queue:
            t0 = time.perf_counter()
            try:
                status, body = await conn.send(message.request)
            except (OSError, HttpError) as exc:
                conn.close()
                status, body = 0, str(exc).encode()
            results.append((message, status, body, time.perf_counter() - t0))
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(parallel)))
    return time.perf_counter() - start, results


HEALTH_REQUEST = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def open_loop(
    port: int,
    messages: list[Message],
    rate: float,
    connections: int,
    trace: list[tuple[float, float, float]] | None = None,
) -> list[float]:
    """Offer `rate` requests/s; each latency runs from its scheduled send time. With `trace`,
    also (scheduled offset, send delay, latency) of each acknowledged request, in seconds."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = [Connection(HOST, port) for _ in range(connections)]
    # Connections are opened (and used once) before the clock starts, as a client pool would be.
    await asyncio.gather(*(c.send(HEALTH_REQUEST) for c in opened))
    for conn in opened:
        idle.put_nowait(conn)
    latencies: list[float] = []
    # The load generator's own garbage collection must not show up as server latency.
    gc.collect()
    gc.disable()
    tasks = len(messages)
    start = time.perf_counter() + 0.2 + tasks / 50_000  # room to create the tasks first

    async def one(i: int, message: Message) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        conn = await idle.get()
        sent = time.perf_counter()
        try:
            status, _ = await conn.send(message.request)
        except (OSError, HttpError):
            conn.close()
            status = 0
        idle.put_nowait(conn)
        if status in (200, 204):
            latencies.append(time.perf_counter() - scheduled)
            if trace is not None:
                trace.append((scheduled - start, sent - scheduled, latencies[-1]))

    try:
        await asyncio.gather(*(one(i, msg) for i, msg in enumerate(messages)))
    finally:
        gc.enable()
    while not idle.empty():
        idle.get_nowait().close()
    return latencies


def _append(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(line)


async def ack_histogram(port: int) -> dict[str, int]:
    """The server's own view: callbacks answered within each bucket (all rounds so far)."""
    conn = Connection(HOST, port)
    try:
        _, body = await conn.send(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    finally:
        conn.close()
    buckets: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line.startswith("ordertally_payment_callback_ack_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] += int(float(line.rsplit(" ", 1)[1]))
    return dict(buckets)


async def inbox_totals(port: int) -> dict[str, float]:
    """The server's inbox batches so far: commit seconds and callbacks, summed and counted
    (empty when the server does not export them)."""
    conn = Connection(HOST, port)
    try:
        _, body = await conn.send(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    finally:
        conn.close()
    totals: dict[str, float] = {}
    for line in body.decode().splitlines():
        for name in (
            "ordertally_payment_inbox_commit_seconds_sum",
            "ordertally_payment_inbox_commit_seconds_count",
            "ordertally_payment_inbox_batch_callbacks_sum",
        ):
            if line.startswith(name + " "):
                totals[name] = float(line.rsplit(" ", 1)[1])
    return totals


def inbox_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Mean commit time of an inbox batch and callbacks per batch between two scrapes."""
    commit, count, callbacks = (
        "ordertally_payment_inbox_commit_seconds_sum",
        "ordertally_payment_inbox_commit_seconds_count",
        "ordertally_payment_inbox_batch_callbacks_sum",
    )
    if not all(k in after for k in (commit, count, callbacks)):
        return {"inbox_commit_ms_mean": None, "callbacks_per_commit": None}
    batches = after[count] - before.get(count, 0.0)
    if batches <= 0:
        return {"inbox_commit_ms_mean": None, "callbacks_per_commit": None}
    return {
        "inbox_commit_ms_mean": round(
            (after[commit] - before.get(commit, 0.0)) * 1000 / batches, 3
        ),
        "callbacks_per_commit": round((after[callbacks] - before.get(callbacks, 0.0)) / batches, 2),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def server_pid(env: Env) -> int:
    """The (first) API process."""
    return next(p for p in env.procs if "serve" in p.args).pid  # type: ignore[operator]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def apply_span(db: Any, since: datetime) -> dict[str, float | None]:
    """How fast the workers applied once running: the notifications applied after the first
    committed batch, over the time from that batch to the last one."""
    from ordertally.payments.models import PaymentNotification

    async with db.transaction(write=False) as session:
        stamps = [
            at
            for (at,) in (
                await session.execute(
                    select(PaymentNotification.applied_at).where(
                        PaymentNotification.applied_at >= since
                    )
                )
            ).all()
        ]
    if len(stamps) < 2:
        return {"first_after_s": None, "per_s": None}
    first, last = min(stamps), max(stamps)
    after_first = sum(1 for at in stamps if at > first)
    span = (last - first).total_seconds()
    return {
        "first_after_s": round((first - since).total_seconds(), 3),
        "per_s": round(after_first / span, 1) if span > 0 else None,
    }


async def _pending_for(db: Any, pending: Any, limit_seconds: float, poll: float) -> float | None:
    """Seconds until `pending` (a count query) is 0, polling; None after `limit_seconds`."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_seconds:
        async with db.transaction(write=False) as session:
            if not await session.scalar(pending):
                return time.perf_counter() - start
        await asyncio.sleep(poll)
    return None


async def wait_applied(db: Any, total: int, limit_seconds: float) -> float:
    """Seconds until no notification is pending (polling); raises after `limit_seconds`."""
    from ordertally.payments.models import PaymentNotification

    pending = select(func.count()).where(PaymentNotification.outcome == "pending")
    waited = await _pending_for(db, pending, limit_seconds, 0.05)
    if waited is None:
        raise RuntimeError(f"inbox not applied within {limit_seconds}s ({total} sent)")
    return waited


# --- phases ----------------------------------------------------------------------------------


def start_sampling(env: Env, args: argparse.Namespace) -> subprocess.Popen[bytes] | None:
    """With --profile-ack FILE: sample the (first) API process with py-spy while it acks."""
    if not args.profile_ack:
        return None
    server = next(p for p in env.procs if "serve" in p.args)  # type: ignore[operator]
    return subprocess.Popen(
        [
            *("py-spy", "record", "-p", str(server.pid), "-r", "250", "-f", "raw"),
            *("-o", args.profile_ack, "--subprocesses", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_sampling(sampler: subprocess.Popen[bytes] | None) -> None:
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)


async def proof_round(env: Env, db: Any, args: argparse.Namespace, port: int) -> dict[str, Any]:
    from ordertally.orders.models import OrderEvent, SalesOrder
    from ordertally.payments.models import Payment, PaymentNotification

    sizes = {
        "valid": args.valid,
        "duplicates": args.duplicates,
        "forged": args.forged,
        "mismatched": args.mismatched,
        "stale": args.stale,
    }
    t0 = time.perf_counter()
    valid = await make_attempts(db, args.valid, lambda n: "wechatpay" if n % 2 else "alipay")
    wrong = await make_attempts(db, args.mismatched // 4, lambda n: "wechatpay")
    await drain_outbox(db)
    seeded = time.perf_counter() - t0
    async with db.transaction(write=False) as session:
        paid_before = await session.scalar(
            select(func.count()).where(SalesOrder.status.in_(PAID_OR_LATER))
        )
        audit_before = await session.scalar(
            select(func.count()).where(OrderEvent.event == "payment_succeeded")
        )
        inbox_before = await session.scalar(select(func.count()).select_from(PaymentNotification))
    msgs = build_proof(env.keys, port, valid, wrong, sizes)
    sampler = start_sampling(env, args)
    elapsed, results = await closed_loop(port, msgs, args.parallel)
    stop_sampling(sampler)
    outcome: Counter[str] = Counter()
    for message, status, body, _ in results:
        outcome[
            f"{message.kind}:{message.provider}:{status}:{body[:7].decode(errors='replace')}"
        ] += 1
    spawned_at = datetime.now(UTC)
    workers = [env.spawn("worker") for _ in range(args.workers)]
    try:
        applying = await wait_applied(db, len(valid), 600)
    finally:
        for w in workers:
            env.stop(w)
    applied = len(valid) + len(wrong)
    running = await apply_span(db, spawned_at)
    async with db.transaction(write=False) as session:
        paid = await session.scalar(
            select(func.count()).where(SalesOrder.status.in_(PAID_OR_LATER))
        )
        audit = await session.scalar(
            select(func.count()).where(OrderEvent.event == "payment_succeeded")
        )
        inbox = await session.scalar(select(func.count()).select_from(PaymentNotification))
        outcomes = dict(
            (
                await session.execute(
                    select(PaymentNotification.outcome, func.count()).group_by(
                        PaymentNotification.outcome
                    )
                )
            ).all()
        )
        mismatched_attempts = await session.scalar(
            select(func.count()).where(Payment.state == "mismatch")
        )
    checks = {
        # Paid orders move on (fulfillment allocates them) while the workers apply.
        "orders_paid": int(paid or 0) - int(paid_before or 0),
        "payment_succeeded_audit_rows": int(audit or 0) - int(audit_before or 0),
        "inbox_rows": int(inbox or 0) - int(inbox_before or 0),
        "attempts_with_wrong_amount": mismatched_attempts,
    }
    ok = (
        checks["orders_paid"] == len(valid)
        and checks["payment_succeeded_audit_rows"] == len(valid)
        and all(
            key.split(":")[2] in ("200", "204")
            for key in outcome
            if key.split(":")[0] in ("valid", "duplicate", "wrong_amount")
        )
        and all(
            key.split(":")[2] not in ("200", "204")
            for key in outcome
            if key.split(":")[0] in ("forged", "stale", "mismatch")
        )
    )
    return {
        "requests": len(msgs),
        "seconds": round(elapsed, 3),
        "acknowledged_per_s": round(len(msgs) / elapsed, 1),
        "ack_p50_ms": round(percentile([r[3] for r in results], 0.5) * 1000, 2),
        "ack_p99_ms": round(percentile([r[3] for r in results], 0.99) * 1000, 2),
        "apply_seconds": round(applying, 3),
        "applied_per_s": round(applied / applying, 1),
        # The same work measured from the first batch the workers committed to the last, i.e.
        # without the worker processes' start-up (imports, connections), which the figure
        # above includes.
        "worker_start_seconds": running["first_after_s"],
        "applied_per_s_running": running["per_s"],
        "responses": dict(sorted(outcome.items())),
        "apply_outcomes": outcomes,
        "checks": checks,
        "ok": ok,
        "seed_seconds": round(seeded, 1),
    }


async def wait_outbox_empty(db: Any, limit_seconds: float) -> None:
    """Wait (polling) until no outbox event is pending; raises after `limit_seconds`."""
    from ordertally.events.models import OutboxEvent

    pending = select(func.count()).where(OutboxEvent.status == "pending")
    if await _pending_for(db, pending, limit_seconds, 0.2) is None:
        raise RuntimeError(f"outbox not drained within {limit_seconds}s")


def latency_figures(args: argparse.Namespace, total: int, latencies: list[float]) -> dict[str, Any]:
    """The open loop's figures: offered rate, requests, acknowledged, p50 / p99 / max."""
    return {
        "offered_per_s": args.rate,
        "workers_applying_meanwhile": args.latency_with_workers,
        "requests": total,
        "acknowledged": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
    }


async def latency_round(env: Env, db: Any, args: argparse.Namespace, port: int) -> dict[str, Any]:
    from ordertally.payments.simulator import messages as m

    total = int(args.rate * args.rate_seconds)
    attempts = await make_attempts(db, total, lambda n: "wechatpay" if n % 2 else "alipay")
    await drain_outbox(db)
    msgs: list[Message] = []
    for p in attempts:
        if p.provider == "wechatpay":
            txn = m.wechat_transaction(env.keys, p.out_trade_no, p.amount_minor)
            msgs.append(wechat(port, "valid", *m.wechat_notification(env.keys, txn)))
        else:
            form = m.alipay_notification(env.keys, p.out_trade_no, m.yuan(p.amount_minor))
            msgs.append(alipay(port, "valid", form))
    workers = (
        [env.spawn("worker") for _ in range(args.workers)] if args.latency_with_workers else []
    )
    try:
        await asyncio.sleep(1.0)
        trace: list[tuple[float, float, float]] | None = [] if args.trace_latencies else None
        window_start = time.time()
        latencies = await open_loop(port, msgs, args.rate, args.parallel, trace)
        window_end = time.time()
        if trace is not None:
            line = json.dumps({"window_unix": window_start, "trace": trace}) + "\n"
            await asyncio.to_thread(_append, Path(args.trace_latencies), line)
        server_side = await ack_histogram(port)
        if not workers:
            workers = [env.spawn("worker") for _ in range(args.workers)]
        await wait_applied(db, total, 600)
    finally:
        for w in workers:
            env.stop(w)
    return {
        **latency_figures(args, total, latencies),
        "server_side_ack_cumulative": server_side,
        "window_unix": [round(window_start, 2), round(window_end, 2)],
    }


async def refund_round(env: Env, db: Any, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Refund notifications (issue 18): `rate × rate_seconds` orders paid first (their payment
    notifications sent and applied, not timed), then one partial refund notification each
    (WeChat Pay REFUND.SUCCESS with an encrypted refund resource, Alipay's trade_status_sync
    with refund_fee and out_biz_no), signed as the providers sign, numbered as after-sales
    numbers its refunds (`ASR...`), offered at `rate`/s (open loop); then the workers apply
    them. Checks one payment_refund row per notification and the refunded totals (exactly
    once: 1.00 more on each attempt, the whole amount on every `--refund-full-every`th)."""
    from ordertally.payments.models import Payment, PaymentNotification, PaymentRefund
    from ordertally.payments.simulator import messages as m

    total = int(args.rate * args.rate_seconds)
    attempts = await make_attempts(db, total, lambda n: "wechatpay" if n % 2 else "alipay")
    await drain_outbox(db)
    paid_at = datetime.now(UTC) - timedelta(minutes=5)
    pay: list[Message] = []
    for p in attempts:
        if p.provider == "wechatpay":
            txn = m.wechat_transaction(env.keys, p.out_trade_no, p.amount_minor)
            pay.append(wechat(port, "valid", *m.wechat_notification(env.keys, txn)))
        else:
            form = m.alipay_notification(
                env.keys, p.out_trade_no, m.yuan(p.amount_minor), gmt_payment=paid_at
            )
            pay.append(alipay(port, "valid", form))
    await closed_loop(port, pay, args.parallel)
    workers = [env.spawn("worker") for _ in range(args.workers)]
    try:
        await wait_applied(db, total, 600)
        # ...and what paying set off (allocation, the other consumers), so the refunds' apply
        # below is not queued behind it.
        await wait_outbox_empty(db, 900)
    finally:
        for w in workers:
            env.stop(w)
    async with db.transaction(write=False) as session:
        refunds_before = await session.scalar(select(func.count()).select_from(PaymentRefund))
        refunded_before = await session.scalar(select(func.sum(Payment.refunded_minor)))
    msgs: list[Message] = []
    expected = 0
    for i, p in enumerate(attempts):
        out_refund_no = f"ASR{i:016d}{secrets.randbelow(10**6):06d}"
        # 1.00 of each order (a partial refund), or every Nth order in full.
        full = args.refund_full_every > 0 and i % args.refund_full_every == 0
        refund_minor = p.amount_minor if full else 100
        expected += refund_minor
        if p.provider == "wechatpay":
            resource = m.wechat_refund(
                env.keys,
                p.out_trade_no,
                m.new_transaction_id(),
                p.amount_minor,
                refund_minor,
                out_refund_no=out_refund_no,
            )
            headers, body = m.wechat_notification(env.keys, resource, event_type="REFUND.SUCCESS")
            msgs.append(wechat(port, "refund", headers, body))
        else:
            form = m.alipay_refund_notification(
                env.keys,
                p.out_trade_no,
                m.yuan(p.amount_minor),
                m.yuan(refund_minor),
                out_biz_no=out_refund_no,
                trade_no=m.new_trade_no(),
                gmt_payment=paid_at,
                fully_refunded=full,
            )
            msgs.append(alipay(port, "refund", form))
    workers = (
        [env.spawn("worker") for _ in range(args.workers)] if args.latency_with_workers else []
    )
    try:
        await asyncio.sleep(1.0)
        window_start = time.time()
        cpu_before = cpu_seconds(server_pid(env))
        inbox_before = await inbox_totals(port)
        latencies = await open_loop(port, msgs, args.rate, args.parallel)
        cpu_after = cpu_seconds(server_pid(env))
        window_end = time.time()
        inbox = inbox_figures(inbox_before, await inbox_totals(port))
        spawned_at = datetime.now(UTC)
        if not workers:
            workers = [env.spawn("worker") for _ in range(args.workers)]
        applying = await wait_applied(db, total, 600)
    finally:
        for w in workers:
            env.stop(w)
    running = await apply_span(db, spawned_at)
    async with db.transaction(write=False) as session:
        refunds_after = await session.scalar(select(func.count()).select_from(PaymentRefund))
        refunded_after = await session.scalar(select(func.sum(Payment.refunded_minor)))
        outcomes = dict(
            (
                await session.execute(
                    select(PaymentNotification.outcome, func.count())
                    .where(
                        PaymentNotification.received_at >= datetime.fromtimestamp(window_start, UTC)
                    )
                    .group_by(PaymentNotification.outcome)
                )
            ).all()
        )
    recorded = int(refunds_after or 0) - int(refunds_before or 0)
    refunded = int(refunded_after or 0) - int(refunded_before or 0)
    return {
        **latency_figures(args, total, latencies),
        "apply_seconds": round(applying, 3),
        "applied_per_s": round(total / applying, 1),
        "worker_start_seconds": running["first_after_s"],
        "applied_per_s_running": running["per_s"],
        "apply_outcomes": outcomes,
        **inbox,
        # CPU the API process spent per acknowledged refund during the window: what one
        # acknowledgement costs whatever the machine's load.
        "server_cpu_ms_per_ack": (
            round((cpu_after - cpu_before) * 1000 / total, 3)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "refunds_recorded": recorded,
        "refunded_minor": refunded,
        "full_refunds": outcomes.get("refund_full", 0),
        "ok": len(latencies) == total and recorded == total and refunded == expected,
        "window_unix": [round(window_start, 2), round(window_end, 2)],
    }


async def seed_recon(db: Any, rows: int) -> tuple[list[tuple[str, str, int]], int]:
    """`rows` paid WeChat payments on RECON_DAY (orders cloned from a template by SQL)."""
    from ordertally.orders.models import SalesOrder
    from ordertally.payments.models import Payment

    [template] = await make_attempts(db, 1, lambda n: "wechatpay")
    skip = {"id", "order_no", "external_id", "channel", "status", "version"}
    order_cols = [c for c in SalesOrder.__table__.columns if c.name not in skip]
    async with db.transaction() as session:
        tpl = select(*order_cols).where(SalesOrder.order_no == template.order_no).subquery()
        series = func.generate_series(1, rows).column_valued("g")
        await session.execute(
            insert(SalesOrder).from_select(
                [
                    "order_no",
                    "channel",
                    "external_id",
                    "status",
                    "version",
                    *[c.name for c in order_cols],
                ],
                select(
                    literal("RC") + func.lpad(cast(series, String), 18, "0"),
                    literal("bench_recon"),
                    literal(None),
                    literal("paid"),
                    literal(2),
                    *[tpl.c[c.name] for c in order_cols],
                ).select_from(tpl),
            )
        )
        now = datetime.now(UTC)
        await session.execute(
            insert(Payment).from_select(
                [
                    "order_id",
                    "order_no",
                    "provider",
                    "out_trade_no",
                    "amount_minor",
                    "currency",
                    "state",
                    "provider_txn_id",
                    "paid_amount_minor",
                    "paid_at",
                    "settles_order",
                    "refunded_minor",
                    "query_count",
                    "created_by",
                    "created_at",
                    "updated_at",
                ],
                select(
                    SalesOrder.id,
                    SalesOrder.order_no,
                    literal("wechatpay"),
                    SalesOrder.order_no + "P01",
                    SalesOrder.total_minor,
                    literal("CNY"),
                    literal("paid"),
                    literal("4200") + SalesOrder.order_no,
                    SalesOrder.total_minor,
                    literal(RECON_DAY + timedelta(hours=10)),
                    literal(True),
                    literal(0),
                    literal(0),
                    literal("bench"),
                    literal(now),
                    literal(now),
                ).where(SalesOrder.channel == "bench_recon"),
            )
        )
    async with db.transaction(write=False) as session:
        found = (
            await session.execute(
                select(Payment.out_trade_no, Payment.provider_txn_id, Payment.amount_minor)
                .where(Payment.order_no.like("RC%"))
                .order_by(Payment.id)
            )
        ).all()
    return [(a, b, c) for a, b, c in found], template.amount_minor


def write_recon_bill(path: Path, held: list[tuple[str, str, int]], extra: int) -> dict[str, int]:
    from ordertally.payments.simulator import bills

    missing, wrong = 500, 500

    def rows() -> Iterator[Any]:
        at = RECON_DAY + timedelta(hours=10)
        for i, (no, txn, amount) in enumerate(held[missing:]):
            yield bills.BillRow(no, txn, amount + (1 if i < wrong else 0), at)
        for i in range(extra):
            yield bills.BillRow(f"NOTOURS{i:012d}", f"4200X{i:012d}", 100, at)

    bills.write_bill("wechatpay", rows(), path)
    return {
        "matched": len(held) - missing - wrong,
        "ordertally_only": missing,
        "amount_mismatch": wrong,
        "platform_only": extra,
    }


async def recon_rounds(env: Env, db: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from ordertally.payments import reconcile

    t0 = time.perf_counter()
    held, _ = await seed_recon(db, args.recon_rows)
    path = env.tmp / "wechat-bill.csv"
    expected = write_recon_bill(path, held, 100)
    prepared = time.perf_counter() - t0
    out = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        report = await reconcile.run_file(db, "wechatpay", path, run_by="bench")
        seconds = time.perf_counter() - start
        counts = {k: v for k, v in report.counts.items() if v}
        out.append(
            {
                "rows": report.rows,
                "seconds": round(seconds, 3),
                "counts": counts,
                "ok": all(report.counts[k] == v for k, v in expected.items()),
                "file_mb": round(path.stat().st_size / 1e6, 1),
                "prepare_seconds": round(prepared, 1),
            }
        )
    return out


# --- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from ordertally.core.db import Database
    from ordertally.core.settings import reset_settings
    from ordertally.ops.migrations import upgrade
    from ordertally.payments.simulator import keys as sim_keys

    pg = args.pg_url or os.environ.get("ORDERTALLY_TEST_PG_URL", "")
    if not pg.startswith("postgresql"):
        raise SystemExit("set ORDERTALLY_TEST_PG_URL (or --pg-url) to a PostgreSQL server")
    name = f"ot_paybench_{uuid.uuid4().hex[:10]}"
    await admin(pg, f'CREATE DATABASE "{name}"')
    url = make_url(pg).set(database=name).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp(prefix="ordertally-paybench-"))
    keys = sim_keys.generate(tmp / "keys", "http://127.0.0.1:9")
    port = free_port()
    env_vars = {
        **os.environ,
        **keys.settings_env(),
        "ORDERTALLY_DATABASE_URL": url,
        "ORDERTALLY_DATA_DIR": str(tmp),
        "ORDERTALLY_PII_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ORDERTALLY_WORKER_BATCH_SIZE": str(args.batch),
        "ORDERTALLY_WORKER_POLL_SECONDS": "0.05",
        "ORDERTALLY_DB_POOL_SIZE": "20",
        "ORDERTALLY_RATE_LIMIT_PER_KEY": "1000000/second",
        "ORDERTALLY_RATE_LIMIT_PER_IP": "1000000/second",
    }
    os.environ.update({k: v for k, v in env_vars.items() if k.startswith("ORDERTALLY_")})
    reset_settings()
    env = Env(url, env_vars, keys, tmp)
    results: dict[str, Any] = {"proof": [], "latency": [], "refunds": [], "reconcile": []}
    db = Database(url, pool_size=10)
    try:
        await asyncio.to_thread(upgrade, url)
        await seed_stock(db)
        if {"proof", "latency", "refunds"} & set(args.phases):
            server_args = ["serve", "--no-worker", "--host", HOST, "--port", str(port)]
            if args.server_workers > 1:
                server_args += ["--workers", str(args.server_workers)]
            env.spawn(*server_args)
            await wait_http(port)
            for _ in range(args.rounds if "proof" in args.phases else 0):
                results["proof"].append(await proof_round(env, db, args, port))
                print(json.dumps({"proof": results["proof"][-1]}, ensure_ascii=False), flush=True)
            for _ in range(args.rounds if "latency" in args.phases else 0):
                results["latency"].append(await latency_round(env, db, args, port))
                print(json.dumps({"latency": results["latency"][-1]}), flush=True)
            for _ in range(args.rounds if "refunds" in args.phases else 0):
                results["refunds"].append(await refund_round(env, db, args, port))
                print(json.dumps({"refunds": results["refunds"][-1]}), flush=True)
        if args.recon_rows and "reconcile" in args.phases:
            results["reconcile"] = await recon_rounds(env, db, args)
            print(json.dumps({"reconcile": results["reconcile"]}, ensure_ascii=False), flush=True)
    finally:
        env.stop_all()
        await db.dispose()
        await admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def summary(results: dict[str, Any]) -> dict[str, Any]:
    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    return {
        "acknowledged_per_s": med(results["proof"], "acknowledged_per_s"),
        "applied_per_s": med(results["proof"], "applied_per_s"),
        "applied_per_s_running": med(results["proof"], "applied_per_s_running"),
        "proof_ok": all(r["ok"] for r in results["proof"]),
        "ack_p99_ms_at_offered_rate": med(results["latency"], "p99_ms"),
        "ack_p50_ms_at_offered_rate": med(results["latency"], "p50_ms"),
        "refund_ack_p99_ms_at_offered_rate": med(results["refunds"], "p99_ms"),
        "refund_applied_per_s": med(results["refunds"], "applied_per_s"),
        "refund_applied_per_s_running": med(results["refunds"], "applied_per_s_running"),
        "refunds_ok": all(r["ok"] for r in results["refunds"]),
        "reconcile_seconds": med(results["reconcile"], "seconds"),
        "reconcile_ok": all(r["ok"] for r in results["reconcile"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.payments", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--pg-url", default="", help="PostgreSQL admin URL (default ORDERTALLY_TEST_PG_URL)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--valid", type=int, default=5000)
    parser.add_argument("--duplicates", type=int, default=3000)
    parser.add_argument("--forged", type=int, default=1000)
    parser.add_argument("--mismatched", type=int, default=500)
    parser.add_argument("--stale", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="ordertally worker processes")
    parser.add_argument("--server-workers", type=int, default=1, help="API processes")
    parser.add_argument("--batch", type=int, default=200, help="ORDERTALLY_WORKER_BATCH_SIZE")
    parser.add_argument(
        "--profile-ack", default="", help="py-spy raw samples of the API while it acknowledges"
    )
    parser.add_argument(
        "--trace-latencies",
        default="",
        help="append each latency round's (offset, send delay, latency) triples to this file",
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--recon-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--refund-full-every",
        type=int,
        default=0,
        help="refunds phase: every Nth refund is a full one (0: partial refunds only)",
    )
    parser.add_argument(
        "--phases",
        type=lambda v: v.split(","),
        default=["proof", "latency", "reconcile"],
        help="comma-separated: proof,latency,refunds,reconcile (refunds: refund notifications)",
    )
    parser.add_argument(
        "--latency-with-workers",
        action="store_true",
        help="apply with the workers while measuring the latency (default: apply afterwards)",
    )
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(json.dumps({"summary": summary(results), "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
