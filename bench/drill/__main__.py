"""`python -m bench.drill` (`make drill`): the promotion replayed through the whole chain.

Everything on 127.0.0.1: a scratch PostgreSQL database, `ordertally serve --workers 2
--no-worker` (2 API processes), 2 `ordertally worker` processes with the broker relay on
(RabbitMQ), the payment simulator (`ordertally paysim serve`: signed callbacks, with duplicates,
drops only the compensation job finds, forgeries and stale replays), the carrier simulator
(`ordertally carriersim`: waybills, signed tracking pushes), the SMS simulator and a webhook
receiver as notification sinks. The load (bench/drill/scenario.py) creates orders over the API
at the promotion's rate times --speed, pays them at the simulator, cancels some, pays some
after they were cancelled, and ships what has a waybill; channel orders arrive as Shopify
webhooks, Pinduoduo pulls (the workers' scheduled sync against the channel simulator) and a
Taobao file uploaded through the API (twice). Then the chain is drained, the
compensation job is run once for the dropped callbacks, and the end state is checked
(bench/drill/checks.py) with `ordertally doctor`. Any anomaly: exit status 1.

The platform's timeouts are shortened through settings so a short drill completes (see
DRILL_SETTINGS); the report lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import cpu, profile
from bench.drill import checks, report
from bench.drill.sampler import Sampler
from bench.drill.scenario import Scenario, Targets, promotion_rate
from bench.server import (
    Process,
    Server,
    asyncpg_dsn,
    free_port,
    ordertally_command,
    scratch_database,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PUBLISHED = ROOT / "docs" / "drill"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SMS_KEY_ID = "drill-key"
SMS_SECRET = "drill-secret"
SMS_CODES = {
    "OrderPaid": "SMS_900001",
    "ShipmentShipped": "SMS_900002",
    "ShipmentDelivered": "SMS_900003",
    "ShipmentTrackingException": "SMS_900004",
    "NotificationTest": "SMS_900009",
}

# The platform's timeouts, shortened so that a drill of a minute sees every path complete.
DRILL_SETTINGS = {
    "ORDERTALLY_PAYMENT_TIMEOUT_SECONDS": "60",  # default 1800 (the minimum allowed is 60)
    "ORDERTALLY_PAYMENT_QUERY_AFTER_SECONDS": "10",  # default 300
    "ORDERTALLY_PAYMENT_QUERY_EVERY_SECONDS": "10",  # default 900
    "ORDERTALLY_PAYMENT_QUERY_BATCH": "1000",  # default 100
    "ORDERTALLY_WORKER_POLL_SECONDS": "0.05",  # default 0.5
    "ORDERTALLY_WORKER_BATCH_SIZE": "200",  # default 100
    "ORDERTALLY_NOTIFY_BACKOFF_BASE_SECONDS": "1",  # default 30
    "ORDERTALLY_NOTIFY_BACKOFF_MAX_SECONDS": "5",  # default 3600
    # Each process may open twice its pool (pool + overflow): 4 x 2 x 8 = 64 connections, so
    # the drill stays under PostgreSQL's default max_connections (100) with room for others.
    "ORDERTALLY_DB_POOL_SIZE": "8",  # default 10
    # The sender runs every 5 s; 50 a run (the default) is 10 messages/s, less than the
    # promotion's x1 makes (about 4 per order): the backlog would grow without end.
    "ORDERTALLY_NOTIFY_SEND_BATCH": "1000",  # default 50
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="x1 = 120,000 orders in 30 min (66.7/s)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="seconds allowed to drain after it"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--api-processes", type=int, default=2, help="`ordertally serve --workers N`"
    )
    parser.add_argument(
        "--worker-processes", type=int, default=2, help="`ordertally worker` processes"
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("ORDERTALLY_TEST_AMQP_URL") or DEFAULT_AMQP_URL
    )
    parser.add_argument(
        "--push-every", type=float, default=0.5, help="seconds between a waybill's tracking steps"
    )
    parser.add_argument("--duplicate-rate", type=float, default=0.05)
    parser.add_argument("--drop-rate", type=float, default=0.02)
    parser.add_argument("--forge-rate", type=float, default=0.02)
    parser.add_argument("--stale-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument("--publish", action="store_true", help="also write it into docs/drill/")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the API and worker processes with py-spy during the load (where CPU goes)",
    )
    args = parser.parse_args(argv)
    if args.speed <= 0 or args.duration <= 0:
        parser.error("--speed and --duration must be positive")
    if args.api_processes < 1 or args.worker_processes < 1:
        parser.error("--api-processes and --worker-processes must be at least 1")
    return args


_T0 = time.perf_counter()


def _say(text: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {text}", flush=True)


def _wait_port(port: int, seconds: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _receiver() -> Any:
    """A JSON webhook receiver (the operations channel), counting what it took."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ordertally.simkit.server import BackgroundServer

    received = {"count": 0}

    async def hook(request: Request) -> Response:
        await request.body()
        received["count"] += 1
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    server = BackgroundServer(lambda: app, name="drill-receiver", lifespan="off")
    return server, received


def environment(args: argparse.Namespace, ports: dict[str, int], keys: Any) -> dict[str, str]:
    """Every setting the processes under test get."""
    api = f"http://127.0.0.1:{ports['api']}"
    return {
        **keys.settings_env(),
        **DRILL_SETTINGS,
        "ORDERTALLY_PUBLIC_BASE_URL": api,
        "ORDERTALLY_PAYMENT_NOTIFY_BASE_URL": api,
        "ORDERTALLY_BROKER_URL": args.broker_url,
        "ORDERTALLY_BROKER_EXCHANGE": f"ordertally.drill.{secrets.token_hex(4)}",
        "ORDERTALLY_KUAIDI100_API_BASE": f"http://127.0.0.1:{ports['carrier']}",
        "ORDERTALLY_KUAIDI100_CUSTOMER": "DRILLCUSTOMER",
        "ORDERTALLY_KUAIDI100_KEY": "drill-key",
        "ORDERTALLY_KUAIDI100_SECRET": "drill-secret",
        "ORDERTALLY_KUAIDI100_SALT": "drill-salt",
        "ORDERTALLY_NOTIFY_OPS_TARGETS": json.dumps(
            [
                {
                    "name": "drill-ops",
                    "url": f"json://127.0.0.1:{ports['receiver']}/hook",
                    "events": ["OrderPaid", "ShipmentShipped"],
                }
            ]
        ),
        "ORDERTALLY_NOTIFY_SMS_PROVIDER": "aliyun",
        "ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_ID": SMS_KEY_ID,
        "ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_SECRET": SMS_SECRET,
        "ORDERTALLY_ALIYUN_SMS_SIGN_NAME": "茶叶小铺",
        "ORDERTALLY_ALIYUN_SMS_ENDPOINT": f"http://127.0.0.1:{ports['sms']}",
        "ORDERTALLY_ALIYUN_SMS_TEMPLATE_CODES": json.dumps(SMS_CODES),
    }


def channel_accounts(channelsim_port: int) -> list[dict[str, Any]]:
    """The Pinduoduo shop pulled from the channel simulator (every 10 s at most; the worker's
    job looks every 30 s), its receivers decrypted by the platform's own decrypt API, and the
    Taobao shop whose export the operator uploads."""
    return [
        {
            "code": "drill_pdd",
            "platform": "pinduoduo",
            "name": "演练拼多多店",
            "config": {
                "base_url": f"http://127.0.0.1:{channelsim_port}",
                "client_id": "sim-pdd-client",
                "decrypt": "pop",
            },
            "credentials": {"client_secret": "sim-pdd-secret", "access_token": "drill"},
            "start_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
            "sync_interval_seconds": 10,
            # A pull re-reads the minute before its cursor: an order the drill stamped just
            # before the last window's end is read on the next run (ingest dedupes the rest).
            "overlap_seconds": 60,
            "rate_limit_per_second": 100,
            "rate_limit_burst": 100,
        },
        {"code": "drill_taobao", "platform": "taobao", "name": "演练淘宝店"},
    ]


def stage_summary(
    samples: list[tuple[float, float]], window: float, series: list[dict[str, float]]
) -> dict[str, Any]:
    """Count, throughput over the load window, p50/p99/max in ms, and the per-second series."""
    ordered = sorted(latency for _, latency in samples)
    in_window = sum(1 for ended, _ in samples if 0 <= ended <= window)
    return {
        "count": len(samples),
        "per_s": round(in_window / window, 1),
        "p50_ms": round(1000 * checks.percentile(ordered, 0.5), 2),
        "p99_ms": round(1000 * checks.percentile(ordered, 0.99), 2),
        "max_ms": round(1000 * (ordered[-1] if ordered else 0.0), 2),
        "series": series,
    }


async def compensate(db_env: dict[str, str], url: str) -> dict[str, int]:
    """Run the compensation job once as the worker would, with the clock a query interval
    ahead so every attempt still without a result is asked now (the dropped callbacks)."""
    os.environ.update(db_env)
    from ordertally.core.crypto import reset_cipher
    from ordertally.core.db import Database
    from ordertally.core.settings import get_settings, reset_settings
    from ordertally.domains import register_all
    from ordertally.payments import compensation

    reset_settings()
    reset_cipher()
    settings = get_settings()
    register_all(settings)
    db = Database(url)
    try:
        ahead = datetime.now(UTC) + timedelta(seconds=settings.payment_query_after_seconds + 1)
        total: dict[str, int] = {}
        while True:
            done = await compensation.query_due(db, ahead, settings.payment_query_batch)
            for key, value in done.items():
                total[key] = total.get(key, 0) + int(value)
            if not any(done.values()):
                return total
    finally:
        await db.dispose()


Profiles = list[tuple[str, subprocess.Popen[bytes], Path]]


def start_profiles(args: argparse.Namespace, server: Server, workers: list[Process]) -> Profiles:
    """With --profile: py-spy on every API serving process and every worker for the load."""
    if not args.profile:
        return []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    targets = [("api", pid) for pid in cpu.workers(server.pid)]
    targets += [(w.name, w.pid) for w in workers]
    out = []
    for name, pid in targets:
        raw = args.out / f"drill-profile-{stamp}-{name}-{pid}.txt"
        out.append((name, profile.start(pid, args.duration, raw, subprocesses=False), raw))
    return out


def finish_profiles(profiles: Profiles) -> dict[str, Any]:
    """Each process kind's samples merged and summarised (bench.profile's report)."""
    merged: dict[str, list[Path]] = {}
    for name, sampler, raw in profiles:
        try:
            sampler.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.communicate()
        merged.setdefault("api" if name == "api" else "worker", []).append(raw)
    found: dict[str, Any] = {}
    for kind, raws in merged.items():
        target = raws[0].with_name(raws[0].name.rsplit("-", 2)[0] + f"-{kind}.txt")
        with target.open("w") as out:
            for raw in raws:
                if raw.exists():
                    out.write(raw.read_text(errors="replace"))
                    raw.unlink()
        if target.stat().st_size:
            summary_name = target.stem.replace("profile", "profile-summary") + ".txt"
            summary_path = target.with_name(summary_name)
            summary_path.write_text(profile.render(profile.analyse(target)))
            found[kind] = summary_path.name  # beside the report (no machine path in it)
            _say(f"profile of {kind}: {summary_path}")
    return found


async def backend_sessions(pool: Any) -> int:
    """Sessions PostgreSQL has established to this database so far (every connection opened)."""
    async with pool.acquire() as conn:
        value = await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
    return int(value or 0)


async def drive(
    args: argparse.Namespace,
    db: Any,
    server: Server,
    workers: list[Process],
    sims: list[Process],
    ports: dict[str, int],
) -> dict[str, Any]:
    """The load, the sampling, the drain and the checks; the report's figures."""
    import asyncpg
    import httpx

    pool = await asyncpg.create_pool(asyncpg_dsn(db.url), min_size=1, max_size=3)
    scenario = Scenario(
        Targets(ports["api"], db.api_key, ports["paysim"], ports["channelsim"]),
        args.speed,
        args.duration,
        args.seed,
        f"drill-{secrets.token_hex(4)}",
    )
    processes = {"api": server.pid, **{w.name: w.pid for w in workers}}
    processes.update({p.name: p.pid for p in sims})
    sampler = Sampler(pool, processes, db.pg_name or "", time.perf_counter())
    sampling = asyncio.ensure_future(sampler.run())
    waiting = asyncio.ensure_future(sampler.run_waits())
    shipping = asyncio.Event()

    async def warehouse() -> None:
        while not shipping.is_set():
            async with pool.acquire() as conn:
                ready = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT id FROM shipment WHERE status = 'ready' ORDER BY id LIMIT 500"
                    )
                ]
            await scenario.ship(ready)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shipping.wait(), 1.0)

    shipper = asyncio.ensure_future(warehouse())
    sessions_before = await backend_sessions(pool)
    sampler.start = time.perf_counter()
    profiles = start_profiles(args, server, workers)
    _say(f"load: {scenario.rate:.1f} orders/s for {args.duration:g} s")
    tally = await scenario.run()
    load_end = time.perf_counter()
    profiled = await asyncio.to_thread(finish_profiles, profiles)
    sampler.stop_waits()
    await waiting
    # The API's own latency over the load, to set beside the clients' (where a request waits).
    async with httpx.AsyncClient(timeout=30) as client:
        metrics = await client.get(f"http://127.0.0.1:{ports['api']}/metrics")
    server_view = checks.server_histograms(metrics.text if metrics.status_code == 200 else "")
    start_epoch = time.time() - (load_end - tally.start)
    _say(f"load done: {tally.scheduled} orders scheduled; draining")

    async def settled() -> bool:
        lag = await sampler.lag_now()
        if any(
            lag[k]
            for k in (
                "outbox_pending",
                "payment_inbox",
                "channel_webhooks",
                "shipments_without_waybill",
                "notify_waiting",
            )
        ):
            return False
        async with pool.acquire() as conn:
            unpaid = await conn.fetchval(
                "SELECT count(*) FROM sales_order WHERE status = 'pending_payment'"
            )
            ready = await conn.fetchval("SELECT count(*) FROM shipment WHERE status = 'ready'")
            unplanned = await conn.fetchval(
                "SELECT count(*) FROM sales_order o WHERE o.status = 'paid'"
                " AND NOT EXISTS (SELECT 1 FROM shipment s WHERE s.order_id = o.id)"
            )
            pulled_now = await conn.fetchval(
                "SELECT count(*) FROM sales_order WHERE external_id = ANY($1::text[])",
                list(tally.pdd),
            )
            importing = await conn.fetchval(
                "SELECT count(*) FROM channel_file_import WHERE state IN ('queued', 'running')"
            )
        if int(unpaid) or int(ready) or int(unplanned) or int(importing) or scenario.tasks:
            return False
        if int(pulled_now) < len(tally.pdd):
            return False
        async with httpx.AsyncClient(timeout=30) as client:
            waybills = (await client.get(f"{carrier}/_sim/waybills")).json()
            if not all(w["done"] for w in waybills):
                return False
            # Pushes the carrier held back to send out of order go now (the last step of a
            # waybill has no next one to wait for).
            await client.post(f"{carrier}/_sim/flush")
        return True

    carrier = f"http://127.0.0.1:{ports['carrier']}"
    compensated: dict[str, int] = {}
    deadline = time.perf_counter() + args.drain_timeout
    quiet_since: float | None = None
    while time.perf_counter() < deadline:
        lag = await sampler.lag_now()
        if not compensated and not lag["payment_inbox"]:
            # Every callback sent so far is applied: an attempt still without a result had its
            # callback dropped (or it is still in the simulator's retry schedule, which the
            # query makes moot).
            compensated = await compensate(db.env, db.url) or {"queried": 0}
            _say(f"compensation: {compensated}")
            continue
        if compensated and await settled():
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since >= 2.0:
                break
        else:
            quiet_since = None
        await asyncio.sleep(0.5)
    drain_seconds = time.perf_counter() - load_end
    new_sessions = await backend_sessions(pool) - sessions_before
    _say(f"connections opened to PostgreSQL during load and drain: {new_sessions}")
    _say(f"drained in {drain_seconds:.1f} s; checking")
    shipping.set()
    await shipper
    sampler.stop()
    await sampling

    async with httpx.AsyncClient(timeout=60) as client:
        deliveries = (
            await client.get(
                f"http://127.0.0.1:{ports['paysim']}/sim/deliveries", params={"limit": 50_000}
            )
        ).json()
        waybills = (await client.get(f"{carrier}/_sim/waybills")).json()
        pushes = (await client.get(f"{carrier}/_sim/deliveries", params={"limit": 100_000})).json()
    async with pool.acquire() as conn:
        from_shopify = {
            r["external_id"]: r["order_no"]
            for r in await conn.fetch(
                "SELECT external_id, order_no FROM sales_order WHERE external_id = ANY($1::text[])",
                sorted(tally.shopify),
            )
        }
        pulled = await conn.fetch(
            "SELECT external_id, order_no, extract(epoch FROM created_at) AS created"
            " FROM sales_order WHERE external_id = ANY($1::text[])",
            sorted(tally.pdd),
        )
        from_file = {
            r["external_id"]: r["order_no"]
            for r in await conn.fetch(
                "SELECT external_id, order_no FROM sales_order WHERE external_id = ANY($1::text[])",
                [*tally.import_good, *tally.import_bad],
            )
        }
    from_pdd = {r["external_id"]: r["order_no"] for r in pulled}
    for order_no in [*from_shopify.values(), *from_pdd.values()]:
        tally.fates[order_no] = "paid"
    created = len(tally.fates)  # the scheduled ticks' orders (the file's are on top)
    for order_no in from_file.values():
        tally.fates[order_no] = "paid"
    results = await checks.end_state(pool, tally.fates, tally.trades, tally.retried, deliveries)
    missing = sorted(tally.shopify - set(from_shopify))
    results.append(
        checks.check(
            "shopify_orders_ingested_once",
            not missing,
            {"sent": len(tally.shopify), "orders": len(from_shopify), "missing": missing[:10]},
        )
    )
    results.append(checks.pdd_pulled_once(tally.pdd, [r["external_id"] for r in pulled]))
    async with httpx.AsyncClient(timeout=30) as client:
        rejected = await checks.rejected_report(client, ports["api"], db.api_key, tally.imports)
    results.append(
        checks.file_import(tally.imports, tally.import_good, tally.import_bad, from_file, rejected)
    )
    results.append(await checks.tracking(pool, waybills, pushes))
    results.append(checks.check("compensation_ran", bool(compensated), compensated))
    late = await checks.late_allocations(pool)
    if late:
        _say(f"paid orders allocated > 30 s after payment: {json.dumps(late)[:600]}")
    results.append(
        checks.check(
            "http_errors",
            not tally.errors,
            {"by_stage": tally.errors, "samples": tally.error_samples[:10]},
        )
    )
    results.append(
        checks.check(
            "processes_alive",
            all(p.alive() for p in [*workers, *sims]) and server.process is not None,
            {p.name: p.alive() for p in [*workers, *sims]},
        )
    )
    results.append(
        checks.check(
            "drained_in_time",
            drain_seconds < args.drain_timeout,
            round(drain_seconds, 1),
        )
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [*ordertally_command(), "doctor", "--json"],
        env=db.env,
        cwd=db.data_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    doctor = json.loads(done.stdout or "{}")
    _say("doctor done")
    results.append(
        checks.check(
            "doctor_clean",
            done.returncode == 0 and doctor.get("ok") is True,
            [c for c in doctor.get("checks", []) if not c.get("ok")] or "all ok",
        )
    )
    server_side = await checks.server_stages(pool, start_epoch)
    storage = await checks.storage(pool)
    await pool.close()
    window = args.duration
    stages: dict[str, Any] = {}
    for name, stage in tally.stages.items():
        stages[name] = stage_summary(stage.samples, window, checks.per_second(stage.samples))
    # A Pinduoduo order added at the simulator until the scheduled pull created it (the sync
    # runs every 30 s: most of this is the wait for the next run).
    server_side["pdd_pull"] = [
        (float(r["created"]) - start_epoch, float(r["created"]) - tally.pdd[r["external_id"]])
        for r in pulled
    ]
    for name, samples in server_side.items():
        stages[name] = stage_summary(samples, window, checks.per_second(samples))
    cpu_window = [p for p in sampler.cpu if p["t"] <= window]
    names = sorted({k for p in cpu_window for k in p if k != "t"})
    cpu_mean = {
        n: round(sum(p.get(n, 0.0) for p in cpu_window) / max(len(cpu_window), 1), 1) for n in names
    }
    return {
        "stages": stages,
        "checks": results,
        "lag": sampler.lag,
        "cpu": sampler.cpu,
        "cpu_mean_percent": cpu_mean,
        "db_waits": sampler.mean_waits(),
        "db_blockers": sampler.mean_blockers(),
        "drain_seconds": round(drain_seconds, 1),
        "profiles": profiled,
        "connections_opened": new_sessions,
        "api_server_view": server_view,
        "orders": {
            "scheduled": tally.scheduled,
            "created": created,
            "from_file": len(from_file),
            "by_source": {
                "api": created - len(from_shopify) - len(from_pdd),
                "shopify": len(from_shopify),
                "pinduoduo": len(from_pdd),
                "file": len(from_file),
            },
        },
        "storage": storage,
        "late_allocations": late,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set everything up, drive, tear everything down; the report document."""
    import tempfile

    from ordertally.payments.simulator import keys as sim_keys

    ports = {name: free_port() for name in ("paysim", "carrier", "sms", "receiver", "channelsim")}
    keys_dir = Path(tempfile.mkdtemp(prefix="ordertally-drill-keys-"))
    keys = sim_keys.generate(keys_dir, f"http://127.0.0.1:{ports['paysim']}")
    receiver, received = _receiver()
    receiver.port = ports["receiver"]
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with scratch_database("pg", args.pg_url, {}) as db:
        _say("scratch database migrated")
        server = Server(db, workers=args.api_processes)
        ports["api"] = server.port
        db.env.update(environment(args, ports, keys))
        sims = [
            Process(
                db, "paysim", "serve", "--keys", str(keys_dir), "--port", str(ports["paysim"]),
                name="paysim",
            ),
            Process(
                db, "carriersim", "--port", str(ports["carrier"]),
                "--push-every", str(args.push_every),
                "--key", "drill-key", "--customer", "DRILLCUSTOMER", "--secret", "drill-secret",
                "--seed", str(args.seed), name="carriersim",
            ),
            Process(
                db, "channelsim", "serve", "--port", str(ports["channelsim"]),
                "--time-scale", "1000", name="channelsim",
            ),
            Process(
                db, "smssim", "--port", str(ports["sms"]), "--access-key-id", SMS_KEY_ID,
                "--access-key-secret", SMS_SECRET, name="smssim",
            ),
        ]  # fmt: skip
        workers = [
            Process(db, "worker", name=f"worker{i + 1}") for i in range(args.worker_processes)
        ]
        receiver.start()
        try:
            for sim in sims:
                sim.start()
            for name in ("paysim", "carrier", "sms", "channelsim"):
                _wait_port(ports[name])
            behaviour = {
                "duplicate_rate": args.duplicate_rate,
                "drop_rate": args.drop_rate,
                "forge_rate": args.forge_rate,
                "stale_rate": args.stale_rate,
                "seed": args.seed,
            }
            import httpx

            httpx.post(
                f"http://127.0.0.1:{ports['paysim']}/sim/behaviour", json=behaviour
            ).raise_for_status()
            httpx.post(
                f"http://127.0.0.1:{ports['carrier']}/_sim/mode",
                json={"duplicate_rate": args.duplicate_rate, "out_of_order_rate": 0.05},
            ).raise_for_status()
            _say("simulators up")
            server.start()
            _say("api up")
            server.seed_stock(16)
            shop_secret = secrets.token_urlsafe(24)
            status, answer = server.request(
                "POST",
                "/api/v1/channels/accounts",
                {
                    "code": "drill_shopify",
                    "platform": "shopify",
                    "name": "演练店铺",
                    "credentials": {"webhook_secret": shop_secret},
                },
            )
            if status != 201:
                raise RuntimeError(f"creating the Shopify account answered {status}: {answer}")
            webhook = f"http://127.0.0.1:{ports['api']}/callbacks/channels/shopify/drill_shopify"
            httpx.post(
                f"http://127.0.0.1:{ports['channelsim']}/sim/shopify/target",
                json={"url": webhook, "secret": shop_secret},
            ).raise_for_status()
            for account in channel_accounts(ports["channelsim"]):
                status, answer = server.request("POST", "/api/v1/channels/accounts", account)
                if status != 201:
                    raise RuntimeError(f"creating {account['code']} answered {status}: {answer}")
            for worker in workers:
                worker.start()
            _say("stock seeded, workers started")
            figures = asyncio.run(drive(args, db, server, workers, sims, ports))
        except BaseException:
            for proc in [*workers, *sims]:
                _say(f"--- {proc.name} log ---\n{proc.log_tail()}")
            _say(f"--- api log ---\n{server.log_tail()}")
            raise
        finally:
            # Stopped side by side: each may take seconds to finish its batch and disconnect.
            with ThreadPoolExecutor(max_workers=8) as stopping:
                list(stopping.map(lambda p: p.stop(), [*workers, *sims, server]))
            receiver.stop()
            _say("processes stopped")
            # The processes' logs outlive the scratch directory (for a run with anomalies).
            logs = args.out / f"drill-logs-{started_at.replace(':', '')}"
            logs.mkdir(parents=True, exist_ok=True)
            for log in db.data_dir.glob("*.log"):
                shutil.copy(log, logs / log.name)
    anomalies = [c["name"] for c in figures["checks"] if not c["ok"]]
    return {
        "started_at": started_at,
        "command": "python -m bench.drill " + " ".join(sys.argv[1:]),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "config": {
            "speed": args.speed,
            "duration": args.duration,
            "offered_per_s": round(promotion_rate(args.speed), 1),
            "api_processes": args.api_processes,
            "worker_processes": args.worker_processes,
            "broker": "RabbitMQ (FastStream relay)",
            "misbehaviour": {
                "duplicate_rate": args.duplicate_rate,
                "drop_rate": args.drop_rate,
                "forge_rate": args.forge_rate,
                "stale_rate": args.stale_rate,
            },
            "seed": args.seed,
        },
        "settings": DRILL_SETTINGS,
        "webhook_receiver_took": received["count"],
        "machine_busy_percent_after": cpu.background_load(1.0),  # 200 = both cores
        "anomalies": anomalies,
        **figures,
    }


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C: every process started is stopped and the
    # scratch database dropped.
    signal.signal(signal.SIGTERM, _terminate)
    doc = run(args)
    directories = [args.out] + ([PUBLISHED] if args.publish else [])
    for path in report.write(doc, directories):
        _say(f"wrote {path}")
    if args.publish:
        for name in doc.get("profiles", {}).values():
            shutil.copyfile(args.out / name, PUBLISHED / name)
            _say(f"wrote {PUBLISHED / name}")
    for name, s in doc["stages"].items():
        _say(
            f"  {name:<16} {s['count']:>7} done  {s['per_s']:>7.1f}/s  "
            f"p50 {s['p50_ms']:>8.2f}  p99 {s['p99_ms']:>8.2f} ms"
        )
    _say(f"  cpu % (mean): {doc['cpu_mean_percent']}")
    for c in doc["checks"]:
        _say(
            f"  {'ok     ' if c['ok'] else 'ANOMALY'} {c['name']}: {json.dumps(c['detail'])[:300]}"
        )
    if doc["anomalies"]:
        _say(f"FAILED: {len(doc['anomalies'])} anomalies: {', '.join(doc['anomalies'])}")
        return 1
    _say("clean: 0 anomalies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
