"""The outbox consumers as a worker runs them, all of them, on orders made by the real services:
`python -m bench.consumers [--orders N] [--paid F] [--runs R] [--batch B] [--notify]
[--outbound]`.

Per run: a scratch PostgreSQL database, every domain wired as `ordertally worker` wires it, N
orders created through the order service (200 per transaction, like a group commit), a share
F of them paid (the payment transition), nothing delivered yet. Then the timed part: the
dispatcher drains the outbox (the events, and every event they cause: allocation, its stock
events, rules, search, analytics, customers, notifications) with the worker's batch size.

Reported per run: events and orders per second of wall time, the bench process's CPU and the
database backends' CPU (read from /proc, so run it on the database's machine), and the time
spent inside each consumer (its handler or batch handler, summed). Issue 21: the drill's
workers are the chain's bottleneck; this is their work, alone and repeatable.

`--outbound` (implies `--notify`) adds the workers' outbound calls, timed apart after the drain:
the drill's notification targets and carrier are real processes on 127.0.0.1 (the SMS simulator,
a JSON webhook sink, the carrier simulator), the sender's rounds send every planned message and
the carrier loop asks a waybill for every shipment; reported as CPU per order of this process and
of PostgreSQL, with the calls each platform received.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.cpu import _TICK, _stat
from bench.server import Process, free_port, scratch_database, stop_group

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SKUS = [f"CON-BENCH-{n}" for n in range(8)]


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _backend_pids(db: Any) -> list[int]:
    from sqlalchemy import text

    async with db.transaction() as session:
        rows = await session.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return [int(r[0]) for r in rows.all()]


def _ticks(pids: list[int]) -> dict[int, int]:
    found = {}
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            found[pid] = stat[2]
    return found


async def _seed(db: Any, orders: int, paid: float) -> None:
    from ordertally.catalog import service as catalog_service
    from ordertally.inventory import service as inventory_service
    from ordertally.orders import service as orders_service
    from ordertally.orders.schemas import OrderCreate
    from ordertally.orders.service import Actor
    from ordertally.orders.state_machine import ActorKind

    async with db.transaction() as session:
        for code, city in (("WH-SH", "上海市"), ("WH-GZ", "广州市")):
            await inventory_service.create_warehouse(
                session,
                {
                    "code": code,
                    "name": code,
                    "province": city,
                    "city": city,
                    "latitude": None,
                    "longitude": None,
                    "priority": 1,
                    "cost_factor": 1.0,
                    "active": True,
                },
            )
        await catalog_service.add_skus(
            session, [{"code": c, "name": f"商品{c}", "name_en": c} for c in SKUS], "bench"
        )
        for code in ("WH-SH", "WH-GZ"):
            for sku in SKUS:
                await inventory_service.record_movement(
                    session,
                    warehouse_code=code,
                    sku=sku,
                    kind="receipt",
                    quantity=10_000_000,
                    reason="consumers bench",
                    actor="bench",
                )
    api = Actor(ActorKind.API, "bench")
    callback = Actor(ActorKind.PAYMENT_CALLBACK, "bench")
    paid_every = max(1, round(1 / paid)) if paid > 0 else 0
    for start in range(0, orders, 200):
        async with db.transaction() as session:
            for n in range(start, min(start + 200, orders)):
                phone = f"139{n % 5000:08d}"  # returning buyers: customers link to profiles
                cmd = OrderCreate.model_validate(
                    {
                        "channel": "bench",
                        "external_id": f"con-{n}",
                        "customer": {"name": "王五", "phone": phone},
                        "shipping_address": {
                            "name": "王五",
                            "phone": phone,
                            "province": "上海市",
                            "city": "上海市",
                            "district": "浦东新区",
                            "line1": f"世纪大道{n % 300}号",
                        },
                        "lines": [
                            {"sku": SKUS[n % len(SKUS)], "quantity": 1, "unit_price": "39.90"},
                            {"sku": SKUS[(n + 3) % len(SKUS)], "quantity": 2, "unit_price": "9.90"},
                        ],
                        "currency": "CNY",
                    }
                )
                snap, _ = await orders_service.create_order(
                    session, cmd, api, check_fingerprint=False
                )
                if paid_every and n % paid_every == 0:
                    await orders_service.transition(
                        session, snap.order.order_no, "payment_succeeded", callback
                    )


def _timed_consumers() -> dict[str, float]:
    """Wrap every registered consumer so its handlers' time is summed by name."""
    from ordertally.events import registry

    spent: dict[str, float] = defaultdict(float)

    def wrap(name: str, fn: Any) -> Any:
        async def timed(*args: Any) -> None:
            t0 = time.perf_counter()
            try:
                await fn(*args)
            finally:
                spent[name] += time.perf_counter() - t0

        return timed

    for name, c in list(registry.CONSUMERS.items()):
        registry.CONSUMERS[name] = dataclasses.replace(
            c,
            handler=wrap(name, c.handler),
            batch_handler=None if c.batch_handler is None else wrap(name, c.batch_handler),
        )
    return spent


async def _drain(db: Any, orders: int) -> dict[str, Any]:
    from sqlalchemy import text

    from ordertally.core.settings import get_settings
    from ordertally.events.dispatcher import drain

    spent = _timed_consumers()
    pids = await _backend_pids(db)
    before_ticks = _ticks(pids)
    t0, cpu0 = time.perf_counter(), _process_cpu()
    events = await drain(db, get_settings())
    seconds, cpu = time.perf_counter() - t0, _process_cpu() - cpu0
    after = _ticks(await _backend_pids(db))
    backend = sum(t - before_ticks.get(pid, 0) for pid, t in after.items()) / _TICK
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT event_type, count(*) FROM outbox GROUP BY 1"))
        by_type = {str(kind): int(count) for kind, count in rows.all()}
        pending = await session.scalar(text("SELECT count(*) FROM outbox WHERE status <> 'done'"))
    return {
        "orders": orders,
        "events": events,
        "not_done": pending,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "orders_per_s": round(orders / seconds, 1),
        "process_cpu_s": round(cpu, 2),
        "backend_cpu_s": round(backend, 2),
        "cpu_ms_per_order": round(1000 * (cpu + backend) / orders, 2),
        "consumer_s": {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
        "event_types": dict(sorted(Counter(by_type).items())),
        "load": os.getloadavg()[0],
    }


def _keep_only(names: list[str]) -> None:
    """Unregister every consumer but these (a consumer measured alone on the same backlog)."""
    from ordertally.events import registry

    unknown = set(names) - set(registry.CONSUMERS)
    if unknown:
        raise SystemExit(f"no such consumer: {', '.join(sorted(unknown))}")
    for name in list(registry.CONSUMERS):
        if name not in names:
            del registry.CONSUMERS[name]


def _notify_env() -> dict[str, str]:
    """The drill's notification targets (an operations webhook, the buyer SMS): the drain plans
    their messages; nothing is sent (the sender is a job, not a consumer)."""
    from bench.drill.__main__ import SMS_CODES, SMS_KEY_ID, SMS_SECRET

    ops = [{"name": "ops", "url": "json://127.0.0.1:9/hook", "events": ["OrderPaid"]}]
    return {
        "ORDERTALLY_NOTIFY_OPS_TARGETS": json.dumps(ops),
        "ORDERTALLY_NOTIFY_SMS_PROVIDER": "aliyun",
        "ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_ID": SMS_KEY_ID,
        "ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_SECRET": SMS_SECRET,
        "ORDERTALLY_ALIYUN_SMS_SIGN_NAME": "茶叶小铺",
        "ORDERTALLY_ALIYUN_SMS_ENDPOINT": "http://127.0.0.1:9",
        "ORDERTALLY_ALIYUN_SMS_TEMPLATE_CODES": json.dumps(SMS_CODES),
    }


CARRIER = {"key": "bench-key", "customer": "BENCHCUSTOMER", "secret": "bench-secret"}


def _outbound_env(ports: dict[str, int]) -> dict[str, str]:
    """The drill's targets (ops webhook on OrderPaid and ShipmentShipped, the buyer SMS) and
    Kuaidi100, each pointed at its process on 127.0.0.1."""
    ops = [
        {
            "name": "ops",
            "url": f"json://127.0.0.1:{ports['sink']}/hook",
            "events": ["OrderPaid", "ShipmentShipped"],
        }
    ]
    return {
        **_notify_env(),
        "ORDERTALLY_NOTIFY_OPS_TARGETS": json.dumps(ops),
        "ORDERTALLY_ALIYUN_SMS_ENDPOINT": f"http://127.0.0.1:{ports['sms']}",
        "ORDERTALLY_NOTIFY_SEND_BATCH": "1000",  # as the drill
        "ORDERTALLY_KUAIDI100_API_BASE": f"http://127.0.0.1:{ports['carrier']}",
        "ORDERTALLY_KUAIDI100_CUSTOMER": CARRIER["customer"],
        "ORDERTALLY_KUAIDI100_KEY": CARRIER["key"],
        "ORDERTALLY_KUAIDI100_SECRET": CARRIER["secret"],
        "ORDERTALLY_KUAIDI100_SALT": "bench-salt",
    }


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def _wait_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def _outbound(db: Any, orders: int, ports: dict[str, int]) -> dict[str, Any]:
    """Send everything the drain planned and ask a waybill for every shipment, timed."""
    from ordertally.core import outbound
    from ordertally.core.settings import get_settings
    from ordertally.fulfillment.carrier_loop import carrier_work
    from ordertally.notify import service as notify_service

    settings = get_settings()
    pids = await _backend_pids(db)
    before_ticks = _ticks(pids)
    t0, cpu0 = time.perf_counter(), _process_cpu()
    sent = {"claimed": 0, "sent": 0, "retried": 0, "dead": 0}
    while True:
        result = await notify_service.send_due(db, settings=settings)
        if not result.claimed:
            break
        for key in sent:
            sent[key] += getattr(result, key)
    waybills: Counter[str] = Counter()
    while True:
        done = (await carrier_work(db)).get("waybills") or {}
        if not done:
            break
        waybills.update(done)
    seconds, cpu = time.perf_counter() - t0, _process_cpu() - cpu0
    after = _ticks(await _backend_pids(db))
    backend = sum(t - before_ticks.get(pid, 0) for pid, t in after.items()) / _TICK
    await outbound.close_all()
    sms = _get_json(f"http://127.0.0.1:{ports['sms']}/sim/messages")
    carrier = _get_json(f"http://127.0.0.1:{ports['carrier']}/_sim/status")
    return {
        "seconds": round(seconds, 2),
        "process_cpu_s": round(cpu, 2),
        "backend_cpu_s": round(backend, 2),
        "cpu_ms_per_order": round(1000 * (cpu + backend) / orders, 2),
        "process_cpu_ms_per_order": round(1000 * cpu / orders, 2),
        "notifications": sent,
        "waybills": dict(waybills),
        "calls": {
            "sms": sms["requests"],
            "sms_messages": len(sms["messages"]),
            "carrier": carrier["requests"],
        },
    }


def _one_run(
    pg_url: str,
    orders: int,
    paid: float,
    batch: int,
    only: list[str] | None = None,
    notify: bool = False,
    outbound: bool = False,
) -> dict[str, Any]:
    from bench.drill.__main__ import SMS_KEY_ID, SMS_SECRET
    from ordertally.core.crypto import reset_cipher
    from ordertally.core.db import Database
    from ordertally.core.settings import get_settings, reset_settings
    from ordertally.domains import register_all

    ports = {"sms": free_port(), "sink": free_port(), "carrier": free_port()}
    env = {"ORDERTALLY_WORKER_BATCH_SIZE": str(batch), **(_notify_env() if notify else {})}
    if outbound:
        env.update(_outbound_env(ports))
    with scratch_database("pg", pg_url, env) as sdb:
        os.environ.update(sdb.env)
        reset_settings()
        reset_cipher()
        register_all(get_settings())
        if only:
            _keep_only(only)
        helpers: list[Process] = []
        sink = None
        if outbound:
            helpers = [
                Process(
                    sdb,
                    "smssim",
                    "--port",
                    str(ports["sms"]),
                    "--access-key-id",
                    SMS_KEY_ID,
                    "--access-key-secret",
                    SMS_SECRET,
                    name="smssim",
                ).start(),
                Process(
                    sdb,
                    "carriersim",
                    "--port",
                    str(ports["carrier"]),
                    *("--key", CARRIER["key"], "--customer", CARRIER["customer"]),
                    *("--secret", CARRIER["secret"]),
                    name="carriersim",
                ).start(),
            ]
            sink = subprocess.Popen(
                [sys.executable, "-m", "bench.outbound", "--serve", str(ports["sink"])],
                env=sdb.env,
                start_new_session=True,
            )
            _wait_up(f"http://127.0.0.1:{ports['sms']}/sim/messages")
            _wait_up(f"http://127.0.0.1:{ports['carrier']}/_sim/status")

        async def run() -> dict[str, Any]:
            db = Database(sdb.url)
            try:
                await _seed(db, orders, paid)
                figures = await _drain(db, orders)
                if outbound:
                    figures["outbound"] = await _outbound(db, orders, ports)
                return figures
            finally:
                await db.dispose()

        try:
            return asyncio.run(run())
        finally:
            for helper in helpers:
                helper.stop()
            if sink is not None:
                stop_group(sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--paid", type=float, default=1.0, help="share of orders paid (0-1)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="the worker's batch size")
    parser.add_argument("--url", default=os.environ.get("ORDERTALLY_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--out", default="bench/results/consumers.json")
    parser.add_argument(
        "--only",
        action="append",
        metavar="CONSUMER",
        help="run only this consumer (repeatable), e.g. customers.link_order: its events/s alone",
    )
    parser.add_argument(
        "--notify", action="store_true", help="plan the drill's notifications (webhook, SMS)"
    )
    parser.add_argument(
        "--outbound",
        action="store_true",
        help="then send them and ask the waybills, at the simulators (timed apart)",
    )
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        figures = _one_run(
            args.url,
            args.orders,
            args.paid,
            args.batch,
            args.only,
            args.notify or args.outbound,
            args.outbound,
        )
        print(json.dumps({"run": n + 1, **figures}, ensure_ascii=False))
        runs.append(figures)
    summary = {
        key: statistics.median(r[key] for r in runs)
        for key in ("seconds", "events_per_s", "orders_per_s", "cpu_ms_per_order")
    }
    if args.outbound:
        summary["outbound_cpu_ms_per_order"] = statistics.median(
            r["outbound"]["cpu_ms_per_order"] for r in runs
        )
    print("median", json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "median": summary}))


if __name__ == "__main__":
    main()
