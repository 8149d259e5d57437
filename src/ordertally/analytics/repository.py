"""Every query of the analytics domain: the daily tally, order timelines, business events and
requirements, and the stage and KPI aggregates over the timelines."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics.models import (
    FulfillmentEvent,
    FulfillmentRequirement,
    OrderDailyTally,
    OrderTimeline,
)
from ordertally.core.db import dialect_of, upsert_insert
from ordertally.exceptions.models import ExceptionCase

T = OrderTimeline


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
    locked in the order given (each key once)."""
    if not rows:
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


async def tallies(session: AsyncSession) -> list[OrderDailyTally]:
    """Every tally row."""
    rows = await session.scalars(
        select(OrderDailyTally).order_by(
            OrderDailyTally.day_date, OrderDailyTally.channel, OrderDailyTally.currency
        )
    )
    return list(rows.all())


async def clear_read_models(session: AsyncSession) -> None:
    """Empty the tally and the timelines (before a rebuild from the event log)."""
    await session.execute(delete(OrderDailyTally))
    await session.execute(delete(OrderTimeline))


# --- timelines ------------------------------------------------------------------------------


async def upsert_created(session: AsyncSession, values: dict[str, Any]) -> None:
    """An order's timeline from its creation (a status event seen first left a stub)."""
    stmt = upsert_insert(session, T).values(**values)
    keep = {k: stmt.excluded[k] for k in ("channel", "currency", "total_minor", "day_date")}
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["order_id"],
            set_={**keep, "created_at": func.coalesce(T.created_at, stmt.excluded.created_at)},
        )
    )


async def set_first(
    session: AsyncSession, order_id: int, order_no: str, values: dict[str, Any]
) -> None:
    """Set stage times the first time they happen (a replayed or later event keeps the first),
    and plain values (warehouse, carrier) as given."""
    stmt = upsert_insert(session, T).values(order_id=order_id, order_no=order_no, **values)
    set_ = {
        k: (
            func.coalesce(getattr(T, k), stmt.excluded[k])
            if k.endswith("_at")
            else stmt.excluded[k]
        )
        for k in values
    }
    await session.execute(stmt.on_conflict_do_update(index_elements=["order_id"], set_=set_))


async def timeline(session: AsyncSession, order_no: str) -> OrderTimeline | None:
    """One order's timeline."""
    return await session.scalar(select(T).where(T.order_no == order_no))


async def set_start(
    session: AsyncSession, order_no: str, start: datetime | None, ship_by: datetime | None
) -> None:
    """Record when fulfilment could start and the ship-by deadline."""
    row = await timeline(session, order_no)
    if row is not None:
        row.fulfillment_start_at = start
        row.ship_by_at = ship_by
        await session.flush()


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
) -> list[dict[str, Any]]:
    """Per dimension value: orders through the stage, avg/p50/p90 seconds, share over SLA.

    Orders are those created in [since, until) that reached both ends of the stage.
    """
    start, end = getattr(T, start_col), getattr(T, end_col)
    seconds = _seconds(session, start, end)
    dim = _dimension(dimension).label("dim")
    where = (T.created_at >= since, T.created_at < until, start.is_not(None), end.is_not(None))
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


async def daily(session: AsyncSession, since_day: str, until_day: str) -> list[dict[str, Any]]:
    """Orders, amounts and paid orders per local day, channel and currency."""
    stmt = (
        select(
            T.day_date,
            T.channel,
            T.currency,
            func.count(),
            func.sum(T.total_minor),
            func.count(T.paid_at),
        )
        .where(T.day_date >= since_day, T.day_date <= until_day, T.created_at.is_not(None))
        .group_by(T.day_date, T.channel, T.currency)
        .order_by(T.day_date, T.channel, T.currency)
    )
    return [
        {
            "day": d,
            "channel": c,
            "currency": cur,
            "orders": n,
            "total_minor": int(s or 0),
            "paid": p,
        }
        for d, c, cur, n, s, p in (await session.execute(stmt)).all()
    ]


async def ship_deadline_misses(
    session: AsyncSession, dimension: str, since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """Per dimension value: (shipped orders with a ship-by deadline, shipped after it)."""
    dim = _dimension(dimension).label("dim")
    stmt = (
        select(dim, func.count(), func.count().filter(T.shipped_at > T.ship_by_at))
        .where(
            T.created_at >= since,
            T.created_at < until,
            T.shipped_at.is_not(None),
            T.ship_by_at.is_not(None),
        )
        .group_by(dim)
    )
    return {k: (n, late) for k, n, late in (await session.execute(stmt)).all()}


Stage = tuple[str, str, str, float]  # name, from column, to column, SLA seconds


async def stages_stats(
    session: AsyncSession, stages: list[Stage], dimension: str, since: datetime, until: datetime
) -> dict[str, list[dict[str, Any]]]:
    """`stage_stats` for several stages; on PostgreSQL in one scan of the period's timelines
    (aggregates skip the orders that have not reached both ends of a stage)."""
    if dialect_of(session) != "postgresql":
        return {
            name: await stage_stats(session, a, b, sla, dimension, since, until)
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
        .where(T.created_at >= since, T.created_at < until)
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


async def stages_delay_causes(
    session: AsyncSession, stages: list[Stage], dimension: str, since: datetime, until: datetime
) -> dict[str, list[tuple[str, str, int]]]:
    """`delay_causes` for several stages in one query driven by the exception cases (few
    orders have one): (dimension value, exception type, orders over the stage's SLA)."""
    dim = _dimension(dimension).label("dim")
    durations = [_seconds(session, getattr(T, a), getattr(T, b)) for _, a, b, _ in stages]
    stmt = (
        select(dim, ExceptionCase.type, T.order_id, *durations)
        .select_from(ExceptionCase)
        .join(T, T.order_id == ExceptionCase.order_id)
        .where(T.created_at >= since, T.created_at < until)
        .distinct()
    )
    counts: dict[tuple[str, str, str], int] = {}
    for row in (await session.execute(stmt)).all():
        for (name, _, _, sla), seconds in zip(stages, row[3:], strict=True):
            if seconds is not None and float(seconds) > sla:
                counts[(name, row[0], row[1])] = counts.get((name, row[0], row[1]), 0) + 1
    out: dict[str, list[tuple[str, str, int]]] = {name: [] for name, *_ in stages}
    for (name, key, kind), n in sorted(counts.items()):
        out[name].append((key, kind, n))
    return out


async def upsert_created_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """`upsert_created` for many orders in one statement (one row per order)."""
    if not rows:
        return
    stmt = upsert_insert(session, T).values(rows)
    keep = {k: stmt.excluded[k] for k in ("channel", "currency", "total_minor", "day_date")}
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["order_id"],
            set_={**keep, "created_at": func.coalesce(T.created_at, stmt.excluded.created_at)},
        )
    )


async def set_first_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """`set_first` for many orders in one statement; every row has the same keys (one row per
    order)."""
    if not rows:
        return
    stmt = upsert_insert(session, T).values(rows)
    set_ = {
        k: (
            func.coalesce(getattr(T, k), stmt.excluded[k])
            if k.endswith("_at")
            else stmt.excluded[k]
        )
        for k in rows[0]
        if k not in ("order_id", "order_no")
    }
    await session.execute(stmt.on_conflict_do_update(index_elements=["order_id"], set_=set_))


async def with_requirement(session: AsyncSession, order_nos: list[str]) -> set[str]:
    """Which of these orders have a fulfilment requirement."""
    rows = await session.scalars(
        select(FulfillmentRequirement.order_no).where(
            FulfillmentRequirement.order_no.in_(order_nos)
        )
    )
    return set(rows.all())


async def start_at_payment(session: AsyncSession, order_nos: list[str]) -> None:
    """Orders that wait for no business event start at their payment."""
    if order_nos:
        await session.execute(
            update(T)
            .where(T.order_no.in_(order_nos), T.paid_at.is_not(None))
            .values(fulfillment_start_at=T.paid_at)
        )
