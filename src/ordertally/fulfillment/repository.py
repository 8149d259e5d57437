"""Every query of the fulfillment domain: shipments, their lines and their tracking events."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import dialect_of, table_of, upsert_insert
from ordertally.fulfillment.models import Shipment, ShipmentLine, TrackingEvent
from ordertally.fulfillment.state_machine import Transition

# The columns that schedule a shipment's next carrier call; `claim_due` leases by them.
DUE_COLUMNS = frozenset({"next_waybill_at", "next_subscribe_at", "next_poll_at"})


# --- shipments ----------------------------------------------------------------------------------


async def add_shipment(session: AsyncSession, values: dict[str, Any]) -> Shipment:
    """Insert one shipment; returns it with its id."""
    shipment = Shipment(**values)
    session.add(shipment)
    await session.flush()
    return shipment


async def add_shipments(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Shipment]:
    """Insert shipments (one INSERT .. RETURNING for all); returns them with their ids, in
    the order of `rows`."""
    shipments = [Shipment(**values) for values in rows]
    if shipments:
        session.add_all(shipments)
        await session.flush()
    return shipments


async def add_lines(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Insert shipment lines."""
    session.add_all(ShipmentLine(**row) for row in rows)
    await session.flush()


async def get(session: AsyncSession, shipment_id: int) -> Shipment | None:
    """One shipment, read fresh."""
    return await session.get(Shipment, shipment_id, populate_existing=True)


async def get_fresh(session: AsyncSession, shipment_id: int) -> Shipment | None:
    """One shipment, read fresh with a query (after its order row was locked)."""
    return await session.scalar(
        select(Shipment).where(Shipment.id == shipment_id).execution_options(populate_existing=True)
    )


async def order_id_of(session: AsyncSession, shipment_id: int) -> int | None:
    """The order a shipment belongs to."""
    return await session.scalar(select(Shipment.order_id).where(Shipment.id == shipment_id))


async def of_order(session: AsyncSession, order_id: int) -> list[Shipment]:
    """An order's shipments in plan order, read fresh."""
    rows = await session.scalars(
        select(Shipment)
        .where(Shipment.order_id == order_id)
        .order_by(Shipment.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def order_ids_of(session: AsyncSession, shipment_ids: Collection[int]) -> dict[int, int]:
    """{shipment id: order id} of these shipments (the missing ones left out)."""
    rows = await session.execute(
        select(Shipment.id, Shipment.order_id).where(Shipment.id.in_(sorted(shipment_ids)))
    )
    return {int(r.id): int(r.order_id) for r in rows.all()}


async def rows_of_orders(session: AsyncSession, order_ids: Collection[int]) -> list[dict[str, Any]]:
    """Every column of the shipments of these orders as plain dicts (no ORM objects), by order
    then plan order (read after the orders' locks)."""
    table = table_of(Shipment)
    rows = await session.execute(
        select(table)
        .where(table.c.order_id.in_(sorted(order_ids)))
        .order_by(table.c.order_id, table.c.id)
    )
    return [dict(r) for r in rows.mappings().all()]


async def waybill_holders(
    session: AsyncSession, waybill_nos: Collection[str]
) -> list[Row[int, str, str | None]]:
    """(id, company, waybill_no) of the shipments holding these waybill numbers."""
    if not waybill_nos:
        return []
    rows = await session.execute(
        select(Shipment.id, Shipment.company, Shipment.waybill_no).where(
            Shipment.waybill_no.in_(sorted(waybill_nos))
        )
    )
    return list(rows.all())


async def with_tracking_events(session: AsyncSession, shipment_ids: Collection[int]) -> set[int]:
    """Which of these shipments have at least one stored tracking event."""
    if not shipment_ids:
        return set()
    rows = await session.scalars(
        select(TrackingEvent.shipment_id)
        .where(TrackingEvent.shipment_id.in_(sorted(shipment_ids)))
        .distinct()
    )
    return {int(i) for i in rows.all()}


async def waybill_owner(
    session: AsyncSession, company: str, waybill_no: str, other_than: int
) -> int | None:
    """The id of another shipment that has this waybill of this company."""
    return await session.scalar(
        select(Shipment.id).where(
            Shipment.company == company,
            Shipment.waybill_no == waybill_no,
            Shipment.id != other_than,
        )
    )


async def with_waybill(session: AsyncSession, waybill_no: str) -> list[Row[int, str]]:
    """(id, company) of the shipments with this waybill number, whatever the company."""
    rows = await session.execute(
        select(Shipment.id, Shipment.company)
        .where(Shipment.waybill_no == waybill_no)
        .order_by(Shipment.id)
    )
    return list(rows.all())


# (id, company, order_id, waybill_no) of a shipment found by its waybill number.
WaybillMatch = Row[int, str, int, str | None]


async def with_waybills(session: AsyncSession, waybill_nos: Collection[str]) -> list[WaybillMatch]:
    """(id, company, order_id, waybill_no) of the shipments with these waybill numbers, by id."""
    rows = await session.execute(
        select(Shipment.id, Shipment.company, Shipment.order_id, Shipment.waybill_no)
        .where(Shipment.waybill_no.in_(list(waybill_nos)))
        .order_by(Shipment.id)
    )
    return list(rows.all())


async def tracking_heads(session: AsyncSession, shipment_ids: Collection[int]) -> dict[int, Any]:
    """The columns tracking reads of these shipments, by id (read after their orders' locks)."""
    rows = await session.execute(
        select(
            Shipment.id,
            Shipment.status,
            Shipment.carrier,
            Shipment.subscribed_at,
            Shipment.order_no,
            Shipment.shipped_at,
        ).where(Shipment.id.in_(list(shipment_ids)))
    )
    return {r.id: r for r in rows.all()}


async def statuses_of_orders(
    session: AsyncSession, order_ids: Collection[int]
) -> dict[int, list[str]]:
    """{order id: the statuses of its shipments} (read after the orders' locks)."""
    out: dict[int, list[str]] = {}
    if not order_ids:
        return out
    rows = await session.execute(
        select(Shipment.order_id, Shipment.status).where(Shipment.order_id.in_(sorted(order_ids)))
    )
    for r in rows.all():
        out.setdefault(int(r.order_id), []).append(r.status)
    return out


async def update_each(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Set each row's values on the shipment `id` of the row: one executemany per set of
    columns (rows with the same keys go together)."""
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_keys.setdefault(tuple(sorted(row)), []).append(row)
    table = table_of(Shipment)
    for keys, group in by_keys.items():
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({k: bindparam(f"b_{k}") for k in keys if k != "id"})
        )
        await session.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in group])


async def stale_candidates(session: AsyncSession, cutoff: datetime, limit: int) -> list[Shipment]:
    """Shipped before `cutoff`, not a single scan since, not flagged yet."""
    rows = await session.scalars(
        select(Shipment)
        .where(
            Shipment.status == "shipped",
            Shipment.last_event_at.is_(None),
            Shipment.shipped_at <= cutoff,
            Shipment.stale_flagged_at.is_(None),
        )
        .order_by(Shipment.id)
        .limit(limit)
    )
    return list(rows.all())


async def count_stale_flagged(session: AsyncSession) -> int:
    """Shipments still without a scan that were flagged stale."""
    total = await session.scalar(
        select(func.count())
        .select_from(Shipment)
        .where(Shipment.status == "shipped", Shipment.stale_flagged_at.is_not(None))
    )
    return int(total or 0)


async def claim_due(
    session: AsyncSession,
    column: str,
    statuses: Collection[str],
    carrier: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[Shipment]:
    """Shipments of this carrier in these statuses whose `column` is due, leased by moving
    `column` to `lease_until` (SKIP LOCKED on PostgreSQL); returned detached."""
    if column not in DUE_COLUMNS:
        raise ValueError(f"not a due column: {column}")
    due = getattr(Shipment, column)
    stmt = (
        select(Shipment)
        .where(Shipment.status.in_(sorted(statuses)), Shipment.carrier == carrier, due <= now)
        .order_by(due, Shipment.id)
        .limit(limit)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    shipments = list((await session.scalars(stmt)).all())
    if shipments:
        await session.execute(
            update(Shipment)
            .where(Shipment.id.in_([s.id for s in shipments]))
            .values({column: lease_until})
        )
    for shipment in shipments:
        session.expunge(shipment)
    return shipments


async def move(
    session: AsyncSession,
    shipment_ids: Collection[int],
    transition: Transition,
    values: dict[str, Any],
) -> int:
    """Compare-and-set: the shipments still in one of the transition's sources take its target
    and `values`; returns how many moved."""
    return await update_in_status(
        session,
        shipment_ids,
        transition.sources,
        {**values, "status": transition.target.value},
    )


async def update_in_status(
    session: AsyncSession,
    shipment_ids: Collection[int],
    statuses: Collection[str],
    values: dict[str, Any],
) -> int:
    """Set `values` on the shipments still in one of `statuses`; returns how many changed."""
    result = await session.execute(
        update(Shipment)
        .where(Shipment.id.in_(sorted(shipment_ids)), Shipment.status.in_(sorted(statuses)))
        .values(values)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def update_one(session: AsyncSession, shipment_id: int, values: dict[str, Any]) -> None:
    """Set `values` on one shipment."""
    await session.execute(update(Shipment).where(Shipment.id == shipment_id).values(values))


async def update_if_polled(session: AsyncSession, shipment_id: int, values: dict[str, Any]) -> None:
    """Set `values` on a shipment that is still polled (tracking may have finished it)."""
    await session.execute(
        update(Shipment)
        .where(Shipment.id == shipment_id, Shipment.next_poll_at.is_not(None))
        .values(values)
    )


# --- lines --------------------------------------------------------------------------------------


async def lines_of_many(session: AsyncSession, shipment_ids: Collection[int]) -> list[ShipmentLine]:
    """The lines of these shipments, by shipment then line number."""
    rows = await session.scalars(
        select(ShipmentLine)
        .where(ShipmentLine.shipment_id.in_(list(shipment_ids)))
        .order_by(ShipmentLine.shipment_id, ShipmentLine.line_no)
    )
    return list(rows.all())


# --- tracking events ----------------------------------------------------------------------------


async def add_tracking_events(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert tracking events, each scan once (company, waybill, time, state); returns how many
    were new."""
    result = await session.execute(
        upsert_insert(session, TrackingEvent).values(rows).on_conflict_do_nothing()
    )
    return max(int(result.rowcount or 0), 0)  # type: ignore[attr-defined]


async def insert_tracking_events(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert tracking events, each scan once (company, waybill, time, state), in one
    statement; returns the shipment id of each row that was new."""
    if not rows:
        return []
    table = table_of(TrackingEvent)
    result = await session.execute(
        upsert_insert(session, table)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(table.c.shipment_id)
    )
    return list(result.scalars().all())


async def newest_events(
    session: AsyncSession, shipment_ids: Collection[int]
) -> dict[int, Row[int, str, str, datetime]]:
    """{shipment id: (shipment_id, status, state_code, occurred_at)} of each shipment's newest
    event by event time (ties: the last stored), in one statement."""
    if not shipment_ids:
        return {}
    rank = (
        func.row_number()
        .over(
            partition_by=TrackingEvent.shipment_id,
            order_by=(TrackingEvent.occurred_at.desc(), TrackingEvent.id.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(
            TrackingEvent.shipment_id,
            TrackingEvent.status,
            TrackingEvent.state_code,
            TrackingEvent.occurred_at,
            rank,
        )
        .where(TrackingEvent.shipment_id.in_(list(shipment_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(
            ranked.c.shipment_id, ranked.c.status, ranked.c.state_code, ranked.c.occurred_at
        ).where(ranked.c.rank == 1)
    )
    return {r.shipment_id: r for r in rows.all()}


async def newest_event(session: AsyncSession, shipment_id: int) -> Row[str, str, datetime] | None:
    """(status, state_code, occurred_at) of a shipment's newest event by event time."""
    return (
        await session.execute(
            select(TrackingEvent.status, TrackingEvent.state_code, TrackingEvent.occurred_at)
            .where(TrackingEvent.shipment_id == shipment_id)
            .order_by(TrackingEvent.occurred_at.desc(), TrackingEvent.id.desc())
            .limit(1)
        )
    ).first()


async def events_of_many(
    session: AsyncSession, shipment_ids: Collection[int]
) -> list[TrackingEvent]:
    """The tracking events of these shipments, by shipment, newest first by event time."""
    rows = await session.scalars(
        select(TrackingEvent)
        .where(TrackingEvent.shipment_id.in_(list(shipment_ids)))
        .order_by(TrackingEvent.shipment_id, TrackingEvent.occurred_at.desc(), TrackingEvent.id)
    )
    return list(rows.all())


async def of_orders(session: AsyncSession, order_ids: list[int]) -> list[Shipment]:
    """The shipments of several orders, by order then plan order."""
    if not order_ids:
        return []
    rows = await session.scalars(
        select(Shipment)
        .where(Shipment.order_id.in_(order_ids))
        .order_by(Shipment.order_id, Shipment.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())
