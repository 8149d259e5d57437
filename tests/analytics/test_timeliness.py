"""Timeliness analytics on both databases: orders walked through the real transition table at
chosen times, events delivered by the real dispatcher, figures read over HTTP and recomputed
with plain SQL from the orders and their audit trail."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text

from ordertally.analytics import service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.events.outbox import publish
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.state_machine import Actor
from tests.factories import DRIVERS, auth, make_order

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
DAY = "2026-11-10"
WALK = ("payment_succeeded", "allocate", "start_fulfillment", "ship")


async def _walk(db: Database, order_no: str, steps: list[tuple[str, datetime]]) -> None:
    for name, at in steps:
        with clock.frozen(at):
            async with db.transaction() as session:
                await orders_service.transition(session, order_no, name, Actor(DRIVERS[name], "t"))


async def _shipped_by(db: Database, order: Any, warehouse: str, carrier: str, at: datetime) -> None:
    """The fulfillment domain's event for the parcel (its payload as it publishes it)."""
    with clock.frozen(at):
        async with db.transaction() as session:
            await publish(
                session,
                "ShipmentShipped",
                {
                    "shipment_id": order.id,
                    "order_id": order.id,
                    "order_no": order.order_no,
                    "warehouse": warehouse,
                    "carrier": carrier,
                    "waybill_no": f"YT{order.id:010d}",
                    "tracking_url": "http://ordertally.test/t/x",
                    "shipped_at": at.isoformat(),
                },
                aggregate_type="order",
                aggregate_id=str(order.id),
            )


async def _order(db: Database, at: datetime, hours: list[float], **body: Any) -> Any:
    """An order created at `at`, then each of WALK's steps `hours[i]` after the previous."""
    with clock.frozen(at):
        order = await make_order(db, **body)
    steps, t = [], at
    for name, h in zip(WALK, hours, strict=False):
        t += timedelta(hours=h)
        steps.append((name, t))
    await _walk(db, order.order_no, steps)
    return order


async def test_presale_ship_time_counts_from_production_confirmation(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a made-to-order (presale) order paid 10 minutes after creation
    presale = await _order(db, T0, [1 / 6], channel="douyin")
    paid = T0 + timedelta(minutes=10)
    r = await client.put(
        f"/api/v1/analytics/orders/{presale.order_no}/requirement",
        json={"template": "made_to_order", "ship_by_at": (paid + timedelta(days=4)).isoformat()},
        headers=auth(keys["ops"]),
    )
    assert r.json()["required"] == ["production_confirmed"]
    await drain(db, get_settings())
    timeline = await client.get(
        f"/api/v1/analytics/orders/{presale.order_no}/timeline", headers=auth(keys["cs"])
    )
    # Then until production is confirmed, fulfilment has not started
    assert timeline.json()["fulfillment_start_at"] is None
    # When production is confirmed three days after payment, and the parcel ships 5 h later
    confirmed = paid + timedelta(days=3)
    r = await client.post(
        "/api/v1/analytics/fulfillment-events",
        json={
            "events": [
                {
                    "order_no": presale.order_no,
                    "type": "production_confirmed",
                    "occurred_at": confirmed.isoformat(),
                }
            ]
        },
        headers=auth(keys["ops"]),
    )
    assert r.status_code == 201
    await _walk(
        db,
        presale.order_no,
        [
            ("allocate", confirmed + timedelta(hours=1)),
            ("start_fulfillment", confirmed + timedelta(hours=2)),
            ("ship", confirmed + timedelta(hours=5)),
        ],
    )
    # And a standard order on another channel ships 3 h after its payment
    await _order(db, T0, [0.5, 1, 1, 1], channel="jd")
    await drain(db, get_settings())
    # Then the presale order's ship time is 5 h (from the confirmation), not 3 days
    timeline = await client.get(
        f"/api/v1/analytics/orders/{presale.order_no}/timeline", headers=auth(keys["cs"])
    )
    assert timeline.json()["fulfillment_start_at"] == confirmed.isoformat().replace("+00:00", "Z")
    r = await client.get(
        "/api/v1/analytics/ship-time",
        params={"date_from": DAY, "date_to": DAY, "by": "channel"},
        headers=auth(keys["finance"]),
    )
    assert [
        (i["channel"], i["avg_hours"], i["with_deadline"], i["after_deadline"])
        for i in r.json()["items"]
    ] == [
        ("douyin", 5.0, 1, 0),
        ("jd", 3.0, 0, 0),
    ]


async def test_stage_table_matches_plain_sql_and_survives_a_rebuild(
    client: AsyncClient, keys: dict[str, str], db: Database, backend: str, tmp_path: Path
) -> None:
    # Given orders with different stage durations on two channels, two warehouses and carriers
    shapes = [
        ("douyin", [0.2, 1, 2, 10], "WH-A", "zto"),
        ("douyin", [0.4, 3, 1, 30], "WH-A", "zto"),  # late to allocate and to ship
        ("douyin", [1.0, 0.5, 5, 20], "WH-B", "sf"),
        ("jd", [0.1, 2.5, 3, 26], "WH-B", "sf"),
        ("jd", [0.3, 1], "WH-A", "zto"),  # not yet picked
        ("jd", [], "WH-A", "zto"),  # never paid
    ]
    orders = []
    for i, (channel, hours, wh, carrier) in enumerate(shapes):
        order = await _order(db, T0 + timedelta(minutes=i), hours, channel=channel)
        if len(hours) == 4:
            await _shipped_by(db, order, wh, carrier, T0 + timedelta(hours=sum(hours)))
        orders.append(order)
    # And the late order was held by a stock shortage (an exception case)
    async with db.transaction() as session:
        await exceptions_service.open_case(
            session,
            order_id=orders[1].id,
            category="stock",
            type="shortage",
            blocking=False,
            detail={},
        )
    await drain(db, get_settings())
    # When the stage table is read by channel, with exact percentiles (from the timelines; the
    # pre-aggregated rows are checked against plain SQL in test_stage_rows)
    r = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "channel", "exact": "true"},
        headers=auth(keys["ops"]),
    )
    table = r.json()["items"]
    # Then each stage's figures equal those recomputed with plain SQL from the orders and their
    # audit trail (first time each status was reached)
    epoch = (
        "EXTRACT(EPOCH FROM ({b} - {a}))"
        if backend == "pg"
        else "(julianday({b}) - julianday({a})) * 86400.0"
    )
    first = (
        "(SELECT MIN(occurred_at) FROM order_event e"
        " WHERE e.order_id = o.id AND e.to_status = '{status}') AS {column}"
    )
    firsts = "SELECT o.id, o.channel, o.created_at, {} FROM sales_order o".format(
        ", ".join(
            first.format(status=s, column=c)
            for s, c in (
                ("paid", "paid_at"),
                ("allocated", "allocated_at"),
                ("fulfilling", "picking_at"),
                ("shipped", "shipped_at"),
            )
        )
    )
    expected = []
    async with db.transaction(write=False) as session:
        for stage, a, b, sla in service.STAGES[:4]:
            rows = (
                await session.execute(
                    text(
                        f"SELECT channel, {epoch.format(a=a, b=b)} FROM ({firsts}) f"
                        f" WHERE {a} IS NOT NULL AND {b} IS NOT NULL ORDER BY channel"
                    )
                )
            ).all()
            for channel in sorted({c for c, _ in rows}):
                d = sorted(float(s) for c, s in rows if c == channel)
                q = statistics.quantiles(d, n=10, method="inclusive") if len(d) > 1 else d * 9
                p50 = statistics.median(d)
                expected.append(
                    (
                        stage,
                        channel,
                        len(d),
                        round(sum(d) / len(d) / 3600, 4),
                        round(p50 / 3600, 4),
                        round(q[8] / 3600, 4),
                        round(sum(1 for s in d if s > sla.total_seconds()) / len(d), 4),
                    )
                )
    got = [
        (
            i["stage"],
            i["channel"],
            i["orders"],
            i["avg_hours"],
            i["p50_hours"],
            i["p90_hours"],
            i["over_sla_share"],
        )
        for i in table
        if i["stage"] in {s[0] for s in service.STAGES[:4]}
    ]
    assert got == expected
    assert len(got) == 8
    # And the late allocation names its cause
    late = next(i for i in table if (i["stage"], i["channel"]) == ("paid_to_allocated", "douyin"))
    assert (late["over_sla_share"], late["delay_causes"]) == (
        0.3333,
        [{"type": "shortage", "orders": 1}],
    )
    # And carriers and warehouses come from the shipment events
    by_carrier = await client.get(
        "/api/v1/analytics/carriers",
        params={"date_from": DAY, "date_to": DAY},
        headers=auth(keys["ops"]),
    )
    assert by_carrier.json()["items"] == []  # nothing delivered yet
    r = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "warehouse"},
        headers=auth(keys["ops"]),
    )
    shipped = [
        (i["warehouse"], i["orders"])
        for i in r.json()["items"]
        if i["stage"] == "picking_to_shipped"
    ]
    assert shipped == [("WH-A", 2), ("WH-B", 2)]
    # And the daily series counts orders, amounts and the paid rate
    daily = await client.get(
        "/api/v1/analytics/daily",
        params={"date_from": DAY, "date_to": DAY},
        headers=auth(keys["finance"]),
    )
    assert [
        (i["channel"], i["orders"], i["paid"], i["paid_rate"]) for i in daily.json()["items"]
    ] == [
        ("douyin", 3, 3, 1.0),
        ("jd", 3, 2, 0.6667),
    ]
    # When the read models are rebuilt from the event log
    assert await service.rebuild(db) > 0
    # Then the stage table is the same
    again = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "channel", "exact": "true"},
        headers=auth(keys["ops"]),
    )
    assert again.json()["items"] == table
    # And so are the pre-aggregated rows it rebuilt by replaying the events
    rows = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "channel"},
        headers=auth(keys["ops"]),
    )
    assert [
        (i["stage"], i["channel"], i["orders"], i["over_sla_share"]) for i in rows.json()["items"]
    ] == [(i["stage"], i["channel"], i["orders"], i["over_sla_share"]) for i in table]


async def test_business_events_from_a_file(
    client: AsyncClient, keys: dict[str, str], db: Database, tmp_path: Path
) -> None:
    # Given a cross-border order waiting for customs, paid at T0 + 10 min
    order = await _order(db, T0, [1 / 6], channel="shopify")
    async with db.transaction() as session:
        from ordertally.analytics.schemas import RequirementIn

        await service.set_requirement(
            session, order.order_no, RequirementIn(template="cross_border"), "t"
        )
    # When customs clearance arrives in a platform file (UTF-8 with BOM)
    path = tmp_path / "events.csv"
    path.write_text(
        f"\ufefforder_no,type,occurred_at\n{order.order_no},customs_cleared,2026-11-11T09:00:00+08:00\n",
        encoding="utf-8",
    )
    async with db.transaction() as session:
        assert (
            await service.record_events(session, service.read_events_file(path), "t", "file") == 1
        )
    await drain(db, get_settings())
    # Then fulfilment starts at the clearance (01:00 UTC), and a bad file is refused whole
    r = await client.get(
        f"/api/v1/analytics/orders/{order.order_no}/timeline", headers=auth(keys["ops"])
    )
    assert r.json()["fulfillment_start_at"] == "2026-11-11T01:00:00Z"
    path.write_text("order_no,type,occurred_at\nX,customs_cleared,yesterday\n", encoding="utf-8")
    with pytest.raises(service.InvalidAnalyticsRequest):
        service.read_events_file(path)


async def test_timelines_export_through_the_exporter(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given two orders folded into timelines
    first = await _order(db, T0, [0.5, 1, 1, 1], channel="jd")
    await _order(db, T0, [0.5], channel="jd")
    await drain(db, get_settings())
    # When ops exports the timelines as CSV through the exporter
    from ordertally.exports import service as exports_service

    r = await client.post(
        "/api/v1/exports",
        json={"template": "order_timelines", "date_from": DAY, "date_to": DAY},
        headers=auth(keys["ops"]),
    )
    assert await exports_service.run_queued(db) == 1
    doc = (
        await client.get(f"/api/v1/exports/{r.json()['export_no']}", headers=auth(keys["ops"]))
    ).json()
    content = (
        await client.get(f"/api/v1/exports/{doc['export_no']}/file", headers=auth(keys["ops"]))
    ).text
    # Then both orders are there, the shipped one with its fulfilment start (its payment)
    assert doc["manifest"]["row_count"] == 2
    row = next(line for line in content.splitlines() if line.startswith(first.order_no))
    assert "2026-11-10 02:30:00Z" in row and "2026-11-10 05:30:00Z" in row
