"""Fulfillment throughput with the carrier simulator, over real HTTP both ways:
`python -m bench.fulfillment [--db sqlite|pg] [--shipments N] [--runs R]`.

Per run: a scratch database, `ordertally serve` in its own process (it receives the carrier's
pushes), the Kuaidi100 simulator in this process, N paid single-parcel orders (their shipments
planned by the fulfillment consumer). Timed phases:
- waybills: the carrier work requests every waybill from the simulator (label API);
- ship: the warehouse ships every parcel over HTTP (`POST /api/v1/shipments/{id}/ship` from
  `--ship-clients` concurrent keep-alive connections, as a scanning warehouse or an ERP sends
  them), with the server's and PostgreSQL's CPU per ship over the phase;
- subscribe: the carrier work subscribes every waybill (poll API);
- pushes: the simulator plays 5–10 steps per waybill, 10% duplicated and 10% out of order, each
  push verified, stored and committed by the server before its answer; with the server's and
  PostgreSQL's CPU per push over the phase (the figure a shared machine distorts least).
Each run checks that every shipment ends in the status the simulator's script says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from datetime import timedelta
from typing import Any

from bench import cpu
from bench.server import Server, scratch_database

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SKU = "FUL-BENCH-1"


async def _paid_orders(db: Any, count: int) -> None:
    from ordertally.catalog import service as catalog_service
    from ordertally.core.settings import get_settings
    from ordertally.events.dispatcher import drain
    from ordertally.inventory import service as inventory_service
    from ordertally.orders import service as orders_service
    from ordertally.orders.schemas import OrderCreate
    from ordertally.orders.service import Actor
    from ordertally.orders.state_machine import ActorKind

    async with db.transaction() as session:
        await inventory_service.create_warehouse(
            session,
            {
                "code": "WH-FUL",
                "name": "发货压测仓",
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
            warehouse_code="WH-FUL",
            sku=SKU,
            kind="receipt",
            quantity=10_000_000,
            reason="fulfillment bench",
            actor="bench",
        )
    for start in range(0, count, 200):
        async with db.transaction() as session:
            for n in range(start, min(start + 200, count)):
                cmd = OrderCreate.model_validate(
                    {
                        "channel": "bench",
                        "external_id": f"ful-{n}",
                        "customer": {"name": "王五", "phone": f"139{n:08d}"},
                        "shipping_address": {
                            "name": "王五",
                            "phone": f"139{n:08d}",
                            "province": "上海市",
                            "city": "上海市",
                            "district": "浦东新区",
                            "line1": "世纪大道1号",
                        },
                        "lines": [{"sku": SKU, "quantity": 1, "unit_price": "10.00"}],
                        "currency": "CNY",
                    }
                )
                snap, _ = await orders_service.create_order(
                    session, cmd, Actor(ActorKind.API, "bench"), check_fingerprint=False
                )
                await orders_service.transition(
                    session,
                    snap.order.order_no,
                    "payment_succeeded",
                    Actor(ActorKind.PAYMENT_CALLBACK, "bench"),
                )
    await drain(db, get_settings())


async def _statuses(db: Any) -> dict[int, tuple[str, str | None]]:
    from sqlalchemy import select

    from ordertally.fulfillment.models import Shipment

    async with db.transaction() as session:
        rows = await session.execute(select(Shipment.id, Shipment.status, Shipment.waybill_no))
        return {r.id: (r.status, r.waybill_no) for r in rows.all()}


def _one_run(
    kind: str, pg_url: str, count: int, seed: int, ship_clients: int = 16
) -> dict[str, Any]:
    from ordertally.core import clock
    from ordertally.core.crypto import reset_cipher
    from ordertally.core.db import Database
    from ordertally.core.settings import get_settings, reset_settings
    from ordertally.domains import register_all
    from ordertally.fulfillment import service
    from ordertally.fulfillment.simulator.engine import CarrierSimulator
    from ordertally.fulfillment.simulator.server import CarrierSimServer
    from ordertally.orders.service import Actor
    from ordertally.orders.state_machine import ActorKind

    sim = CarrierSimServer(CarrierSimulator(seed=seed)).start()
    try:
        env = {
            "ORDERTALLY_KUAIDI100_API_BASE": sim.url,
            "ORDERTALLY_KUAIDI100_CUSTOMER": sim.engine.customer,
            "ORDERTALLY_KUAIDI100_KEY": sim.engine.key,
            "ORDERTALLY_KUAIDI100_SECRET": sim.engine.secret,
            "ORDERTALLY_KUAIDI100_SALT": "bench-salt",
            "ORDERTALLY_FULFILLMENT_BATCH": "1000",
            "ORDERTALLY_FULFILLMENT_CARRIER_CONCURRENCY": "16",
        }
        with scratch_database(kind, pg_url, env) as sdb:
            server = Server(sdb, workers=1)
            sdb.env["ORDERTALLY_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{server.port}"
            with server:
                os.environ.update(sdb.env)
                reset_settings()
                reset_cipher()
                register_all(get_settings())  # the consumers, as a worker has them

                async def phases() -> dict[str, Any]:
                    db = Database(sdb.url)
                    try:
                        return await _phases(
                            db,
                            sim,
                            count,
                            seed,
                            service,
                            clock,
                            Actor,
                            ActorKind,
                            cpu_of=lambda: _cpu_seconds(server.pid, sdb.pg_name),
                            port=server.port,
                            api_key=sdb.api_key,
                            ship_clients=ship_clients,
                        )
                    finally:
                        await db.dispose()

                # The scratch database is made and dropped outside the loop (it runs its own).
                return asyncio.run(phases())
    finally:
        sim.stop()


async def _ship_over_http(port: int, api_key: str, ids: list[int], clients: int) -> list[int]:
    """Ship every shipment through the API from `clients` keep-alive connections, each taking
    the next id when its previous answer came; returns the status codes."""
    from bench.loadgen import Connection

    todo = iter(ids)
    answers: list[int] = []
    head = f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"

    async def client() -> None:
        conn = Connection("127.0.0.1", port)
        try:
            for sid in todo:
                status, _ = await conn.send(
                    (
                        f"POST /api/v1/shipments/{sid}/ship HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{port}\r\n{head}Content-Length: 2\r\n\r\n{{}}"
                    ).encode()
                )
                answers.append(status)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


def _cpu_seconds(server_pid: int, pg_name: str | None) -> tuple[float, float]:
    """CPU seconds used so far by the server's processes and by PostgreSQL for its database."""
    server = cpu.tree_seconds(server_pid) or 0.0
    return server, cpu.postgres_seconds(pg_name) if pg_name else 0.0


async def _phases(
    db: Any,
    sim: Any,
    count: int,
    seed: int,
    service: Any,
    clock: Any,
    actor: Any,
    kind: Any,
    cpu_of: Any,
    port: int,
    api_key: str,
    ship_clients: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    await _paid_orders(db, count)
    figures: dict[str, Any] = {"shipments": count}
    if len(await _statuses(db)) != count:
        raise SystemExit("the paid orders were not planned into shipments")

    started = time.perf_counter()
    while not all(st == "ready" for st, _ in (await _statuses(db)).values()):
        await service.carrier_work(db)
    figures["waybills_per_s"] = round(count / (time.perf_counter() - started), 1)

    finals = ["delivered"] * 7 + ["rejected", "returned", "problem"]
    ids = sorted(await _statuses(db))
    for _, number in (await _statuses(db)).values():
        await sim.set_script(number, final=rng.choice(finals), transit_steps=rng.randint(2, 7))

    cpu_before = cpu_of()
    started = time.perf_counter()
    answers = await _ship_over_http(port, api_key, ids, ship_clients)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_of()
    figures["ships_per_s"] = round(count / elapsed, 1)
    figures["server_cpu_ms_per_ship"] = round(1000 * (cpu_after[0] - cpu_before[0]) / count, 2)
    figures["postgres_cpu_ms_per_ship"] = round(1000 * (cpu_after[1] - cpu_before[1]) / count, 2)
    figures["ships_refused"] = sum(status != 200 for status in answers)
    if {st for st, _ in (await _statuses(db)).values()} != {"shipped"}:
        raise SystemExit("a shipment did not ship")

    started = time.perf_counter()
    while not all(w["subscribed"] for w in await sim.waybills()):
        await service.carrier_work(db)
    figures["subscriptions_per_s"] = round(count / (time.perf_counter() - started), 1)

    await sim.set_mode(duplicate_rate=0.1, out_of_order_rate=0.1)
    deliveries = []
    cpu_before = cpu_of()
    started = time.perf_counter()
    while not all(w["done"] for w in await sim.waybills()):
        clock.advance(timedelta(minutes=40))
        deliveries += await sim.advance()
    deliveries += await sim.flush()
    elapsed = time.perf_counter() - started
    figures["pushes"] = len(deliveries)
    figures["pushes_per_s"] = round(len(deliveries) / elapsed, 1)
    # CPU per push (server, PostgreSQL): what sharing the machine distorts least
    cpu_after = cpu_of()
    figures["server_cpu_ms_per_push"] = round(
        1000 * (cpu_after[0] - cpu_before[0]) / max(len(deliveries), 1), 2
    )
    figures["postgres_cpu_ms_per_push"] = round(
        1000 * (cpu_after[1] - cpu_before[1]) / max(len(deliveries), 1), 2
    )
    figures["pushes_not_acked"] = sum(not d.ok for d in deliveries)
    truth = {w["number"]: w["true_status"] for w in await sim.waybills()}
    ours = {number: status for status, number in (await _statuses(db)).values()}
    figures["wrong_final_status"] = sum(ours[n] != s for n, s in truth.items())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "pg", "both"], default="both")
    parser.add_argument("--shipments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="runs per backend; medians kept")
    parser.add_argument(
        "--ship-clients", type=int, default=16, help="concurrent connections shipping parcels"
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    args = parser.parse_args()
    kinds = ["sqlite", "pg"] if args.db == "both" else [args.db]
    report: dict[str, Any] = {}
    for kind in kinds:
        runs = [
            _one_run(kind, args.pg_url, args.shipments, seed, args.ship_clients)
            for seed in range(args.runs)
        ]
        keys = [k for k in runs[0] if k.endswith(("_per_s", "_per_ship", "_per_push"))]
        report[kind] = {
            "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in keys},
            "all_correct": all(
                r["wrong_final_status"] == 0
                and r["pushes_not_acked"] == 0
                and r["ships_refused"] == 0
                for r in runs
            ),
        }
        print(json.dumps({kind: report[kind]}, ensure_ascii=False), flush=True)
    if not all(r["all_correct"] for r in report.values()):
        raise SystemExit("a run ended with a wrong status or an unacknowledged push")


if __name__ == "__main__":
    main()
