"""The stage table's delay causes and the daily series, kept by consumers (ADR 0043), on both
databases: orders walked through the real transition table and exception cases opened through
the real exceptions service at chosen times, events delivered by the real dispatcher, the
figures read over HTTP and the rows compared with plain SQL over the timelines, the cases, the
orders and their audit trail; a full rebuild gives the same rows, and the whole event log
delivered again, newest first, moves nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text, update

from ordertally.analytics import delay_rows, service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import service as events_service
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.events.outbox import publish
from ordertally.exceptions import service as exceptions_service
from tests.analytics.test_stage_rows import _publish
from tests.analytics.test_timeliness import DAY, T0, WALK, _order, _shipped_by, _walk
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio

PERIOD = {"date_from": DAY, "date_to": DAY}


def _epoch(backend: str, a: str, b: str) -> str:
    if backend == "pg":
        return f"EXTRACT(EPOCH FROM (t.{b} - t.{a}))"
    return f"(julianday(t.{b}) - julianday(t.{a})) * 86400.0"


async def _delay_rows(db: Database) -> dict[tuple[Any, ...], int]:
    """Every non-empty delay-cause row, read with plain SQL."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            text(
                "SELECT dimension, day_date, channel, stage, dim_key, type, orders"
                " FROM stage_delay_stat WHERE orders <> 0"
            )
        )
        return {tuple(r[:6]): int(r[6]) for r in rows.all()}


def _columns(*names: str) -> str:
    """A GROUP BY list without the constants (PostgreSQL refuses a string constant there)."""
    return ", ".join(n for n in names if not n.startswith("'"))


async def _delay_rows_by_plain_sql(db: Database, backend: str) -> dict[tuple[Any, ...], int]:
    """The delay-cause rows recomputed with plain SQL: each timeline joined with its orders'
    distinct case types, each stage over its SLA, grouped per day, channel (and every channel)
    and dimension value."""
    late = " UNION ALL ".join(
        f"SELECT '{name}' AS stage, t.day_date, t.channel, t.warehouse, t.carrier, e.type"
        f" FROM order_timeline t"
        f" JOIN (SELECT DISTINCT order_id, type FROM exception_case) e"
        f" ON e.order_id = t.order_id"
        f" WHERE t.created_at IS NOT NULL AND t.{a} IS NOT NULL AND t.{b} IS NOT NULL"
        f" AND {_epoch(backend, a, b)} > {sla_us / 1_000_000}"
        for name, a, b, sla_us in delay_rows.DELAY_TRACKED
    )
    groupings = " UNION ALL ".join(
        f"SELECT '{dimension}', day_date, {channel}, stage, {key}, type, count(*) FROM late"
        f" GROUP BY {_columns('day_date', channel, 'stage', key, 'type')}"
        for dimension, key in (("all", "'all'"), ("warehouse", "warehouse"), ("carrier", "carrier"))
        for channel in ("channel", "'*'")
    )
    async with db.transaction(write=False) as session:
        rows = await session.execute(text(f"WITH late AS ({late}) {groupings}"))
        return {tuple(r[:6]): int(r[6]) for r in rows.all()}


async def _open_case(db: Database, order: Any, kind: str, at: Any) -> None:
    with clock.frozen(at):
        async with db.transaction() as session:
            await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="stock",
                type=kind,
                blocking=False,
                detail={},
            )


async def _late_orders(db: Database) -> list[Any]:
    """Orders on two channels with stages over and under their SLAs, and exception cases
    opened on either side of the stages' ends."""
    drained = get_settings()
    # Paid 1 h after creation (over the 30 min), allocated 3 h later (over the 2 h): its case
    # is opened after both stages ended and were counted
    over_early = await _order(db, T0, [1.0, 3, 1, 2], channel="douyin")
    await _shipped_by(db, over_early, "WH-A", "zto", T0 + timedelta(hours=7))
    await drain(db, drained)
    await _open_case(db, over_early, "shortage", T0 + timedelta(hours=8))
    # A case opened at creation, folded before the order's own events (same batch, the case
    # consumer first: its timeline is created empty); picking 5 h after allocation (over 4 h)
    # and shipping 30 h after picking (over 24 h) come later
    with clock.frozen(T0 + timedelta(minutes=1)):
        over_late = await make_order(db, channel="douyin")
    await _open_case(db, over_late, "address_invalid", T0 + timedelta(minutes=2))
    await drain(db, drained)
    steps, t = [], T0 + timedelta(minutes=1)
    for name, h in zip(WALK, [0.2, 1, 5, 30], strict=True):
        t += timedelta(hours=h)
        steps.append((name, t))
    await _walk(db, over_late.order_no, steps)
    await _shipped_by(db, over_late, "WH-B", "sf", t)
    # Within every SLA: its case counts nowhere
    on_time = await _order(db, T0 + timedelta(minutes=2), [0.1, 0.5, 1, 2], channel="jd")
    await _open_case(db, on_time, "shortage", T0 + timedelta(hours=1))
    # Over everywhere, two cases of one type and one of another: each type counts once
    everywhere = await _order(db, T0 + timedelta(minutes=3), [2, 3, 5, 30], channel="jd")
    await _shipped_by(db, everywhere, "WH-A", "sf", T0 + timedelta(hours=40))
    for kind in ("shortage", "shortage", "payment_mismatch"):
        await _open_case(db, everywhere, kind, T0 + timedelta(hours=41))
    # Late to pay, no case
    await _order(db, T0 + timedelta(minutes=4), [1.0], channel="jd")
    await drain(db, drained)
    return [over_early, over_late, on_time, everywhere]


async def test_delay_causes_are_rows_equal_to_plain_sql_and_rebuilt_identically(
    client: AsyncClient, keys: dict[str, str], db: Database, backend: str
) -> None:
    # Given late and on-time orders with cases opened before and after their stages ended
    await _late_orders(db)
    rows = await _delay_rows(db)
    # Then the delay-cause rows equal plain SQL over the timelines and the cases
    assert rows == await _delay_rows_by_plain_sql(db, backend)
    # (the customers domain opens cases of its own, e.g. `customer.same_sku_burst` for one
    # buyer's repeated SKU: counted too, and left out of this listing)
    opened = {"shortage", "payment_mismatch", "address_invalid"}
    everyone = {
        k[3:6:2]: v for k, v in rows.items() if k[:3] == ("all", DAY, "*") and k[5] in opened
    }
    assert everyone == {
        ("pending_to_paid", "shortage"): 2,
        ("pending_to_paid", "payment_mismatch"): 1,
        ("paid_to_allocated", "shortage"): 2,
        ("paid_to_allocated", "payment_mismatch"): 1,
        ("allocated_to_picking", "address_invalid"): 1,
        ("allocated_to_picking", "shortage"): 1,
        ("allocated_to_picking", "payment_mismatch"): 1,
        ("picking_to_shipped", "address_invalid"): 1,
        ("picking_to_shipped", "shortage"): 1,
        ("picking_to_shipped", "payment_mismatch"): 1,
    }
    # And the stage table by channel names them, and they equal plain SQL over the orders, their
    # audit trail (first time each status was reached) and the cases
    r = await client.get(
        "/api/v1/analytics/stages", params={**PERIOD, "by": "channel"}, headers=auth(keys["ops"])
    )
    table = r.json()["items"]
    got = {
        (i["stage"], i["channel"], c["type"]): c["orders"] for i in table for c in i["delay_causes"]
    }
    firsts = ", ".join(
        f"(SELECT MIN(occurred_at) FROM order_event e WHERE e.order_id = o.id"
        f" AND e.to_status = '{status}') AS {column}"
        for status, column in (
            ("paid", "paid_at"),
            ("allocated", "allocated_at"),
            ("fulfilling", "picking_at"),
            ("shipped", "shipped_at"),
        )
    )
    expected: dict[tuple[str, str, str], int] = {}
    async with db.transaction(write=False) as session:
        for name, a, b, sla_us in delay_rows.DELAY_TRACKED[:4]:
            found = await session.execute(
                text(
                    f"SELECT t.channel, c.type, count(DISTINCT t.id) FROM"
                    f" (SELECT o.id, o.channel, o.created_at, {firsts} FROM sales_order o) t"
                    f" JOIN exception_case c ON c.order_id = t.id"
                    f" WHERE {_epoch(backend, a, b)} > {sla_us / 1_000_000}"
                    f" GROUP BY t.channel, c.type"
                )
            )
            expected.update({(name, ch, kind): int(n) for ch, kind, n in found.all()})
    assert got == expected
    assert got[("picking_to_shipped", "jd", "shortage")] == 1
    # And the exact path (percentiles from the timelines) names the same causes
    exact = await client.get(
        "/api/v1/analytics/stages",
        params={**PERIOD, "by": "channel", "exact": "true"},
        headers=auth(keys["ops"]),
    )
    assert [i["delay_causes"] for i in exact.json()["items"]] == [i["delay_causes"] for i in table]
    # When the read models are rebuilt from the event log and the cases
    assert await service.rebuild(db) > 0
    # Then the rows are the same, row for row; and so when recomputed from the timelines
    assert await _delay_rows(db) == rows
    await service.rebuild_stages(db)
    assert await _delay_rows(db) == rows
    # When the whole event log is delivered again, newest first
    async with db.transaction(write=False) as session:
        log = await events_service.replay_log(
            session, [*service.TIMELINE_EVENTS, "ExceptionCaseOpened"], 0, 10_000
        )
    assert {e.type for _, e in log} >= {"OrderCreated", "OrderShipped", "ExceptionCaseOpened"}
    async with db.transaction() as session:
        for _, event in reversed(log):
            await publish(
                session,
                event.type,
                event.payload,
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
            )
    await drain(db, get_settings())
    # Then nothing moved
    assert await _delay_rows(db) == rows


async def test_a_re_timed_stage_moves_its_delay_cause(db: Database, backend: str) -> None:
    # Given an order over its picking SLA (6 h after allocation) with a case
    order = await _order(db, T0, [0.2, 1, 6, 2], channel="jd")
    await _open_case(db, order, "shortage", T0 + timedelta(hours=2))
    await drain(db, get_settings())
    key = ("all", DAY, "jd", "allocated_to_picking", "all", "shortage")
    assert (await _delay_rows(db)).get(key) == 1
    # When the warehouse re-sends the picking start with its real, earlier time (1 h after
    # allocation: within the SLA)
    await _publish(db, order, "OrderFulfillmentStarted", "fulfilling", T0 + timedelta(hours=2.2))
    await drain(db, get_settings())
    # Then the order left that stage's delay causes, and the rows still equal plain SQL
    rows = await _delay_rows(db)
    assert key not in rows
    assert rows == await _delay_rows_by_plain_sql(db, backend)
    # And a case on an order no event of which was folded yet waits for the order's creation
    with clock.frozen(T0):
        other = await make_order(db, channel="jd")
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == other.order_no)
            .values(available_at=T0 + timedelta(days=400))
        )
    await _publish(db, other, "OrderPaid", "paid", T0 + timedelta(hours=3))
    await _open_case(db, other, "shortage", T0 + timedelta(hours=4))
    await drain(db, get_settings())
    assert await _delay_rows(db) == rows  # no day to count it on yet
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == other.order_no)
            .values(available_at=T0)
        )
    await drain(db, get_settings())
    # Then once it is known, it counts once (paid 3 h after creation: over 30 min)
    rows = await _delay_rows(db)
    assert rows[("all", DAY, "jd", "pending_to_paid", "all", "shortage")] == 1
    assert rows == await _delay_rows_by_plain_sql(db, backend)


def _local_day_sql(backend: str) -> str:
    tz = get_settings().timezone
    if backend == "pg":
        return f"to_char(o.created_at AT TIME ZONE '{tz}', 'YYYY-MM-DD')"
    assert tz == "Asia/Shanghai"  # no daylight saving: a fixed offset
    return "date(o.created_at, '+8 hours')"


async def _daily_by_plain_sql(db: Database, backend: str) -> list[tuple[Any, ...]]:
    """Orders, amounts and orders ever paid per merchant-local creation day, channel and
    currency, from the orders and their audit trail."""
    day = _local_day_sql(backend)
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            text(
                f"SELECT {day} AS d, o.channel, o.currency, count(*), sum(o.total_minor),"
                " sum(CASE WHEN EXISTS (SELECT 1 FROM order_event e WHERE e.order_id = o.id"
                " AND e.to_status = 'paid') THEN 1 ELSE 0 END)"
                " FROM sales_order o GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
        )
        return [(str(d), c, cur, int(n), int(s), int(p)) for d, c, cur, n, s, p in rows.all()]


async def test_daily_series_from_kept_rows_equals_plain_sql(
    client: AsyncClient,
    keys: dict[str, str],
    db: Database,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')  # a USD order's locked rate
    reset_settings()
    # Given orders on two channels in two currencies, some paid, one created at 00:30 local on
    # the 11th (16:30 UTC on the 10th), one paid before its creation is known
    for i, hours in enumerate([[0.2], [0.5, 1], [], [0.1], []]):
        await _order(db, T0 + timedelta(minutes=i), hours, channel=("douyin", "jd")[i % 2])
    with clock.frozen(T0 + timedelta(minutes=9)):
        await make_order(db, channel="jd", currency="USD")
    after_midnight = await _order(db, T0.replace(hour=16, minute=30), [0.2], channel="douyin")
    with clock.frozen(T0 + timedelta(minutes=12)):
        early_paid = await make_order(db, channel="douyin")
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == early_paid.order_no)
            .values(available_at=T0 + timedelta(days=400))
        )
    await _walk(db, early_paid.order_no, [("payment_succeeded", T0 + timedelta(minutes=20))])
    await drain(db, get_settings())
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.aggregate_id == early_paid.order_no)
            .values(available_at=T0)
        )
    await drain(db, get_settings())
    # And a paid order's payment delivered again, re-timed earlier (it counts once)
    await _publish(db, after_midnight, "OrderPaid", "paid", T0.replace(hour=16, minute=35))
    await drain(db, get_settings())
    # When the daily series is read
    r = await client.get(
        "/api/v1/analytics/daily",
        params={"date_from": DAY, "date_to": "2026-11-11"},
        headers=auth(keys["finance"]),
    )
    items = r.json()["items"]
    # Then it equals plain SQL over the orders and their audit trail, amounts exact
    expected = await _daily_by_plain_sql(db, backend)
    assert [
        (i["day"], i["channel"], i["currency"], i["orders"], i["total"], i["paid"], i["paid_rate"])
        for i in items
    ] == [
        (d, c, cur, n, format_minor(s, cur), p, round(p / n, 4)) for d, c, cur, n, s, p in expected
    ]
    assert [(i["day"], i["channel"], i["paid"]) for i in items if i["day"] != DAY] == [
        ("2026-11-11", "douyin", 1)
    ]
    assert sum(i["paid"] for i in items) == 5
    # And a channel-scoped read sums its channels' rows only
    async with db.transaction(write=False) as session:
        jd_only = await service.daily(session, T0.date(), T0.date() + timedelta(days=1), ("jd",))
    assert jd_only == [i for i in items if i["channel"] == "jd"]
    assert {i["currency"] for i in jd_only} == {"CNY", "USD"}
    # When the read models are rebuilt from the event log, or the rows from the timelines
    assert await service.rebuild(db) > 0
    again = await client.get(
        "/api/v1/analytics/daily",
        params={"date_from": DAY, "date_to": "2026-11-11"},
        headers=auth(keys["finance"]),
    )
    assert again.json()["items"] == items
    await service.rebuild_stages(db)
    again = await client.get(
        "/api/v1/analytics/daily",
        params={"date_from": DAY, "date_to": "2026-11-11"},
        headers=auth(keys["finance"]),
    )
    assert again.json()["items"] == items
