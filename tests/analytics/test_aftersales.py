"""After-sales analytics on both databases (issue 19, ADR 0040): cases walked through the real
after-sales services at chosen times, events delivered by the real dispatcher, the stage and
KPI figures read over HTTP and recomputed with plain SQL from the after-sales tables and the
orders' audit trail; rebuilt identically from the event log; unmoved by replayed and
out-of-order events; channel-scoped."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text

from ordertally.aftersales import goods, refunds
from ordertally.aftersales import service as aftersales_service
from ordertally.aftersales.schemas import CaseCreate, Inspection, ParcelIn
from ordertally.aftersales.state_machine import TRANSITIONS
from ordertally.analytics import aftersale, aftersale_rows, histogram, service
from ordertally.auth import service as auth_service
from ordertally.core import clock
from ordertally.core.db import Database, UtcDateTime
from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.events.dispatcher import drain
from ordertally.events.outbox import publish
from ordertally.exports import service as exports_service
from ordertally.exports.schemas import ExportIn
from tests.analytics.test_timeliness import _order
from tests.conftest import TEST_WAREHOUSE
from tests.factories import auth

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 10, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai
DAY = "2026-11-10"
PERIOD = {"date_from": DAY, "date_to": DAY}
SHIP = [0.2, 1, 1, 2]  # paid, allocated, picking, shipped: hours after the previous step


async def _step(db: Database, at: datetime, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with clock.frozen(at):
        async with db.transaction() as session:
            return await fn(session, *args, **kwargs)


async def _open(db: Database, at: datetime, **body: Any) -> str:
    case, _ = await _step(
        db, at, aftersales_service.open_case, CaseCreate.model_validate(body), "cs"
    )
    return str(case.case_no)


async def _cases(db: Database) -> dict[str, str]:
    """Orders shipped on two channels and four cases walked at chosen times: a refund-only
    case refunded and closed, a return received, inspected, refunded and closed, a rejected
    request, and a two-SKU return still waiting for its parcel (refunded first, an odd amount
    split over its SKUs)."""
    orders = [
        await _order(db, T0 + timedelta(minutes=i), SHIP, channel=("douyin", "jd")[i % 2])
        for i in range(6)
    ]
    t = T0 + timedelta(hours=6)  # 15:00 local, every order shipped
    made: dict[str, str] = {}
    # douyin: refund only, decided in 1 h (merchant), refunded at 3 h, closed at 5 h
    made["refund_only"] = no = await _open(
        db,
        t,
        order_no=orders[0].order_no,
        type="refund_only",
        reason_code="not_wanted",
        refund_goods="10.00",
    )
    await _step(
        db, t + timedelta(hours=1), aftersales_service.approve, no, "cs", responsibility="merchant"
    )
    await _step(db, t + timedelta(hours=3), refunds.record_platform_refund, no, "P-1", 1000, "t")
    await _step(db, t + timedelta(hours=5), aftersales_service.close, no, "cs")
    # jd: return of 2 teas, decided in 2 h (carrier), back at 50 h, inspected at 75 h (over
    # its 24 h), refunded at 80 h, closed at 81 h
    made["return"] = no = await _open(
        db,
        t + timedelta(minutes=5),
        order_no=orders[1].order_no,
        type="return_refund",
        reason_code="damaged",
        lines=[{"line_no": 1, "quantity": 2}],
        refund_goods="119.80",
    )
    await _step(
        db, t + timedelta(hours=2), aftersales_service.approve, no, "cs", responsibility="carrier"
    )
    await _step(
        db,
        t + timedelta(hours=50),
        goods.receive_parcel,
        ParcelIn(warehouse=TEST_WAREHOUSE, case_no=no),
        "wh",
    )
    await _step(
        db,
        t + timedelta(hours=75),
        goods.inspect,
        no,
        Inspection.model_validate(
            {
                "warehouse": TEST_WAREHOUSE,
                "lines": [{"line_no": 1, "good": 1, "damaged": 1, "reason": "crushed"}],
            }
        ),
        "wh",
    )
    await _step(db, t + timedelta(hours=80), refunds.record_platform_refund, no, "P-2", 11980, "t")
    await _step(db, t + timedelta(hours=81), aftersales_service.close, no, "cs")
    # douyin: rejected after 30 h (over the 24 h to decide)
    made["rejected"] = no = await _open(
        db,
        t + timedelta(minutes=10),
        order_no=orders[2].order_no,
        type="return_refund",
        reason_code="not_wanted",
        lines=[{"line_no": 2, "quantity": 1}],
        refund_goods="39.90",
    )
    await _step(db, t + timedelta(hours=30), aftersales_service.reject, no, "cs")
    # jd: a return of one tea and one cup, refunded first (33.33: 16.67 + 16.66), no parcel yet
    made["open"] = no = await _open(
        db,
        t + timedelta(minutes=15),
        order_no=orders[3].order_no,
        type="return_refund",
        reason_code="damaged",
        lines=[{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 1}],
        refund_goods="33.33",
    )
    await _step(db, t + timedelta(hours=4), aftersales_service.approve, no, "cs")
    await _step(db, t + timedelta(hours=5), refunds.record_platform_refund, no, "P-4", 3333, "t")
    await drain(db, get_settings())
    return made


# --- plain SQL over the after-sales domain's tables and the orders' audit trail -------------

_REACHED = """
    SELECT c.case_no, c.channel, c.type, coalesce(c.responsibility, '') AS responsibility,
           e.to_status, min(e.occurred_at) AS at
    FROM aftersale_case c JOIN aftersale_event e ON e.case_id = c.id
    GROUP BY c.case_no, c.channel, c.type, c.responsibility, e.to_status
"""
_KPI_BY = {
    "channel": "c.channel",
    "responsibility": "coalesce(c.responsibility, '')",
    "type": "c.type",
}
_KPI_SQL = """
    SELECT {key} AS k, count(*) AS cases,
           coalesce(sum((SELECT sum(l.quantity) FROM aftersale_line l WHERE l.case_id = c.id)), 0),
           coalesce(sum((SELECT sum(r.amount_minor) FROM aftersale_refund r
                         WHERE r.case_id = c.id AND r.state = 'succeeded')), 0)
    FROM aftersale_case c GROUP BY {key}
"""
# Per SKU: cases naming it, its units, and the refunds split over each case's lines by units
# (largest remainder, the earlier line first on a tie).
_SKU_SQL = """
    WITH refunded AS (
        SELECT case_id, CAST(sum(amount_minor) AS bigint) AS amount FROM aftersale_refund
        WHERE state = 'succeeded' GROUP BY case_id
    ), lines AS (
        SELECT l.case_id, l.line_no, l.sku, l.quantity, coalesce(r.amount, 0) AS amount,
               CAST(sum(l.quantity) OVER (PARTITION BY l.case_id) AS bigint) AS total
        FROM aftersale_line l LEFT JOIN refunded r ON r.case_id = l.case_id
    ), shares AS (
        SELECT *, amount * quantity / total AS base,
               amount * quantity % total AS remainder
        FROM lines
    ), ranked AS (
        SELECT *, amount - sum(base) OVER (PARTITION BY case_id) AS left_over,
               row_number() OVER (PARTITION BY case_id ORDER BY remainder DESC, line_no) AS rk
        FROM shares
    )
    SELECT sku, count(DISTINCT case_id), sum(quantity),
           sum(base + CASE WHEN rk <= left_over THEN 1 ELSE 0 END)
    FROM ranked GROUP BY sku
"""
_SHIPPED_SQL = """
    SELECT o.channel, count(DISTINCT o.id),
           sum((SELECT sum(l.quantity) FROM order_line l WHERE l.order_id = o.id))
    FROM sales_order o
    WHERE o.id IN (SELECT order_id FROM order_event WHERE to_status = 'shipped')
    GROUP BY o.channel
"""


async def _plain(db: Database, sql: str, **types: Any) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        stmt = text(sql)
        if types:
            stmt = stmt.columns(**types)
        return [tuple(r) for r in (await session.execute(stmt)).all()]


async def _read_model(db: Database) -> dict[str, Any]:
    """Every after-sales row analytics keeps (timelines, KPI rows, after-sales stage rows,
    shipped rows), read with plain SQL."""
    names = ", ".join(f"'{n}'" for n in aftersale_rows.AS_STAGE_NAMES)
    return {
        "timelines": sorted(
            await _plain(
                db,
                "SELECT case_no, channel, type, responsibility, day_date, units,"
                " refunded_minor FROM aftersale_timeline",
            )
        ),
        "kpi": sorted(
            await _plain(
                db,
                "SELECT * FROM aftersale_daily_stat WHERE cases <> 0"
                " OR units <> 0 OR refund_minor <> 0",
            )
        ),
        "stages": sorted(
            await _plain(
                db,
                "SELECT dimension, day_date, channel, stage, dim_key, bucket, orders,"
                f" sum_us, over_sla FROM stage_daily_stat WHERE stage IN ({names})"
                " AND orders <> 0",
            )
        ),
        "shipped": sorted(await _plain(db, "SELECT * FROM shipped_daily_stat WHERE orders <> 0")),
    }


def _cny(minor: int) -> str:
    return str((Decimal(minor) / 100).quantize(Decimal("0.01")))


def _disc(values: list[int], q: float) -> float:
    values = sorted(values)
    return values[max(1, math.ceil(q * len(values))) - 1] / 1_000_000


async def test_after_sales_stages_and_kpis_equal_plain_sql_and_survive_a_rebuild(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given six shipped orders on douyin and jd and four cases walked at chosen times
    made = await _cases(db)
    # When the after-sales stage table is read by channel
    r = await client.get(
        "/api/v1/analytics/aftersale-stages",
        params={**PERIOD, "by": "channel"},
        headers=auth(keys["ops"]),
    )
    assert r.status_code == 200, r.text
    table = {(i["stage"], i["channel"]): i for i in r.json()["items"]}
    # Then per stage and channel the cases, average and share over the SLA equal those
    # recomputed from the cases' audit trail with plain SQL, p50/p90 within the bucket error
    reached: dict[str, dict[str, Any]] = {}
    for case_no, channel, kind, resp, status, when in await _plain(db, _REACHED, at=UtcDateTime()):
        reached.setdefault(case_no, {"channel": channel, "type": kind, "resp": resp})[status] = when
    ends = {
        "requested_at": ("requested",),
        "approved_at": ("approved",),
        "decided_at": ("approved", "rejected"),
        "returned_at": ("returned",),
        "inspected_at": ("inspected",),
        "refunded_at": ("refunded",),
        "resolved_at": ("refunded", "reshipped", "exchanged"),
        "closed_at": ("closed",),
    }

    def at(case: dict[str, Any], column: str) -> datetime | None:
        found = [case[s] for s in ends[column] if s in case]
        return min(found) if found else None

    checked = 0
    for name, start, end, sla_us in aftersale_rows.AS_TRACKED:
        for channel in ("douyin", "jd"):
            durations = [
                histogram.micros(a, b)
                for c in reached.values()
                if c["channel"] == channel
                and (a := at(c, start)) is not None
                and (b := at(c, end)) is not None
            ]
            if not durations:
                assert (name, channel) not in table
                continue
            got = table[(name, channel)]
            over = sum(1 for d in durations if d > sla_us)
            assert (got["cases"], got["avg_hours"], got["over_sla_share"]) == (
                len(durations),
                round(sum(durations) / len(durations) / 3.6e9, 4),
                round(over / len(durations), 4),
            )
            for q, field in ((0.5, "p50_hours"), (0.9, "p90_hours")):
                exact = _disc(durations, q) / 3600
                assert abs(got[field] - exact) <= exact * histogram.RELATIVE_ERROR + 1e-4
            checked += 1
    # decided: both channels; approved → returned, returned → inspected/refunded: jd; resolved
    # and closed: both
    assert checked == 9
    assert table[("as_requested_to_decided", "douyin")]["over_sla_share"] == 0.5  # rejected at 30 h
    assert table[("as_returned_to_inspected", "jd")]["over_sla_share"] == 1.0  # 25 h

    # When the KPIs are read by channel, responsibility, type and SKU
    async def kpis(by: str, key: str = "ops", **params: str) -> list[dict[str, Any]]:
        r = await client.get(
            "/api/v1/analytics/aftersale-kpis",
            params={**PERIOD, "by": by, **params},
            headers=auth(keys.get(key, key)),
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    shipped = {ch: (int(n), int(u)) for ch, n, u in await _plain(db, _SHIPPED_SQL)}
    assert shipped == {"douyin": (3, 9), "jd": (3, 9)}
    # Then cases, units and refunds (exact decimals) equal plain SQL's, and the rates divide
    # by what was shipped on those days (by channel: that channel's; otherwise everything)
    for by in ("channel", "responsibility", "type"):
        expected = {
            k: (int(n), int(u), int(r))
            for k, n, u, r in await _plain(db, _KPI_SQL.format(key=_KPI_BY[by]))
        }
        got = {i[by]: i for i in await kpis(by)}
        assert set(got) == set(expected) | (set(shipped) if by == "channel" else set())
        for k, (n, u, refund) in expected.items():
            orders, units = shipped[k] if by == "channel" else (6, 18)
            assert (got[k]["cases"], got[k]["units"], got[k]["shipped_orders"]) == (n, u, orders)
            assert got[k]["case_rate"] == round(n / orders, 4)
            assert got[k]["unit_rate"] == round(u / units, 4)
            assert got[k]["refunds"] == (
                [{"currency": "CNY", "amount": _cny(refund), "amount_minor": refund}]
                if refund
                else []
            )
    by_sku = {i["sku"]: i for i in await kpis("sku")}
    for sku, n, u, refund in await _plain(db, _SKU_SQL):
        assert (by_sku[sku]["cases"], by_sku[sku]["units"]) == (int(n), int(u))
        assert sum(r["amount_minor"] for r in by_sku[sku]["refunds"]) == int(refund)
    # the 33.33 refund split over one tea and one cup: 16.67 and 16.66; the refund-only case
    # (no lines) under the SKU ""
    assert [r["amount"] for r in by_sku["TEA-LJ-250"]["refunds"]] == ["136.47"]  # 119.80+16.67
    assert [r["amount"] for r in by_sku["CUP-CER-01"]["refunds"]] == ["16.66"]
    assert (by_sku[""]["cases"], by_sku[""]["refunds"][0]["amount"]) == (1, "10.00")
    assert (by_sku["TEA-LJ-250"]["shipped_units"], by_sku["CUP-CER-01"]["shipped_units"]) == (
        12,
        6,
    )
    [overall] = await kpis("all")
    assert (overall["cases"], overall["units"], overall["refunds"][0]["amount"]) == (
        4,
        5,
        "163.13",
    )
    assert made["open"] in {t[0] for t in (await _read_model(db))["timelines"]}
    # And the rows behind them export through the exporter: one line per case, the refunds
    # summed per currency as the KPIs say
    for fmt in ("csv", "xlsx"):
        async with db.transaction() as session:
            queued = await exports_service.request_export(
                session,
                ExportIn(template="aftersale_timelines", format=fmt, **PERIOD),
                exports_service.Requester("fin-1", "finance", "203.0.113.7"),
            )
        claimed = await exports_service.claim(db, queued.export_no)
        assert claimed is not None
        manifest = await exports_service.run_export(db, claimed)
        assert (manifest["row_count"], manifest["sums"]) == (4, {"CNY": "163.13"})
    body = (exports_service.export_dir() / f"{queued.export_no}.xlsx").read_bytes()
    assert body[:2] == b"PK"

    # And the "*" rows (every channel) are the channels' sums
    before = await _read_model(db)
    for table, width in (("kpi", 5), ("shipped", 4)):
        summed: dict[tuple[Any, ...], list[int]] = {}
        everyone: dict[tuple[Any, ...], list[int]] = {}
        for row in before[table]:
            key = (row[0], row[1], *row[3:width])
            into = everyone if row[2] == "*" else summed
            sums = into.get(key, [0] * (len(row) - width))
            into[key] = [a + int(b) for a, b in zip(sums, row[width:], strict=True)]
        assert summed == everyone and everyone
    # When everything is rebuilt from the event log
    assert await service.rebuild(db) > 0
    assert await aftersale.rebuild(db) > 0
    # Then every row is the same
    assert await _read_model(db) == before


async def test_replayed_and_out_of_order_after_sales_events_move_nothing(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given the cases above, their rows kept by the consumer
    made = await _cases(db)
    before = await _read_model(db)
    # When old events are delivered again, newest first, with stale payloads (a duplicate
    # request and an approval "from" a status long gone)
    async with db.transaction(write=False) as session:
        log = await events_service.replay_log(
            session, list(aftersale_rows.AFTERSALE_EVENTS), 0, 1000
        )
    assert len(log) > 10
    async with db.transaction() as session:
        for _, event in reversed(log):
            await publish(
                session,
                event.type,
                event.payload,
                aggregate_type="aftersale",
                aggregate_id=event.aggregate_id,
            )
    await drain(db, get_settings())
    # Then no row moved
    assert await _read_model(db) == before
    # When the open case's parcel finally comes back and is inspected (a late change)
    no = made["open"]
    t = T0 + timedelta(hours=100)
    await _step(db, t, goods.receive_parcel, ParcelIn(warehouse=TEST_WAREHOUSE, case_no=no), "w")
    await _step(
        db,
        t + timedelta(hours=1),
        goods.inspect,
        no,
        Inspection.model_validate(
            {
                "warehouse": TEST_WAREHOUSE,
                "responsibility": "supplier",
                "lines": [
                    {"line_no": 1, "good": 1, "damaged": 0},
                    {"line_no": 2, "good": 1, "damaged": 0},
                ],
            }
        ),
        "w",
    )
    await drain(db, get_settings())
    # Then the case moved from "no one responsible" to the supplier, and gained its stages
    after = await _read_model(db)
    by_resp = {
        (key, currency): (int(n), int(u), int(r))
        for dimension, _, channel, key, currency, n, u, r in after["kpi"]
        if dimension == "responsibility" and channel == "*"  # every channel's
    }
    assert by_resp[("supplier", "CNY")] == (1, 2, 3333)
    assert by_resp[("", "CNY")] == (1, 1, 0)  # the rejected request only
    r = await client.get(
        "/api/v1/analytics/aftersale-stages",
        params={**PERIOD, "by": "responsibility"},
        headers=auth(keys["ops"]),
    )
    inspected = [i for i in r.json()["items"] if i["stage"] == "as_returned_to_inspected"]
    assert [(i["responsibility"], i["cases"]) for i in inspected] == [
        ("carrier", 1),
        ("supplier", 1),
    ]
    # And a rebuild from the event log agrees with the incremental rows
    await aftersale.rebuild(db)
    assert await _read_model(db) == after


async def test_after_sales_figures_under_a_channel_scope(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given the cases on douyin and jd, and an ops key scoped to jd
    await _cases(db)
    async with db.transaction() as session:
        _, jd_key = await auth_service.create_api_key(session, "ops-jd", "ops", channels=["jd"])

    async def get(path: str, key: str, **params: str) -> Any:
        return await client.get(
            f"/api/v1/analytics/{path}", params={**PERIOD, **params}, headers=auth(key)
        )

    # When the scoped key reads the KPIs and the stage table by channel
    kpis = (await get("aftersale-kpis", jd_key, by="channel")).json()["items"]
    stages = (await get("aftersale-stages", jd_key, by="channel")).json()["items"]
    # Then it sees jd only
    assert [(i["channel"], i["cases"], i["shipped_orders"]) for i in kpis] == [("jd", 2, 3)]
    assert {i["channel"] for i in stages} == {"jd"}
    overall = (await get("aftersale-kpis", jd_key)).json()["items"]
    assert [(i["cases"], i["shipped_orders"]) for i in overall] == [(2, 3)]
    # When it names another channel, or an unknown dimension, or a reversed period
    other = await get("aftersale-kpis", jd_key, channel="douyin")
    bad_by = await get("aftersale-kpis", keys["ops"], by="warehouse")
    reversed_ = await client.get(
        "/api/v1/analytics/aftersale-stages",
        params={"date_from": "2026-11-11", "date_to": DAY},
        headers=auth(keys["ops"]),
    )
    # Then 403 analytics.out_of_scope, 422, and 422 analytics.invalid
    assert (other.status_code, other.json()["code"]) == (403, "analytics.out_of_scope")
    assert bad_by.status_code == 422
    assert (reversed_.status_code, reversed_.json()["code"]) == (422, "analytics.invalid")
    # And an unscoped caller narrowing to one channel gets that channel's figures
    one = (await get("aftersale-kpis", keys["ops"], channel="douyin")).json()["items"]
    assert [(i["cases"], i["shipped_orders"]) for i in one] == [(2, 3)]


def test_the_consumer_listens_to_every_after_sales_event() -> None:
    # Given the after-sales state table's events, the request and the refund confirmation
    published = {t.event_type for t in TRANSITIONS} | {
        "AftersaleRequested",
        "AftersaleRefundConfirmed",
    }
    # Then the analytics consumer folds each of them
    assert set(aftersale_rows.AFTERSALE_EVENTS) == published


def test_refund_split_is_exact_and_stable() -> None:
    # Given odd amounts over lines of different units
    for amount, lines, shares in (
        (3333, [["A", 1], ["B", 1]], [1667, 1666]),
        (100, [["A", 1], ["B", 1], ["C", 1]], [34, 33, 33]),
        (1000, [["A", 3], ["B", 1]], [750, 250]),
        (7, [["A", 0]], [0]),
    ):
        # Then the shares add up to the amount (or nothing for no units), larger remainders
        # first, the earlier line on a tie
        assert aftersale_rows.refund_split(amount, lines) == shares
