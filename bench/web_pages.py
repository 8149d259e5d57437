"""Back-office page times with a million orders on PostgreSQL (issue 20): every screen is
requested through the real server by a signed-in admin, one request at a time, and each page's
median and p95 time is reported (measured by the client on 127.0.0.1, so an upper bound of the
server's time). Target: p95 ≤ 100 ms per page.

    python -m bench.web_pages [--orders 1000000] [--cases 100000] [--plan-skus 500]
                              [--requests 40] [--only PREFIX ...]
                              [--baseline-src DIR --rounds N] [--pg-url URL]

With --baseline-src (another source tree's `src`, e.g. `git archive main src`), the same loaded
database is served alternately by that tree (before) and this one (after), --rounds times,
each measured in turn: before/after figures from one session, interleaved.

The orders are cloned on the server from one order made through the services (INSERT ...
SELECT over generate_series: statuses by age like a working month, created over 30 days), so
loading a million takes a minute, not the hours the API would. The workbench gets a year of
exception cases over those orders (COPY-loaded as `bench.casework` does: about 5% still active),
so the cases screens list from a realistic table. The purchase plans screen gets --plan-skus
stocked SKUs (every third below its safety stock) with a receipt planned every 10 days over
60 days for each, through the services. Everything runs in a scratch database that is
dropped at the end; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Integer, String, case, cast, func, insert, literal, select, text

from bench.casework import _copy_cases
from bench.payments import WAREHOUSE, order_command, seed_stock
from bench.server import HOST, Server, ordertally_command, scratch_database

PASSWORD = "bench-password-2026"
# Statuses follow an order's age like a working month (row g was created g × 2.6 s ago): the
# last half hour is still moving, the last three days are on the road, older ones delivered or
# completed; one in twenty is closed unpaid and one in a thousand is stuck as paid.
OPEN_SLOTS = ("pending_payment", "paid", "allocated", "fulfilling")
SECONDS_APART = 2.6


def _status(g: Any) -> Any:
    return case(
        (g % 1000 == 7, "paid"),
        (g < 700, case(*((g % 4 == i, s) for i, s in enumerate(OPEN_SLOTS)))),
        (g % 20 == 1, "closed"),
        (g < 100_000, "shipped"),
        (g < 330_000, "delivered"),
        else_="completed",
    )


async def load_orders(url: str, count: int) -> str:
    """One order through the services, then `count` clones; returns the template's number
    (the detail page is requested for it: it has lines, events and a reservation)."""
    from ordertally.core.db import Database
    from ordertally.orders import service as orders_service
    from ordertally.orders.models import SalesOrder
    from ordertally.orders.service import Actor
    from ordertally.orders.state_machine import ActorKind

    db = Database(url)
    try:
        await seed_stock(db)
        async with db.transaction() as session:
            snapshot, _ = await orders_service.create_order(
                session, order_command(1), Actor(ActorKind.API, "bench"), check_fingerprint=False
            )
        template = snapshot.order.order_no
        skip = {"id", "order_no", "external_id", "channel", "status", "created_at", "updated_at"}
        cols = [c for c in SalesOrder.__table__.columns if c.name not in skip]
        now = datetime.now(UTC)
        series = func.generate_series(1, count).column_valued("g")
        g = cast(series, Integer)
        created = literal(now) - func.make_interval(0, 0, 0, 0, 0, 0, g * SECONDS_APART)
        # The cross join of the one template row with the series is the point of the query.
        warnings.filterwarnings("ignore", "SELECT statement has a cartesian product")
        async with db.transaction() as session:
            tpl = select(*cols).where(SalesOrder.order_no == template).subquery()
            await session.execute(
                insert(SalesOrder).from_select(
                    [
                        "order_no",
                        "channel",
                        "external_id",
                        "status",
                        "created_at",
                        "updated_at",
                        *[c.name for c in cols],
                    ],
                    select(
                        literal("WB") + func.lpad(cast(series, String), 18, "0"),
                        case(
                            (g % 3 == 0, "taobao"),
                            (g % 3 == 1, "jd"),
                            else_="douyin",
                        ),
                        literal(None),
                        _status(g),
                        created,
                        created,
                        *[tpl.c[c.name] for c in cols],
                    ).select_from(tpl),
                )
            )
        # The steady state of a month-old table: autovacuum has run (visibility map, statistics).
        async with db.write_engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM (ANALYZE) sales_order"))
        return str(template)
    finally:
        await db.dispose()


async def load_plans(url: str, skus: int) -> None:
    """`skus` catalogue SKUs stocked in the bench warehouse (every third below its safety stock)
    and six purchase plans each, 10 days apart, through the services."""
    from ordertally.catalog import service as catalog_service
    from ordertally.core.db import Database
    from ordertally.inventory import service as inventory_service
    from ordertally.rules import service as rules_service

    codes = [f"PLAN-BENCH-{i:04d}" for i in range(skus)]
    today = datetime.now(UTC).date()
    db = Database(url)
    try:
        async with db.transaction() as session:
            await catalog_service.add_skus(
                session, [{"code": c, "name": c, "name_en": c} for c in codes], "bench"
            )
            for i, code in enumerate(codes):
                await inventory_service.record_movement(
                    session,
                    warehouse_code=WAREHOUSE,
                    sku=code,
                    kind="receipt",
                    quantity=5 if i % 3 == 0 else 500,
                    reason="plans bench",
                    actor="bench",
                )
                await inventory_service.configure_stock(
                    session, warehouse_code=WAREHOUSE, sku=code, safety_stock=50, buckets=None
                )
            await rules_service.add_plans(
                session,
                [
                    {
                        "sku": code,
                        "warehouse": WAREHOUSE,
                        "expected_date": today + timedelta(days=(i % 10) + 10 * k),
                        "quantity": 100,
                        "reference": f"PO-{i:04d}-{k}",
                    }
                    for i, code in enumerate(codes)
                    for k in range(6)
                ],
                "bench",
            )
    finally:
        await db.dispose()


def make_admin(env: dict[str, str], cwd: str) -> None:
    subprocess.run(
        [*ordertally_command(), "user", "create", "admin", "--role", "admin", "--password-stdin"],
        input=PASSWORD,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=120,
    )


async def measure(port: int, pages: list[str], requests: int) -> dict[str, dict[str, float]]:
    """Sign in, then request each page `requests` times (after 3 warm-ups); ms per page."""
    base = f"http://{HOST}:{port}"
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as client:
        form = await client.get("/ui/login")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signed = await client.post(
            "/ui/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": token, "next": "/ui/"},
        )
        assert signed.status_code == 303, signed.text[:500]
        results: dict[str, dict[str, float]] = {}
        for path in pages:
            times = []
            for i in range(requests + 3):
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (path, response.status_code)
                if i >= 3:
                    times.append(elapsed)
            times.sort()
            results[path] = {
                "median_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
                "bytes": len(response.content),
            }
    return results


def compare(db: Any, pages: list[str], args: argparse.Namespace) -> None:
    """Serve the database from the baseline tree and from this one, alternately, and print
    each round's median / p95 per page for both, then the ratios of the medians of rounds."""
    baseline = dataclasses.replace(db, env={**db.env, "PYTHONPATH": args.baseline_src})
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for round_no in range(args.rounds):
        for label, served in (("before", baseline), ("after", db)):
            load = os.getloadavg()[0]
            with Server(served, workers=1) as server:
                runs[label].append(asyncio.run(measure(server.port, pages, args.requests)))
            print(f"round {round_no + 1} {label}: load {load:.1f} -> {os.getloadavg()[0]:.1f}")
            for path, r in runs[label][-1].items():
                print(f"  {path}: {r['median_ms']} / {r['p95_ms']} ms")
    for path in pages:
        b = [statistics.median([r[path]["median_ms"] for r in runs["before"]])]
        a = [statistics.median([r[path]["median_ms"] for r in runs["after"]])]
        bp = statistics.median([r[path]["p95_ms"] for r in runs["before"]])
        ap = statistics.median([r[path]["p95_ms"] for r in runs["after"]])
        print(f"{path}: median {b[0]} -> {a[0]} ms ({b[0] / a[0]:.2f}x), p95 {bp} -> {ap} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--plan-skus", type=int, default=500)
    parser.add_argument(
        "--only", nargs="*", default=None, help="measure only the pages starting with these"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "ORDERTALLY_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--baseline-src", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with scratch_database("pg", args.pg_url, {}) as db:
        os.environ.update(db.env)
        from ordertally.core.settings import reset_settings

        reset_settings()
        started = time.perf_counter()
        order_no = asyncio.run(load_orders(db.url, args.orders))
        if args.cases:
            asyncio.run(_copy_cases(db.url, args.cases, args.orders + 1))
        if args.plan_skus:
            asyncio.run(load_plans(db.url, args.plan_skus))
        load_s = time.perf_counter() - started
        make_admin(db.env, str(db.data_dir))
        since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
        month = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
        pages = [
            "/ui/",
            "/ui/dashboard/figures",
            "/ui/orders",
            "/ui/orders?status=paid",
            f"/ui/orders?channel=jd&created_from={since}",
            f"/ui/orders/{order_no}",
            "/ui/payments",
            "/ui/inventory",
            "/ui/shipping",
            "/ui/channels",
            "/ui/settings",
            "/ui/users",
            # The screens of the later slices (cases, rules, review, after-sales, exports,
            # analytics) and this one's (file import).
            "/ui/cases",
            "/ui/cases?state=open",
            "/ui/cases?breached=1",
            "/ui/cases/1",
            "/ui/rules",
            "/ui/rules/new",
            "/ui/review",
            "/ui/aftersales",
            "/ui/exports",
            "/ui/analytics",
            f"/ui/analytics?date_from={month}",
            "/ui/channels/import",
            # Issue 20's last screens: reservations, the allocation dry run, SLA policies,
            # carriers.
            "/ui/inventory/reservations",
            "/ui/inventory/reservations?state=committed",
            "/ui/inventory/allocation?province=%E4%B8%8A%E6%B5%B7%E5%B8%82&lines=PAY-BENCH-1+2",
            "/ui/settings/sla",
            "/ui/settings/carriers",
            # The purchase plans: the list with the stock below safety stock, every stock row,
            # one SKU's plans, the export.
            "/ui/inventory/purchase-plans",
            "/ui/inventory/purchase-plans?cover=all",
            "/ui/inventory/purchase-plans?sku=PLAN-BENCH-0042",
            "/ui/inventory/purchase-plans/export.csv",
        ]
        if args.only:
            pages = [p for p in pages if any(p.startswith(o) for o in args.only)]
        if args.baseline_src:
            compare(db, pages, args)
            return
        with Server(db, workers=1) as server:
            results = asyncio.run(measure(server.port, pages, args.requests))
    worst = max(r["p95_ms"] for r in results.values())
    print(
        json.dumps(
            {
                "orders": args.orders + 1,
                "cases": args.cases,
                "load_seconds": round(load_s, 1),
                "requests_per_page": args.requests,
                "pages": results,
                "worst_p95_ms": worst,
                "target_p95_ms": 100,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
