"""The notification sender against a local JSON webhook sink: `python -m bench.notify`
(`--help` for the knobs).

One run: a scratch database (PostgreSQL, or `--db sqlite`), one operations target
`json://127.0.0.1:<port>/hook` (Apprise's JSON webhook) served by a minimal keep-alive HTTP/1.1
sink in a process of its own, N messages planned for it, then sent:

- `--rate 0` (burst): all N planned at once, then the sender drains them;
- `--rate R`: planned at R a second (every 100 ms) while the sender runs, as the drill's
  workers plan them.

The sender is the worker's: with `--workers N`, N `ordertally worker` processes (their periodic
tick starts the sender); else, in this process, the sender loop (notify/sender.py) when the code
has one, or the periodic job as it was (one `send_due` round per `--tick` seconds, 5 like the
job; `--tick 0` runs rounds back to back, the old code's raw capacity). Reported: sends/s
(messages over the seconds from the first planned to the last sent), the lag from planned to
sent (p50, p99, max, from the rows' created_at and sent_at), and the CPU of the sending
process(es) and of the sink.

`--compare REV` runs the same bench with the code of git revision REV (its `src/` extracted into a
temporary directory) and with this tree's, alternately, `--runs` times each, and prints the
medians: the before/after of a change to the sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.outbound import serve_ok

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


# --- the sink -----------------------------------------------------------------------------------


def _sink(port: int, ready: Any) -> None:
    async def main() -> None:
        server = await asyncio.start_server(serve_ok, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- one run ------------------------------------------------------------------------------------


def _rows(count: int, at: Any) -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "OrderPaid",
            "order_no": f"SO{n:010d}",
            "target_kind": "json",
            "target_key": "ops:bench",
            "recipient_masked": None,
            "lang": "zh",
            "title": f"订单已支付：SO{n:010d}",
            "body": f"订单 SO{n:010d} 已于 2026-03-01 16:00 (Asia/Shanghai) 完成支付，请安排发货。",
            "sms": None,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "last_error": None,
            "provider_message_id": None,
            "created_at": at,
            "sent_at": None,
        }
        for n in range(count)
    ]


async def _plan(db: Any, count: int, *, held: bool = False) -> None:
    from datetime import timedelta

    from ordertally.core import clock
    from ordertally.notify import repository

    rows = _rows(count, clock.now())
    if held:
        for row in rows:
            row["next_attempt_at"] = clock.now() + timedelta(days=1)
    async with db.transaction() as session:
        await repository.add_planned(session, rows)


async def _release(db: Any) -> None:
    """Make every held message due now, as planned now."""
    from sqlalchemy import update

    from ordertally.core import clock
    from ordertally.notify.models import Notification

    async with db.transaction() as session:
        now = clock.now()
        await session.execute(
            update(Notification)
            .where(Notification.status == "pending")
            .values(next_attempt_at=now, created_at=now)
        )


async def _count_done(db: Any) -> int:
    from sqlalchemy import text

    async with db.transaction(write=False) as session:
        return int(
            await session.scalar(
                text("SELECT count(*) FROM notification WHERE status IN ('sent', 'dead')")
            )
            or 0
        )


async def _sender(db: Any, args: argparse.Namespace, stop: asyncio.Event) -> str:
    """Run the code's sender until `stop`; which one ran."""
    from ordertally.core.settings import get_settings
    from ordertally.notify import service

    settings = get_settings()
    try:
        from ordertally.notify import sender  # the sender loop, where the code has one
    except ImportError:
        sender = None
    if sender is not None and args.tick is None:
        while not stop.is_set():
            await sender.run(db, settings, linger_seconds=0.5)
        return "loop"
    tick = 5.0 if args.tick is None else args.tick
    while not stop.is_set():
        started = time.perf_counter()
        await service.send_due(db, settings=settings)
        if tick:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, tick - (time.perf_counter() - started))
                )
        else:
            await asyncio.sleep(0)
    return f"rounds every {tick:g} s" if tick else "rounds back to back"


async def _measure(url: str, port: int, sink_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    import ordertally
    from ordertally.core.db import Database
    from ordertally.core.settings import reset_settings
    from ordertally.notify.models import Notification

    os.environ["ORDERTALLY_NOTIFY_OPS_TARGETS"] = json.dumps(
        [{"name": "bench", "url": f"json://127.0.0.1:{port}/hook", "events": ["OrderPaid"]}]
    )
    os.environ["ORDERTALLY_NOTIFY_SEND_BATCH"] = str(args.batch)
    reset_settings()
    db = Database(url, pool_size=10)
    stop = asyncio.Event()
    # Workers start (and their first tick starts their sender loops) before anything is planned.
    workers = _start_workers(args.workers)
    if workers:
        await asyncio.sleep(args.warmup)
    try:
        if args.rate == 0:
            for start in range(0, args.count, 1000):
                await _plan(db, min(1000, args.count - start), held=bool(workers))
            if workers:  # running workers would send while the rest is planned: release at once
                await _release(db)
        cpu, sink_cpu, wall = _own_cpu(), _cpu_of(sink_pid), time.perf_counter()
        workers_cpu = sum(_cpu_of(w.pid) for w in workers)
        sending = asyncio.create_task(
            _sender(db, args, stop) if not workers else _watch(workers, stop)
        )
        if args.rate:
            planned, t0 = 0, time.perf_counter()
            while planned < args.count:
                due = min(args.count, int((time.perf_counter() - t0) * args.rate))
                if due > planned:
                    await _plan(db, due - planned)
                    planned = due
                await asyncio.sleep(0.1)
        deadline = time.perf_counter() + args.timeout
        while await _count_done(db) < args.count and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        which = await sending
        wall = time.perf_counter() - wall
        cpu, sink_cpu = _own_cpu() - cpu, _cpu_of(sink_pid) - sink_cpu
        cpu += _stop_workers(workers) - workers_cpu if workers else 0.0
        workers = []
        async with db.transaction(write=False) as session:
            rows = (
                await session.execute(
                    select(Notification.created_at, Notification.sent_at).where(
                        Notification.status == "sent"
                    )
                )
            ).all()
    finally:
        _stop_workers(workers)
        await db.dispose()
    from ordertally.core import outbound

    with contextlib.suppress(Exception):
        await outbound.close_all()
    lags = sorted((sent - created).total_seconds() * 1000 for created, sent in rows)
    first = min(created for created, _ in rows) if rows else None
    last = max(sent for _, sent in rows) if rows else None
    span = (last - first).total_seconds() if first and last else float("nan")

    def pct(p: float) -> float:
        return round(lags[min(len(lags) - 1, int(p * len(lags)))], 1) if lags else float("nan")

    return {
        "code": os.path.dirname(os.path.dirname(ordertally.__file__)),
        "sender": which,
        "sent": len(rows),
        "sends_per_s": round(len(rows) / span, 1) if span and span == span else None,
        "lag_p50_ms": pct(0.50),
        "lag_p99_ms": pct(0.99),
        "lag_max_ms": round(lags[-1], 1) if lags else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "sink_cpu_s": round(sink_cpu, 2),
    }


def _start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    """`ordertally worker` processes on the scratch database (its environment is ours)."""
    from bench.server import ordertally_command

    return [
        subprocess.Popen(
            [*ordertally_command(), "worker"],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,  # a full pipe would block the worker's logging
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]


async def _watch(workers: list[subprocess.Popen[bytes]], stop: asyncio.Event) -> str:
    await stop.wait()
    return f"{len(workers)} x `ordertally worker` (the tick starts each one's loop)"


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> float:
    """Stop the workers; the CPU seconds they used."""
    from bench.server import stop_group

    used = 0.0
    for worker in workers:
        with contextlib.suppress(OSError, ValueError, IndexError):
            used += _cpu_of(worker.pid)
        stop_group(worker)
    return used


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this process (the code on its sys.path)."""
    from bench.server import scratch_database

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    port = _free_port()
    sink = ctx.Process(target=_sink, args=(port, ready), daemon=True)
    sink.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the sink did not start")
        with scratch_database(args.db, args.pg_url, {}) as scratch:
            for key, value in scratch.env.items():
                if key.startswith("ORDERTALLY_"):
                    os.environ[key] = value
            assert sink.pid is not None
            return asyncio.run(_measure(scratch.url, port, sink.pid, args))
    finally:
        sink.terminate()
        sink.join(10)


# --- before / after -----------------------------------------------------------------------------


def _child(src: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.notify", "--one", "--db", args.db, "--pg-url", args.pg_url,
        "--count", str(args.count), "--rate", str(args.rate), "--batch", str(args.batch),
        "--timeout", str(args.timeout), "--workers", str(args.workers),
        "--warmup", str(args.warmup),
    ]  # fmt: skip
    if args.tick is not None:
        command += ["--tick", str(args.tick)]
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench run failed: {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(args: argparse.Namespace) -> None:
    """Interleaved runs of REV's code and this tree's, then the medians."""
    tree = Path(tempfile.mkdtemp(prefix="ordertally-notify-before-"))
    archive = subprocess.run(
        ["git", "archive", args.compare, "src"], cwd=ROOT, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for n in range(args.runs):
            for label, src in (("before", tree / "src"), ("after", ROOT / "src")):
                result = _child(src, args)
                runs[label].append(result)
                print(f"run {n + 1} {label}: {json.dumps(result)}", flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    for label, results in runs.items():
        keys = ("sends_per_s", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "cpu_s", "sink_cpu_s")
        medians = {k: statistics.median(r[k] for r in results if r[k] is not None) for k in keys}
        print(f"{label} ({args.compare if label == 'before' else 'this tree'}, "
              f"{results[0]['sender']}): medians {json.dumps(medians)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.notify", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--db", choices=("pg", "sqlite"), default="pg")
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    parser.add_argument("--count", type=int, default=5000, help="messages per run")
    parser.add_argument("--rate", type=float, default=0, help="planned per second (0: burst)")
    parser.add_argument("--batch", type=int, default=1000, help="ORDERTALLY_NOTIFY_SEND_BATCH")
    parser.add_argument(
        "--tick", type=float, default=None,
        help="send one round per TICK s (the old job; 0 = back to back) instead of the loop",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for all")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (--compare)")
    parser.add_argument("--compare", metavar="REV", help="before = REV's code, after = this")
    parser.add_argument(
        "--workers", type=int, default=0,
        help="send with N `ordertally worker` processes instead of in this process",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=float, default=10, help="seconds the workers get to start (--workers)"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    result = one_run(args)
    if not args.one:
        print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
