"""Every query of the analytics domain: the daily tally, order timelines, business events and
requirements, and the stage and KPI aggregates over the timelines."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics.histogram import ALL_CHANNELS, BOUNDS, TRACKED, StatKey
from ordertally.analytics.models import (
    AftersaleDailyStat,
    AftersaleTimeline,
    FulfillmentEvent,
    FulfillmentRequirement,
    OrderDailyPaid,
    OrderDailyTally,
    OrderTimeline,
    ShippedDailyStat,
    StageDailyStat,
    StageDelayStat,
)
from ordertally.core.db import dialect_of, upsert_insert
from ordertally.exceptions.models import ExceptionCase

T = OrderTimeline
S = StageDailyStat
D = StageDelayStat
P = OrderDailyPaid
# Rows per multi-row statement: under the drivers' 32,767 bind parameters at 17 columns.
CHUNK = 1000


async def add_to_tally(
    session: AsyncSession, day_date: str, channel: str, currency: str, total_minor: int
) -> None:
    """Add one order to its day's tally (upsert)."""
    stmt = upsert_insert(session, OrderDailyTally).values(
        day_date=day_date,
        channel=channel,
        currency=currency,
        orders_count=1,
        total_minor=total_minor,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["day_date", "channel", "currency"],
        set_={
            "orders_count": OrderDailyTally.orders_count + 1,
            "total_minor": OrderDailyTally.total_minor + total_minor,
        },
    )
    await session.execute(stmt)


async def add_many_to_tally(
    session: AsyncSession, rows: list[tuple[str, str, str, int, int]]
) -> None:
    """Add (day, channel, currency, orders, total) sums to the tally in one upsert; the rows are
    locked in the order given (each key once). On PostgreSQL from arrays: one prepared
    statement whatever the batch's size."""
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        await session.execute(
            text(_ADD_TO_TALLY),
            {name: [r[i] for r in rows] for i, name in enumerate(("d", "ch", "cur", "n", "t"))},
        )
        return
    stmt = upsert_insert(session, OrderDailyTally).values(
        [
            {
                "day_date": day_date,
                "channel": channel,
                "currency": currency,
                "orders_count": count,
                "total_minor": total,
            }
            for day_date, channel, currency, count, total in rows
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["day_date", "channel", "currency"],
        set_={
            "orders_count": OrderDailyTally.orders_count + stmt.excluded.orders_count,
            "total_minor": OrderDailyTally.total_minor + stmt.excluded.total_minor,
        },
    )
    await session.execute(stmt)


_ADD_TO_TALLY = """
    INSERT INTO order_daily_tally (day_date, channel, currency, orders_count, total_minor)
    SELECT day_date, channel, currency, orders_count, total_minor FROM unnest(
        CAST(:d AS text[]), CAST(:ch AS text[]), CAST(:cur AS text[]), CAST(:n AS int[]),
        CAST(:t AS bigint[])
    ) WITH ORDINALITY AS u(day_date, channel, currency, orders_count, total_minor, n)
    ORDER BY n
    ON CONFLICT (day_date, channel, currency) DO UPDATE SET
        orders_count = order_daily_tally.orders_count + excluded.orders_count,
        total_minor = order_daily_tally.total_minor + excluded.total_minor
"""


async def tallies(session: AsyncSession) -> list[OrderDailyTally]:
    """Every tally row."""
    rows = await session.scalars(
        select(OrderDailyTally).order_by(
            OrderDailyTally.day_date, OrderDailyTally.channel, OrderDailyTally.currency
        )
    )
    return list(rows.all())


async def clear_read_models(session: AsyncSession) -> None:
    """Empty the tally, the timelines, their stage, delay-cause and paid rows and the shipped
    rows (before a rebuild from the event log; the after-sales stage rows are the after-sales
    rebuild's)."""
    await session.execute(delete(OrderDailyTally))
    await session.execute(delete(OrderTimeline))
    await clear_stage_stats(session)
    await clear_timeline_rows(session)
    await session.execute(delete(ShippedDailyStat))


async def clear_timeline_rows(session: AsyncSession) -> None:
    """Empty the delay-cause and daily paid rows (before they are rebuilt)."""
    await session.execute(delete(StageDelayStat))
    await session.execute(delete(OrderDailyPaid))


# --- timelines ------------------------------------------------------------------------------


async def timeline(session: AsyncSession, order_no: str) -> OrderTimeline | None:
    """One order's timeline."""
    return await session.scalar(select(T).where(T.order_no == order_no))


# --- business events and requirements -------------------------------------------------------


async def upsert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """Record a business event (the same type again replaces its time)."""
    stmt = upsert_insert(session, FulfillmentEvent).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["order_no", "type"],
            set_={
                k: stmt.excluded[k] for k in ("occurred_at", "source", "recorded_by", "recorded_at")
            },
        )
    )


async def events_of(session: AsyncSession, order_no: str) -> dict[str, datetime]:
    """An order's business events: type -> when."""
    rows = await session.execute(
        select(FulfillmentEvent.type, FulfillmentEvent.occurred_at).where(
            FulfillmentEvent.order_no == order_no
        )
    )
    return {t: at for t, at in rows.all()}


async def requirement(session: AsyncSession, order_no: str) -> FulfillmentRequirement | None:
    """What an order's fulfilment waits for, if anything was set."""
    return await session.get(FulfillmentRequirement, order_no)


async def upsert_requirement(session: AsyncSession, values: dict[str, Any]) -> None:
    """Set an order's requirement (replacing an earlier one)."""
    stmt = upsert_insert(session, FulfillmentRequirement).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["order_no"],
            set_={k: stmt.excluded[k] for k in values if k != "order_no"},
        )
    )


# --- aggregates -----------------------------------------------------------------------------


def _seconds(session: AsyncSession, start: Any, end: Any) -> ColumnElement[Any]:
    if dialect_of(session) == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _dimension(name: str) -> Any:
    return {
        "channel": T.channel,
        "warehouse": T.warehouse,
        "carrier": T.carrier,
        "day": T.day_date,
    }.get(name, literal("all"))


def _in_channels(channels: tuple[str, ...] | None) -> tuple[ColumnElement[bool], ...]:
    return () if channels is None else (T.channel.in_(channels),)


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def stage_stats(
    session: AsyncSession,
    start_col: str,
    end_col: str,
    sla_seconds: float,
    dimension: str,
    since: datetime,
    until: datetime,
    channels: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Per dimension value: orders through the stage, avg/p50/p90 seconds, share over SLA.

    Orders are those created in [since, until) that reached both ends of the stage (of the
    given channels only, when given).
    """
    start, end = getattr(T, start_col), getattr(T, end_col)
    seconds = _seconds(session, start, end)
    dim = _dimension(dimension).label("dim")
    where = (
        T.created_at >= since,
        T.created_at < until,
        start.is_not(None),
        end.is_not(None),
        *_in_channels(channels),
    )
    if dialect_of(session) == "postgresql":
        stmt = (
            select(
                dim,
                func.count(),
                func.avg(seconds),
                func.percentile_cont(0.5).within_group(seconds),
                func.percentile_cont(0.9).within_group(seconds),
                func.count().filter(seconds > sla_seconds),
            )
            .where(*where)
            .group_by(dim)
            .order_by(dim)
        )
        return [
            {
                "key": k,
                "orders": n,
                "avg_seconds": float(avg),
                "p50_seconds": float(p50),
                "p90_seconds": float(p90),
                "over_sla": over,
            }
            for k, n, avg, p50, p90, over in (await session.execute(stmt)).all()
        ]
    # SQLite has no percentile aggregate: the (embedded, small) durations are aggregated here.
    groups: dict[str, list[float]] = {}
    for k, s in (await session.execute(select(dim, seconds).where(*where))).all():
        groups.setdefault(k, []).append(float(s))
    return [
        {
            "key": k,
            "orders": len(v),
            "avg_seconds": sum(v) / len(v),
            "p50_seconds": _percentile(sorted(v), 0.5),
            "p90_seconds": _percentile(sorted(v), 0.9),
            "over_sla": sum(1 for s in v if s > sla_seconds),
        }
        for k, v in sorted(groups.items())
    ]


async def daily(
    session: AsyncSession,
    since_day: str,
    until_day: str,
    channels: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Orders, amounts and paid orders per local day, channel and currency: the daily tally
    (orders and amounts, from OrderCreated) with the daily paid rows (kept by the timeline
    consumer), never the timelines themselves."""
    tally = OrderDailyTally
    stmt = (
        select(
            tally.day_date,
            tally.channel,
            tally.currency,
            tally.orders_count,
            tally.total_minor,
            func.coalesce(P.orders, 0),
        )
        .outerjoin(
            P,
            (P.day_date == tally.day_date)
            & (P.channel == tally.channel)
            & (P.currency == tally.currency),
        )
        .where(tally.day_date >= since_day, tally.day_date <= until_day, tally.orders_count > 0)
        .order_by(tally.day_date, tally.channel, tally.currency)
    )
    if channels is not None:
        stmt = stmt.where(tally.channel.in_(channels))
    return [
        {
            "day": d,
            "channel": c,
            "currency": cur,
            "orders": int(n),
            "total_minor": int(s or 0),
            "paid": int(p),
        }
        for d, c, cur, n, s, p in (await session.execute(stmt)).all()
    ]


Stage = tuple[str, str, str, float]  # name, from column, to column, SLA seconds


async def stages_stats(
    session: AsyncSession,
    stages: list[Stage],
    dimension: str,
    since: datetime,
    until: datetime,
    channels: tuple[str, ...] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """`stage_stats` for several stages; on PostgreSQL in one scan of the period's timelines
    (aggregates skip the orders that have not reached both ends of a stage)."""
    if dialect_of(session) != "postgresql":
        return {
            name: await stage_stats(session, a, b, sla, dimension, since, until, channels)
            for name, a, b, sla in stages
        }
    dim = _dimension(dimension).label("dim")
    columns: list[Any] = [dim]
    for _, a, b, sla in stages:
        s = _seconds(session, getattr(T, a), getattr(T, b))
        columns += [
            func.count(s),
            func.avg(s),
            func.percentile_cont(0.5).within_group(s),
            func.percentile_cont(0.9).within_group(s),
            func.count().filter(s > sla),
        ]
    stmt = (
        select(*columns)
        .where(T.created_at >= since, T.created_at < until, *_in_channels(channels))
        .group_by(dim)
        .order_by(dim)
    )
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in stages}
    for row in (await session.execute(stmt)).all():
        for i, (name, *_) in enumerate(stages):
            n, avg, p50, p90, over = row[1 + 5 * i : 6 + 5 * i]
            if n:
                out[name].append(
                    {
                        "key": row[0],
                        "orders": n,
                        "avg_seconds": float(avg),
                        "p50_seconds": float(p50),
                        "p90_seconds": float(p90),
                        "over_sla": over,
                    }
                )
    return out


async def exception_types_of(session: AsyncSession, order_ids: list[int]) -> dict[int, set[str]]:
    """The exception case types each of these orders has (of any status), by order id."""
    found: dict[int, set[str]] = {}
    for start in range(0, len(order_ids), CHUNK):
        rows = await session.execute(
            select(ExceptionCase.order_id, ExceptionCase.type)
            .where(ExceptionCase.order_id.in_(order_ids[start : start + CHUNK]))
            .distinct()
        )
        for order_id, kind in rows.all():
            if order_id is not None:
                found.setdefault(order_id, set()).add(kind)
    return found


async def orders_with_cases_after(session: AsyncSession, after_id: int, limit: int) -> list[int]:
    """A page of the order ids that have an exception case, in order (the delay causes'
    rebuild)."""
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(ExceptionCase.order_id > after_id)
        .distinct()
        .order_by(ExceptionCase.order_id)
        .limit(limit)
    )
    return [i for i in rows.all() if i is not None]


async def delay_rows(
    session: AsyncSession,
    dimension: str,
    since_day: str,
    until_day: str,
    stages: list[str],
    channels: tuple[str, ...] | None,
) -> list[tuple[str, str, str, int]]:
    """(stage, dimension value, exception type, orders over the stage's SLA) summed over the
    local days [since_day, until_day], for the whole shop or the given channels only (the
    stage rows' keys: `stage_buckets`)."""
    key, row_dimension = _row_key(D, dimension)
    k = key.label("k")
    stmt = (
        select(D.stage, k, D.type, func.sum(D.orders))
        .where(
            D.dimension == row_dimension,
            D.day_date >= since_day,
            D.day_date <= until_day,
            D.stage.in_(stages),
            _channel_rows(D.channel, dimension, channels),
        )
        .group_by(D.stage, k, D.type)
        .order_by(D.stage, k, D.type)
    )
    return [
        (stage, str(key_), kind, int(n))
        for stage, key_, kind, n in (await session.execute(stmt)).all()
        if n
    ]


def _row_key(table: Any, dimension: str) -> tuple[Any, str]:
    """The column a stage or delay-cause read groups by and the row dimension it reads ("channel"
    and "day" read the "all" rows)."""
    if dimension in ("channel", "day"):
        return (table.channel if dimension == "channel" else table.day_date), "all"
    if dimension == "all":
        return literal("all"), "all"
    return table.dim_key, dimension


async def with_requirement(session: AsyncSession, order_nos: list[str]) -> set[str]:
    """Which of these orders have a fulfilment requirement."""
    rows = await session.scalars(
        select(FulfillmentRequirement.order_no).where(
            FulfillmentRequirement.order_no.in_(order_nos)
        )
    )
    return set(rows.all())


# --- timelines folded a batch at a time, and the pre-aggregated stage rows -----------------

TIMELINE_COLUMNS = tuple(c.name for c in OrderTimeline.__table__.columns)


async def lock_timelines(
    session: AsyncSession, orders: list[tuple[int, str]]
) -> list[dict[str, Any]]:
    """Every (order_id, order_no)'s timeline, created empty where missing, locked for this
    transaction (in the order given: sorted by the caller) and returned as it stands, in one
    statement (PostgreSQL: arrays, one prepared statement whatever the batch's size; SQLite:
    per CHUNK orders)."""
    if dialect_of(session) == "postgresql":
        rows = await session.execute(
            text(_LOCK_TIMELINES),
            {"ids": [i for i, _ in orders], "nos": [no for _, no in orders]},
        )
        return [dict(r._mapping) for r in rows.all()]
    out: list[dict[str, Any]] = []
    for start in range(0, len(orders), CHUNK):
        part = orders[start : start + CHUNK]
        stmt = upsert_insert(session, T).values([{"order_id": i, "order_no": no} for i, no in part])
        stmt = stmt.on_conflict_do_update(
            index_elements=["order_id"], set_={"order_id": stmt.excluded.order_id}
        ).returning(*T.__table__.columns)
        out += [dict(r._mapping) for r in (await session.execute(stmt)).all()]
    return out


async def write_timelines(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Store whole timeline rows (already locked by `lock_timelines`)."""
    if dialect_of(session) == "postgresql":
        await store_timelines_and_deltas(session, rows, [])
        return
    for start in range(0, len(rows), CHUNK):
        stmt = upsert_insert(session, T).values(rows[start : start + CHUNK])
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["order_id"],
                set_={k: stmt.excluded[k] for k in TIMELINE_COLUMNS if k != "order_id"},
            )
        )


async def lock_timeline(session: AsyncSession, order_no: str) -> dict[str, Any] | None:
    """One order's timeline, locked for this transaction (PostgreSQL), as a dict."""
    stmt = select(*T.__table__.columns).where(T.order_no == order_no)
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return dict(row._mapping) if row is not None else None


async def add_stage_deltas(
    session: AsyncSession, deltas: list[tuple[StatKey, int, int, int]]
) -> None:
    """Add (key, orders, microseconds, over SLA) deltas to the stage rows, in the order given
    (sorted by key: two workers take shared rows in the same order)."""
    if dialect_of(session) == "postgresql":
        await store_timelines_and_deltas(session, [], deltas)
        return
    for start in range(0, len(deltas), CHUNK):
        stmt = upsert_insert(session, S).values(
            [
                {
                    "dimension": dimension,
                    "day_date": day,
                    "channel": channel,
                    "stage": stage,
                    "dim_key": key,
                    "bucket": bucket,
                    "orders": n,
                    "sum_us": us,
                    "over_sla": over,
                }
                for (dimension, day, channel, stage, key, bucket), n, us, over in deltas[
                    start : start + CHUNK
                ]
            ]
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["dimension", "day_date", "channel", "stage", "dim_key", "bucket"],
                set_={
                    "orders": S.orders + stmt.excluded.orders,
                    "sum_us": S.sum_us + stmt.excluded.sum_us,
                    "over_sla": S.over_sla + stmt.excluded.over_sla,
                },
            )
        )


async def stage_buckets(
    session: AsyncSession,
    dimension: str,
    since_day: str,
    until_day: str,
    stages: list[str],
    channels: tuple[str, ...] | None,
) -> list[tuple[str, str, int, int, int, int]]:
    """(stage, dimension value, bucket, orders, microseconds, over SLA) summed over the local
    days [since_day, until_day], for the whole shop or the given channels only."""
    if dimension in ("channel", "day"):
        key: Any = S.channel if dimension == "channel" else S.day_date
        row_dimension = "all"
    elif dimension == "all":
        key, row_dimension = literal("all"), "all"
    else:
        key, row_dimension = S.dim_key, dimension
    where = [
        S.dimension == row_dimension,
        S.day_date >= since_day,
        S.day_date <= until_day,
        S.stage.in_(stages),
    ]
    if channels is not None:
        where.append(S.channel.in_(channels))
    elif dimension == "channel":
        where.append(S.channel != ALL_CHANNELS)
    else:
        where.append(S.channel == ALL_CHANNELS)
    k = key.label("k")
    stmt = (
        select(S.stage, k, S.bucket, func.sum(S.orders), func.sum(S.sum_us), func.sum(S.over_sla))
        .where(*where)
        .group_by(S.stage, k, S.bucket)
        .order_by(S.stage, k, S.bucket)
    )
    return [
        (stage, key_, bucket, int(n), int(us), int(over))
        for stage, key_, bucket, n, us, over in (await session.execute(stmt)).all()
    ]


async def timelines_after(session: AsyncSession, after_id: int, limit: int) -> list[dict[str, Any]]:
    """A page of timelines in order_id order (the stage rows' rebuild on SQLite)."""
    rows = await session.execute(
        select(*T.__table__.columns).where(T.order_id > after_id).order_by(T.order_id).limit(limit)
    )
    return [dict(r._mapping) for r in rows.all()]


async def clear_stage_stats(session: AsyncSession) -> None:
    """Empty the order timelines' stage rows (before they are rebuilt from the timelines)."""
    await session.execute(
        delete(StageDailyStat).where(StageDailyStat.stage.in_([name for name, *_ in TRACKED]))
    )


def _micros_sql(start: str, end: str) -> str:
    return f"(extract(epoch FROM t.{end} - t.{start}) * 1000000)::bigint"


async def stage_row_count(session: AsyncSession) -> int:
    """How many stage rows there are."""
    return int(await session.scalar(select(func.count()).select_from(S)) or 0)


async def rebuild_stage_stats_pg(session: AsyncSession) -> None:
    """The stage rows recomputed from every timeline in two grouping passes on PostgreSQL
    (per day, channel, warehouse, carrier, stage and bucket; then per row key). The buckets
    are `histogram.bucket_of`'s (width_bucket on the same integer bounds)."""
    stages = ", ".join(
        f"('{name}', {_micros_sql(a, b)}, {sla_us}::bigint)" for name, a, b, sla_us in TRACKED
    )
    sql = f"""
        WITH base AS (
            SELECT t.day_date, t.channel, t.warehouse, t.carrier, s.stage,
                   width_bucket(s.us, CAST(:bounds AS bigint[])) AS bucket,
                   count(*) AS n, sum(s.us) AS su, count(*) FILTER (WHERE s.us > s.sla) AS o
            FROM order_timeline t
            CROSS JOIN LATERAL (VALUES {stages}) AS s(stage, us, sla)
            WHERE s.us IS NOT NULL AND t.day_date <> '' AND t.created_at IS NOT NULL
            GROUP BY 1, 2, 3, 4, 5, 6
        )
        INSERT INTO stage_daily_stat
            (dimension, day_date, channel, stage, dim_key, bucket, orders, sum_us, over_sla)
        SELECT d.dimension, b.day_date, c.channel, b.stage, d.dim_key, b.bucket,
               sum(b.n), sum(b.su), sum(b.o)
        FROM base b
        CROSS JOIN LATERAL (VALUES (b.channel), ('{ALL_CHANNELS}')) AS c(channel)
        CROSS JOIN LATERAL (VALUES ('all', 'all'), ('warehouse', b.warehouse),
                                   ('carrier', b.carrier)) AS d(dimension, dim_key)
        GROUP BY 1, 2, 3, 4, 5, 6
    """
    await session.execute(text(sql), {"bounds": list(BOUNDS)})


# PostgreSQL: the batch fold's statements take arrays (unnest), so each is one prepared
# statement reused for every batch: no per-row statement building, no new plan per batch size.
_STAMP_COLUMNS = tuple(c for c in TIMELINE_COLUMNS if c.endswith("_at"))
_TEXT_COLUMNS = (
    "order_no",
    "channel",
    "currency",
    "day_date",
    "warehouse",
    "carrier",
    "exception_types",
)
_LOCK_TIMELINES = f"""
    INSERT INTO order_timeline
        (order_id, order_no, channel, currency, total_minor, day_date, warehouse, carrier,
         exception_types)
    SELECT i, n, '', '', 0, '', '', '', ''
    FROM unnest(CAST(:ids AS bigint[]), CAST(:nos AS text[])) AS u(i, n)
    ORDER BY i
    ON CONFLICT (order_id) DO UPDATE SET order_id = excluded.order_id
    RETURNING {", ".join(TIMELINE_COLUMNS)}
"""
_TIMELINE_ARRAYS = ", ".join(
    [
        "CAST(:order_id AS bigint[])",
        "CAST(:total_minor AS bigint[])",
        *(f"CAST(:{c} AS text[])" for c in _TEXT_COLUMNS),
        *(f"CAST(:{c} AS timestamptz[])" for c in _STAMP_COLUMNS),
    ]
)
_TIMELINE_NAMES = ", ".join(["order_id", "total_minor", *_TEXT_COLUMNS, *_STAMP_COLUMNS])
_STORE = f"""
    WITH written AS (
        UPDATE order_timeline t SET {
    ", ".join(f"{c} = u.{c}" for c in ("total_minor", *_TEXT_COLUMNS, *_STAMP_COLUMNS))
}
        FROM unnest({_TIMELINE_ARRAYS}) AS u({_TIMELINE_NAMES})
        WHERE t.order_id = u.order_id
        RETURNING 1
    ), delays AS (
        INSERT INTO stage_delay_stat
            (dimension, day_date, channel, stage, dim_key, type, orders)
        SELECT * FROM unnest(
            CAST(:d_dimension AS text[]), CAST(:d_day AS text[]), CAST(:d_channel AS text[]),
            CAST(:d_stage AS text[]), CAST(:d_key AS text[]), CAST(:d_type AS text[]),
            CAST(:d_orders AS int[])
        ) AS d(dimension, day_date, channel, stage, dim_key, type, orders)
        ORDER BY dimension, day_date, channel, stage, dim_key, type
        ON CONFLICT (dimension, day_date, channel, stage, dim_key, type) DO UPDATE SET
            orders = stage_delay_stat.orders + excluded.orders
        RETURNING 1
    ), paid AS (
        INSERT INTO order_daily_paid (day_date, channel, currency, orders)
        SELECT * FROM unnest(
            CAST(:p_day AS text[]), CAST(:p_channel AS text[]), CAST(:p_currency AS text[]),
            CAST(:p_orders AS int[])
        ) AS p(day_date, channel, currency, orders)
        ORDER BY day_date, channel, currency
        ON CONFLICT (day_date, channel, currency) DO UPDATE SET
            orders = order_daily_paid.orders + excluded.orders
        RETURNING 1
    ), moves AS (
        SELECT * FROM unnest(
            CAST(:m_order AS bigint[]), CAST(:m_sign AS int[]), CAST(:m_day AS text[]),
            CAST(:m_channel AS text[])
        ) AS m(order_id, sign, day_date, channel)
    ), parts AS (
        SELECT m.sign, m.day_date, m.channel, 'all' AS dimension, 'all' AS dim_key,
            coalesce((SELECT sum(l.quantity) FROM order_line l WHERE l.order_id = m.order_id), 0)
                AS units
        FROM moves m
        UNION ALL
        SELECT m.sign, m.day_date, m.channel, 'sku', l.sku, sum(l.quantity)
        FROM moves m JOIN order_line l ON l.order_id = m.order_id
        GROUP BY m.order_id, m.sign, m.day_date, m.channel, l.sku
    ), shipped AS (
        INSERT INTO shipped_daily_stat (dimension, day_date, channel, dim_key, orders, units)
        SELECT p.dimension, p.day_date, c.channel, p.dim_key, sum(p.sign), sum(p.sign * p.units)
        FROM parts p CROSS JOIN LATERAL (VALUES (p.channel), ('{ALL_CHANNELS}')) AS c(channel)
        GROUP BY p.dimension, p.day_date, c.channel, p.dim_key
        HAVING sum(p.sign) <> 0 OR sum(p.sign * p.units) <> 0
        ORDER BY p.dimension, p.day_date, c.channel, p.dim_key
        ON CONFLICT (dimension, channel, day_date, dim_key) DO UPDATE SET
            orders = shipped_daily_stat.orders + excluded.orders,
            units = shipped_daily_stat.units + excluded.units
        RETURNING 1
    )
    INSERT INTO stage_daily_stat
        (dimension, day_date, channel, stage, dim_key, bucket, orders, sum_us, over_sla)
    SELECT * FROM unnest(
        CAST(:s_dimension AS text[]), CAST(:s_day AS text[]), CAST(:s_channel AS text[]),
        CAST(:s_stage AS text[]), CAST(:s_key AS text[]), CAST(:s_bucket AS smallint[]),
        CAST(:s_orders AS int[]), CAST(:s_us AS bigint[]), CAST(:s_over AS int[])
    ) AS d(dimension, day_date, channel, stage, dim_key, bucket, orders, sum_us, over_sla)
    ORDER BY dimension, day_date, channel, stage, dim_key, bucket
    ON CONFLICT (dimension, day_date, channel, stage, dim_key, bucket) DO UPDATE SET
        orders = stage_daily_stat.orders + excluded.orders,
        sum_us = stage_daily_stat.sum_us + excluded.sum_us,
        over_sla = stage_daily_stat.over_sla + excluded.over_sla
"""

DelayDelta = tuple[Any, ...]  # (dimension, day, channel, stage, key, type), orders
PaidDelta = tuple[Any, ...]  # (day, channel, currency), orders
ShippedMove = tuple[int, int, str, str]  # order_id, -1 (out) or 1 (in), shipped day, channel


async def store_timelines_and_deltas(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    deltas: list[tuple[StatKey, int, int, int]],
    delays: list[DelayDelta] | None = None,
    paid: list[PaidDelta] | None = None,
    shipped: list[ShippedMove] | None = None,
) -> None:
    """Write locked timeline rows and add stage, delay-cause and daily paid deltas: one
    statement on PostgreSQL, each table's rows taken in key order; several on SQLite. On
    PostgreSQL the same statement moves the shipped rows of the orders whose shipped day or
    channel moved (`shipped`: their lines read from `order_line` there, as
    `aftersale_rows.shipped_contribution` counts them); SQLite's caller moves them itself."""
    delays, paid, shipped = delays or [], paid or [], shipped or []
    if dialect_of(session) != "postgresql":
        if shipped:
            raise ValueError("SQLite moves the shipped rows through add_shipped_deltas")
        await write_timelines(session, rows)
        await add_stage_deltas(session, deltas)
        await _upsert_deltas(
            session,
            D,
            ("dimension", "day_date", "channel", "stage", "dim_key", "type"),
            ("orders",),
            delays,
        )
        await _upsert_deltas(session, P, ("day_date", "channel", "currency"), ("orders",), paid)
        return
    params: dict[str, Any] = {
        c: [r[c] for r in rows] for c in ("order_id", "total_minor", *_TEXT_COLUMNS)
    }
    params.update({c: [r[c] for r in rows] for c in _STAMP_COLUMNS})
    keys = [k for k, *_ in deltas]
    for i, name in enumerate(("s_dimension", "s_day", "s_channel", "s_stage", "s_key")):
        params[name] = [k[i] for k in keys]
    params["s_bucket"] = [k[5] for k in keys]
    params["s_orders"] = [d[1] for d in deltas]
    params["s_us"] = [d[2] for d in deltas]
    params["s_over"] = [d[3] for d in deltas]
    for i, name in enumerate(("d_dimension", "d_day", "d_channel", "d_stage", "d_key", "d_type")):
        params[name] = [d[0][i] for d in delays]
    params["d_orders"] = [d[1] for d in delays]
    for i, name in enumerate(("p_day", "p_channel", "p_currency")):
        params[name] = [d[0][i] for d in paid]
    params["p_orders"] = [d[1] for d in paid]
    for i, name in enumerate(("m_order", "m_sign", "m_day", "m_channel")):
        params[name] = [m[i] for m in shipped]
    await session.execute(text(_STORE), params)


async def add_timeline_row_deltas(
    session: AsyncSession, delays: list[DelayDelta], paid: list[PaidDelta]
) -> None:
    """Add delay-cause and daily paid deltas (a rebuild from the timelines)."""
    await store_timelines_and_deltas(session, [], [], delays, paid)


async def timelines_with_cases_after(
    session: AsyncSession, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """A page of the timelines that carry exception case types, in order_id order."""
    rows = await session.execute(
        select(*T.__table__.columns)
        .where(T.order_id > after_id, T.exception_types != "")
        .order_by(T.order_id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows.all()]


async def rebuild_paid_rows(session: AsyncSession) -> None:
    """The daily paid rows recomputed from every timeline in one statement (emptied first)."""
    await session.execute(delete(OrderDailyPaid))
    await session.execute(
        text(
            "INSERT INTO order_daily_paid (day_date, channel, currency, orders)"
            " SELECT day_date, channel, currency, count(*) FROM order_timeline"
            " WHERE day_date <> '' AND created_at IS NOT NULL AND paid_at IS NOT NULL"
            " GROUP BY day_date, channel, currency"
        )
    )


# --- after-sales: case timelines, their stage and KPI rows, the shipped rows (ADR 0040) -----

A = AftersaleTimeline
K = AftersaleDailyStat
SH = ShippedDailyStat
AFTERSALE_COLUMNS = tuple(c.name for c in AftersaleTimeline.__table__.columns)


async def lock_aftersale_timelines(
    session: AsyncSession, case_nos: list[str]
) -> list[dict[str, Any]]:
    """Every case's after-sales timeline, created empty where missing (no day: it counts
    nowhere yet), locked for this transaction in the order given (sorted by the caller) and
    returned as it stands."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(case_nos), CHUNK):
        part = case_nos[start : start + CHUNK]
        stmt = upsert_insert(session, A).values(
            [
                {
                    "case_no": no,
                    "order_no": "",
                    "channel": "",
                    "type": "",
                    "currency": "",
                    "responsibility": "",
                    "day_date": "",
                    "units": 0,
                    "refunded_minor": 0,
                    "lines": [],
                }
                for no in part
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["case_no"], set_={"case_no": stmt.excluded.case_no}
        ).returning(*A.__table__.columns)
        out += [dict(r._mapping) for r in (await session.execute(stmt)).all()]
    return out


async def write_aftersale_timelines(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Store whole after-sales timeline rows (already locked)."""
    for start in range(0, len(rows), CHUNK // 2):
        stmt = upsert_insert(session, A).values(rows[start : start + CHUNK // 2])
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["case_no"],
                set_={k: stmt.excluded[k] for k in AFTERSALE_COLUMNS if k != "case_no"},
            )
        )


_ADD_KPI = """
    INSERT INTO aftersale_daily_stat
        (dimension, day_date, channel, dim_key, currency, cases, units, refund_minor)
    SELECT * FROM unnest(
        CAST(:dimension AS text[]), CAST(:day AS text[]), CAST(:channel AS text[]),
        CAST(:key AS text[]), CAST(:currency AS text[]), CAST(:cases AS int[]),
        CAST(:units AS int[]), CAST(:refund AS bigint[])
    ) AS d(dimension, day_date, channel, dim_key, currency, cases, units, refund_minor)
    ORDER BY dimension, day_date, channel, dim_key, currency
    ON CONFLICT (dimension, day_date, channel, dim_key, currency) DO UPDATE SET
        cases = aftersale_daily_stat.cases + excluded.cases,
        units = aftersale_daily_stat.units + excluded.units,
        refund_minor = aftersale_daily_stat.refund_minor + excluded.refund_minor
"""
_ADD_SHIPPED = """
    INSERT INTO shipped_daily_stat (dimension, day_date, channel, dim_key, orders, units)
    SELECT * FROM unnest(
        CAST(:dimension AS text[]), CAST(:day AS text[]), CAST(:channel AS text[]),
        CAST(:key AS text[]), CAST(:orders AS int[]), CAST(:units AS int[])
    ) AS d(dimension, day_date, channel, dim_key, orders, units)
    ORDER BY dimension, day_date, channel, dim_key
    ON CONFLICT (dimension, day_date, channel, dim_key) DO UPDATE SET
        orders = shipped_daily_stat.orders + excluded.orders,
        units = shipped_daily_stat.units + excluded.units
"""


async def _add_deltas(
    session: AsyncSession,
    model: Any,
    sql: str,
    keys: tuple[str, ...],
    sums: tuple[str, ...],
    deltas: list[tuple[Any, ...]],
) -> None:
    """Add (key, *sums) deltas to additive rows in the order given (sorted by key): arrays
    through one prepared statement on PostgreSQL, multi-row upserts on SQLite."""
    if not deltas:
        return
    if dialect_of(session) == "postgresql":
        # the statement's parameters: the key's, then the sums' (`refund` for refund_minor)
        names = ("dimension", "day", "channel", "key", "currency")[: len(keys)]
        params: dict[str, Any] = {n: [d[0][i] for d in deltas] for i, n in enumerate(names)}
        for i, name in enumerate(sums):
            params[name.removesuffix("_minor")] = [d[1 + i] for d in deltas]
        await session.execute(text(sql), params)
        return
    await _upsert_deltas(session, model, keys, sums, deltas)


async def _upsert_deltas(
    session: AsyncSession,
    model: Any,
    keys: tuple[str, ...],
    sums: tuple[str, ...],
    deltas: list[tuple[Any, ...]],
) -> None:
    """Add (key, *sums) deltas to additive rows with multi-row upserts, in the order given."""
    for start in range(0, len(deltas), CHUNK):
        stmt = upsert_insert(session, model).values(
            [
                {**dict(zip(keys, d[0], strict=True)), **dict(zip(sums, d[1:], strict=True))}
                for d in deltas[start : start + CHUNK]
            ]
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={s: getattr(model, s) + stmt.excluded[s] for s in sums},
            )
        )


async def add_kpi_deltas(session: AsyncSession, deltas: list[tuple[Any, ...]]) -> None:
    """Add ((dimension, day, channel, key, currency), cases, units, refund) deltas to the
    after-sales KPI rows."""
    await _add_deltas(
        session,
        K,
        _ADD_KPI,
        ("dimension", "day_date", "channel", "dim_key", "currency"),
        ("cases", "units", "refund_minor"),
        deltas,
    )


async def add_shipped_deltas(session: AsyncSession, deltas: list[tuple[Any, ...]]) -> None:
    """Add ((dimension, day, channel, key), orders, units) deltas to the shipped rows."""
    await _add_deltas(
        session,
        SH,
        _ADD_SHIPPED,
        ("dimension", "day_date", "channel", "dim_key"),
        ("orders", "units"),
        deltas,
    )


async def clear_aftersale_models(session: AsyncSession, stages: tuple[str, ...]) -> None:
    """Empty the after-sales timelines, their KPI rows and their stage rows (before a
    rebuild from the event log)."""
    await session.execute(delete(AftersaleTimeline))
    await session.execute(delete(AftersaleDailyStat))
    await session.execute(delete(StageDailyStat).where(StageDailyStat.stage.in_(stages)))


async def clear_shipped_stats(session: AsyncSession) -> None:
    """Empty the shipped rows (before they are rebuilt from the timelines)."""
    await session.execute(delete(ShippedDailyStat))


async def aftersale_timelines_after(
    session: AsyncSession, after_no: str, limit: int
) -> list[dict[str, Any]]:
    """A page of after-sales timelines in case number order."""
    rows = await session.execute(
        select(*A.__table__.columns).where(A.case_no > after_no).order_by(A.case_no).limit(limit)
    )
    return [dict(r._mapping) for r in rows.all()]


async def shipped_timelines_after(
    session: AsyncSession, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """A page of shipped orders' (order_id, channel, shipped_at), in order_id order."""
    rows = await session.execute(
        select(T.order_id, T.channel, T.shipped_at)
        .where(T.order_id > after_id, T.shipped_at.is_not(None))
        .order_by(T.order_id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows.all()]


def _channel_rows(column: Any, by: str, channels: tuple[str, ...] | None) -> Any:
    """Which channel rows a read sums: the given channels', each channel's (by channel), or
    the "*" rows (every channel, already summed)."""
    if channels is not None:
        return column.in_(channels)
    return column != ALL_CHANNELS if by == "channel" else column == ALL_CHANNELS


def _kpi_key(table: Any, by: str, dimension_names: tuple[str, ...]) -> tuple[Any, str]:
    """The column a KPI read groups by and the row dimension it reads."""
    if by == "channel":
        return table.channel, "all"
    if by == "day":
        return table.day_date, "all"
    if by in dimension_names:
        return table.dim_key, by
    return literal("all"), "all"


async def aftersale_kpi_rows(
    session: AsyncSession,
    by: str,
    since_day: str,
    until_day: str,
    channels: tuple[str, ...] | None,
) -> list[tuple[str, str, int, int, int]]:
    """(value, currency, cases, units, refund minor) summed over the local days
    [since_day, until_day], of the given channels only when given."""
    key, dimension = _kpi_key(K, by, ("type", "responsibility", "sku"))
    k = key.label("k")
    where = [K.dimension == dimension, K.day_date >= since_day, K.day_date <= until_day]
    where.append(_channel_rows(K.channel, by, channels))
    stmt = (
        select(k, K.currency, func.sum(K.cases), func.sum(K.units), func.sum(K.refund_minor))
        .where(*where)
        .group_by(k, K.currency)
        .order_by(k, K.currency)
    )
    return [
        (str(v), cur, int(n), int(u), int(r))
        for v, cur, n, u, r in (await session.execute(stmt)).all()
    ]


async def shipped_rows(
    session: AsyncSession,
    by: str,
    since_day: str,
    until_day: str,
    channels: tuple[str, ...] | None,
) -> dict[str, tuple[int, int]]:
    """Orders and units shipped per value (by channel, day or SKU; otherwise the whole
    period's under "all") over the local days [since_day, until_day]."""
    key, dimension = _kpi_key(SH, by if by in ("channel", "day", "sku") else "all", ("sku",))
    k = key.label("k")
    where = [SH.dimension == dimension, SH.day_date >= since_day, SH.day_date <= until_day]
    where.append(_channel_rows(SH.channel, by, channels))
    stmt = select(k, func.sum(SH.orders), func.sum(SH.units)).where(*where).group_by(k)
    return {str(v): (int(n), int(u)) for v, n, u in (await session.execute(stmt)).all()}
