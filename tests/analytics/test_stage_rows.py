"""The pre-aggregated stage rows on both databases: kept by the timeline consumer through the
real dispatcher, equal to figures recomputed with plain SQL from the timelines (exact counts,
sums and over-SLA shares; percentiles within the stated bucket error), corrected when an event
arrives late, out of order or re-timed, and rebuilt identically from the timelines."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text, update

from ordertally.analytics import histogram, repository, service
from ordertally.analytics.schemas import BusinessEventIn, RequirementIn
from ordertally.core import clock
from ordertally.core.db import Database, UtcDateTime
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.events.outbox import publish
from tests.analytics.test_timeliness import _order, _shipped_by
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
DAY = "2026-11-10"
STAMPS = [c for c in repository.TIMELINE_COLUMNS if c.endswith("_at")]


async def _stage_rows(db: Database) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    """Every non-empty stage row, read with plain SQL."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            text(
                "SELECT dimension, day_date, channel, stage, dim_key, bucket, orders, sum_us,"
                " over_sla FROM stage_daily_stat WHERE orders <> 0 OR sum_us <> 0 OR over_sla <> 0"
            )
        )
        return {tuple(r[:6]): (int(r[6]), int(r[7]), int(r[8])) for r in rows.all()}


async def _timelines(db: Database) -> list[dict[str, Any]]:
    """Every timeline, read with plain SQL (its timestamps typed as the model stores them)."""
    async with db.transaction(write=False) as session:
        stmt = text(
            "SELECT channel, warehouse, carrier, day_date, " + ", ".join(STAMPS) + " FROM"
            " order_timeline"
        ).columns(
            **{"channel": None, "warehouse": None, "carrier": None, "day_date": None},  # type: ignore[arg-type]
            **dict.fromkeys(STAMPS, UtcDateTime()),
        )
        return [dict(r._mapping) for r in (await session.execute(stmt)).all()]


def _disc(values: list[int], q: float) -> float:
    """percentile_disc(q) of the microseconds, in seconds."""
    values = sorted(values)
    return values[max(1, math.ceil(q * len(values))) - 1] / 1_000_000


async def test_stage_rows_equal_plain_sql_over_the_timelines(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given 24 orders on three channels with spread-out stage durations, shipped from two
    # warehouses with two carriers, some still under way (events through the dispatcher)
    channels = ("douyin", "jd", "pdd")
    for i in range(24):
        hours = [0.05 + 0.13 * i, 0.5 + (i * 7 % 5), 1 + (i % 6), 3 + (i * 11 % 29)][: 1 + i % 4]
        if i % 5 == 0:
            hours = [0.2, 1, 2, 5]
        order = await _order(db, T0 + timedelta(minutes=i), hours, channel=channels[i % 3])
        if len(hours) == 4:
            warehouse, carrier = ("WH-A", "zto") if i % 2 else ("WH-B", "sf")
            await _shipped_by(db, order, warehouse, carrier, T0 + timedelta(hours=sum(hours)))
    await drain(db, get_settings())
    timelines = await _timelines(db)
    # When the stage table is read by channel from the pre-aggregated rows
    r = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "channel"},
        headers=auth(keys["ops"]),
    )
    assert r.json()["percentile_error"] == round(histogram.RELATIVE_ERROR, 4) == 0.0443
    table = {(i["stage"], i["channel"]): i for i in r.json()["items"]}
    rows = await _stage_rows(db)
    # Then for every stage and channel the orders, summed microseconds and orders over the
    # SLA equal the timelines' (recomputed here), and p50/p90 lie within the bucket error of
    # percentile_disc
    checked = 0
    for name, start, end, sla_us in histogram.TRACKED:
        for channel in channels:
            durations = [
                histogram.micros(t[start], t[end])
                for t in timelines
                if t["channel"] == channel and t[start] is not None and t[end] is not None
            ]
            summed = [
                v for k, v in rows.items() if k[0] == "all" and k[2] == channel and k[3] == name
            ]
            assert (
                sum(n for n, _, _ in summed),
                sum(us for _, us, _ in summed),
                sum(o for _, _, o in summed),
            ) == (len(durations), sum(durations), sum(1 for d in durations if d > sla_us))
            if not durations or name == "ship_deadline":
                assert (name, channel) not in table
                continue
            got = table[(name, channel)]
            assert got["orders"] == len(durations)
            assert got["avg_hours"] == round(sum(durations) / len(durations) / 3.6e9, 4)
            over = sum(1 for d in durations if d > sla_us)
            assert got["over_sla_share"] == round(over / len(durations), 4)
            for q, field in ((0.5, "p50_hours"), (0.9, "p90_hours")):
                exact = _disc(durations, q) / 3600
                assert abs(got[field] - exact) <= exact * histogram.RELATIVE_ERROR + 1e-4
            checked += 1
    assert checked == 15  # 5 stages with orders through them (none delivered) x 3 channels
    # And the "all channels" rows are the channels' sum, per warehouse and carrier too
    for dimension in ("all", "warehouse", "carrier"):
        for name, *_ in histogram.TRACKED:
            per_channel = [
                v for k, v in rows.items() if (k[0], k[3]) == (dimension, name) and k[2] != "*"
            ]
            everyone = [
                v for k, v in rows.items() if (k[0], k[3]) == (dimension, name) and k[2] == "*"
            ]
            assert [sum(c) for c in zip(*per_channel, strict=True)] == [
                sum(c) for c in zip(*everyone, strict=True)
            ]
    # When the exact path is asked for, it still answers from the timelines (percentile_cont)
    exact = await client.get(
        "/api/v1/analytics/stages",
        params={"date_from": DAY, "date_to": DAY, "by": "channel", "exact": "true"},
        headers=auth(keys["ops"]),
    )
    assert exact.json()["percentile_error"] == 0
    assert [(i["stage"], i["channel"], i["orders"]) for i in exact.json()["items"]] == [
        (i["stage"], i["channel"], i["orders"]) for i in r.json()["items"]
    ]
    # When the stage rows are rebuilt from the timelines (one SQL statement on PostgreSQL)
    assert await service.rebuild_stages(db) > 0
    # Then they are the same rows, bucket for bucket
    assert await _stage_rows(db) == rows


def _status_event(order: Any, event: str, to: str, at: datetime) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "order_no": order.order_no,
        "transition": to,
        "from_status": None,
        "to_status": to,
        "version": 9,
        "actor_kind": "api",
        "actor_id": "t",
        "evidence_ref": None,
        "occurred_at": at.isoformat(),
    }


async def _publish(db: Database, order: Any, event: str, to: str, at: datetime) -> None:
    async with db.transaction() as session:
        await publish(
            session,
            event,
            _status_event(order, event, to, at),
            aggregate_type="order",
            aggregate_id=str(order.id),
        )


async def _rebuilt_rows(db: Database) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    """The stage rows as a rebuild from the timelines makes them (then restored)."""
    await service.rebuild_stages(db)
    return await _stage_rows(db)


async def test_a_late_or_re_timed_event_moves_the_order_not_adds_it(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order walked to shipped: picked 3 h after creation, shipped 20 h after picking
    order = await _order(db, T0, [0.5, 1, 1.5, 20], channel="jd")
    await drain(db, get_settings())
    first = await _stage_rows(db)
    key = ("all", DAY, "*", "picking_to_shipped")
    assert [(k[5], v) for k, v in first.items() if k[:4] == key] == [
        (histogram.bucket_of(20 * 3600 * 10**6), (1, 20 * 3600 * 10**6, 0))
    ]
    # When the warehouse re-sends the shipment with its real, earlier time (8 h after picking)
    shipped = T0 + timedelta(hours=3 + 8)
    await _publish(db, order, "OrderShipped", "shipped", shipped)
    await drain(db, get_settings())
    # Then the order moved to the 8 h bucket: still one order, 8 h summed
    rows = await _stage_rows(db)
    assert [(k[5], v) for k, v in rows.items() if k[:4] == key] == [
        (histogram.bucket_of(8 * 3600 * 10**6), (1, 8 * 3600 * 10**6, 0))
    ]
    # And a replay of the older, later time changes nothing (the earliest time is kept)
    await _publish(db, order, "OrderShipped", "shipped", shipped + timedelta(hours=12))
    await drain(db, get_settings())
    assert await _stage_rows(db) == rows
    # When the parcel's warehouse and carrier arrive after the stage was counted
    await _shipped_by(db, order, "WH-A", "zto", shipped)
    await drain(db, get_settings())
    # Then its contribution moved from the empty warehouse to WH-A, not duplicated
    rows = await _stage_rows(db)
    by_wh = {k[4]: v[0] for k, v in rows.items() if k[:4] == ("warehouse", DAY, "*", key[3])}
    assert by_wh == {"WH-A": 1}
    # When production confirmation (a required business event) is recorded 1 h after payment,
    # after the order shipped: ship time now counts from it
    async with db.transaction() as session:
        await service.set_requirement(
            session, order.order_no, RequirementIn(template="made_to_order"), "t"
        )
    async with db.transaction() as session:
        await service.record_events(
            session,
            [
                BusinessEventIn(
                    order_no=order.order_no,
                    type="production_confirmed",
                    occurred_at=T0 + timedelta(hours=1.5),
                )
            ],
            "t",
            "api",
        )
    r = await client.get(
        "/api/v1/analytics/ship-time",
        params={"date_from": DAY, "date_to": DAY, "by": "all"},
        headers=auth(keys["ops"]),
    )
    assert [(i["orders"], i["avg_hours"]) for i in r.json()["items"]] == [(1, 9.5)]
    # When an order's events arrive out of order: shipped, then picking, then its creation
    with clock.frozen(T0):
        other = await make_order(db, channel="jd")  # its OrderCreated, held back below
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == other.order_no)
            .values(available_at=T0 + timedelta(days=400))
        )
    await _publish(db, other, "OrderShipped", "shipped", T0 + timedelta(hours=30))
    await drain(db, get_settings())
    await _publish(db, other, "OrderFulfillmentStarted", "fulfilling", T0 + timedelta(hours=6))
    await drain(db, get_settings())
    # Then nothing is counted before its creation is known (no day to count it on)
    assert sum(v[0] for k, v in (await _stage_rows(db)).items() if k[:4] == key) == 1
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == other.order_no)
            .values(available_at=T0)
        )
    await drain(db, get_settings())
    # And once it is, the second order counts once, 24 h from picking to shipping
    rows = await _stage_rows(db)
    assert sorted(v[1] for k, v in rows.items() if k[:4] == key) == sorted(
        [8 * 3600 * 10**6, 24 * 3600 * 10**6]
    )
    # And after every correction the rows equal a rebuild from the timelines
    assert await _rebuilt_rows(db) == rows
