"""Every query of the workbench. The case list filters on order facts (channel, SKU, warehouse,
tag), so this read model selects order ids from the orders and inventory tables as subqueries;
it writes only its own tables (ADR 0033)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.casework.filters import CaseFilter, OrderFilter
from ordertally.casework.models import BatchAction, BatchAudit, Coupon, OrderTag
from ordertally.core.db import dialect_of, upsert_insert
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ACTIVE, ExceptionCase
from ordertally.inventory.models import Reservation, Warehouse
from ordertally.orders.models import OrderLine, SalesOrder


def _order_facts(
    order_id: Any, sku: str | None, warehouse: str | None, channel: str | None, tag: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if sku:
        where.append(order_id.in_(select(OrderLine.order_id).where(OrderLine.sku == sku)))
    if warehouse:
        where.append(
            order_id.in_(
                select(Reservation.order_id)
                .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
                .where(Warehouse.code == warehouse)
            )
        )
    if channel:
        where.append(order_id.in_(select(SalesOrder.id).where(SalesOrder.channel == channel)))
    if tag:
        where.append(order_id.in_(select(OrderTag.order_id).where(OrderTag.tag == tag)))
    return where


def _case_where(f: CaseFilter) -> list[ColumnElement[bool]]:
    c = ExceptionCase
    where: list[ColumnElement[bool]] = []
    for column, value in (
        (c.type, f.type),
        (c.side, f.category),
        (c.status, f.state),
        (c.owner_role, f.role),
        (c.assignee, f.assignee),
    ):
        if value is not None:
            where.append(column == value)
    if f.breached is not None and f.now is not None:
        late = c.status.in_(ACTIVE) & (c.due_at < f.now)
        where.append(late if f.breached else ~late)
    if f.due_before is not None:
        where.append(c.status.in_(ACTIVE) & (c.due_at <= f.due_before))
    if f.order_no:
        order = select(SalesOrder.id).where(SalesOrder.order_no == f.order_no)
        where.append(c.order_id == order.scalar_subquery())
    if f.created_from:
        where.append(c.created_at >= f.created_from)
    if f.created_to:
        where.append(c.created_at < f.created_to)
    if f.channels is not None:
        where.append(
            c.order_id.in_(select(SalesOrder.id).where(SalesOrder.channel.in_(list(f.channels))))
        )
    return where + _order_facts(c.order_id, f.sku, f.warehouse, f.channel, f.tag)


async def list_cases(
    session: AsyncSession, f: CaseFilter, after_id: int | None, limit: int
) -> list[ExceptionCase]:
    """Cases matching a filter, newest first, after a keyset cursor (the last id seen)."""
    stmt = select(ExceptionCase).where(*_case_where(f))
    if after_id is not None:
        stmt = stmt.where(ExceptionCase.id < after_id)
    rows = await session.scalars(stmt.order_by(ExceptionCase.id.desc()).limit(limit))
    return list(rows.all())


# In the count ledger's column order (type, side, status, owner role).
FACETS = {
    "type": ExceptionCase.type,
    "category": ExceptionCase.side,
    "state": ExceptionCase.status,
    "role": ExceptionCase.owner_role,
}


def _ledger_only(f: CaseFilter) -> bool:
    """Whether a filter selects on facet columns alone (the count ledger can answer it)."""
    return not any(
        (
            f.assignee,
            f.channels is not None,  # a channel-scoped caller counts its accounts' cases only
            f.breached is not None,
            f.due_before,
            f.order_no,
            f.created_from,
            f.created_to,
            f.sku,
            f.warehouse,
            f.channel,
            f.tag,
        )
    )


async def facet_counts(session: AsyncSession, f: CaseFilter) -> dict[str, dict[str, int]]:
    """Counts per facet value among the cases a filter matches. A filter on facet columns
    alone (or none) is summed from the count ledger the database's triggers keep; any other is
    counted from the cases: one scan with GROUPING SETS on PostgreSQL, a query per facet on
    SQLite (which has no grouping sets)."""
    if _ledger_only(f):
        out: dict[str, dict[str, int]] = {name: {} for name in FACETS}
        for row in await exceptions_service.counted(session, f.type, f.category, f.state, f.role):
            for name, value in zip(FACETS, row[:4], strict=True):
                out[name][value] = out[name].get(value, 0) + row[4]
        return out
    return await scanned_facet_counts(session, f)


async def scanned_facet_counts(session: AsyncSession, f: CaseFilter) -> dict[str, dict[str, int]]:
    """Counts per facet value, counted from the matching cases themselves."""
    where = _case_where(f)
    out: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    if dialect_of(session) == "postgresql":
        columns = list(FACETS.values())
        rows = await session.execute(
            select(*columns, *(func.grouping(c) for c in columns), func.count())
            .where(*where)
            .group_by(func.grouping_sets(*columns))
        )
        for row in rows.all():
            values, flags, n = row[:4], row[4:8], row[8]
            for name, value, flag in zip(FACETS, values, flags, strict=True):
                if flag == 0:
                    out[name][str(value)] = int(n)
        return out
    for name, column in FACETS.items():
        grouped = await session.execute(select(column, func.count()).where(*where).group_by(column))
        out[name] = {str(value): int(n) for value, n in grouped.all()}
    return out


async def order_nos(session: AsyncSession, order_ids: list[int]) -> dict[int, str]:
    """Order numbers by id."""
    if not order_ids:
        return {}
    rows = await session.execute(
        select(SalesOrder.id, SalesOrder.order_no).where(SalesOrder.id.in_(order_ids))
    )
    return {int(i): str(n) for i, n in rows.all()}


def _order_ids_stmt(target: str, filters: dict[str, Any], now: datetime) -> Select[Any]:
    filters = {
        k: datetime.fromisoformat(v) if k.startswith("created_") and isinstance(v, str) else v
        for k, v in filters.items()
    }
    if target == "cases":
        cf = CaseFilter(**filters, now=now)
        return (
            select(ExceptionCase.order_id.label("order_id"))
            .where(*_case_where(cf), ExceptionCase.order_id.is_not(None))
            .distinct()
        )
    of = OrderFilter(**filters)
    o = SalesOrder
    where: list[ColumnElement[bool]] = []
    if of.status:
        where.append(o.status == of.status)
    if of.created_from:
        where.append(o.created_at >= of.created_from)
    if of.created_to:
        where.append(o.created_at < of.created_to)
    if of.order_nos is not None:
        where.append(o.order_no.in_(list(of.order_nos)))
    if of.channels is not None:
        where.append(o.channel.in_(list(of.channels)))
    if of.case_type:
        where.append(
            o.id.in_(
                select(ExceptionCase.order_id).where(
                    ExceptionCase.type == of.case_type, ExceptionCase.status.in_(ACTIVE)
                )
            )
        )
    where += _order_facts(o.id, of.sku, of.warehouse, of.channel, of.tag)
    return select(o.id.label("order_id")).where(*where)


async def count_targets(
    session: AsyncSession, target: str, filters: dict[str, Any], now: datetime
) -> int:
    """How many orders a batch's filter selects."""
    sub = _order_ids_stmt(target, filters, now).subquery()
    return int(await session.scalar(select(func.count()).select_from(sub)) or 0)


async def target_ids(
    session: AsyncSession,
    target: str,
    filters: dict[str, Any],
    now: datetime,
    after_id: int,
    limit: int,
) -> list[int]:
    """The next chunk of order ids a batch's filter selects, ascending after `after_id`."""
    sub = _order_ids_stmt(target, filters, now).subquery()
    rows = await session.scalars(
        select(sub.c.order_id)
        .where(sub.c.order_id > after_id)
        .order_by(sub.c.order_id)
        .limit(limit)
    )
    return [int(i) for i in rows.all()]


# --- tags and coupons ---------------------------------------------------------------------------


async def add_tags(session: AsyncSession, rows: list[dict[str, Any]]) -> set[int]:
    """Tag orders in one statement; returns the order ids that did not have the tag yet."""
    if not rows:
        return set()
    stmt = (
        upsert_insert(session, OrderTag)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["order_id", "tag"])
        .returning(OrderTag.order_id)
    )
    return {int(i) for i in (await session.execute(stmt)).scalars().all()}


async def tags_of(session: AsyncSession, order_id: int) -> list[str]:
    """An order's tags."""
    rows = await session.scalars(
        select(OrderTag.tag).where(OrderTag.order_id == order_id).order_by(OrderTag.tag)
    )
    return list(rows.all())


async def add_coupons(session: AsyncSession, rows: list[dict[str, Any]]) -> set[int]:
    """Record coupons in one statement, one per (order, campaign): returns the order ids that
    got a new one."""
    if not rows:
        return set()
    stmt = (
        upsert_insert(session, Coupon)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["order_id", "campaign"])
        .returning(Coupon.order_id)
    )
    return {int(i) for i in (await session.execute(stmt)).scalars().all()}


async def coupons_of(session: AsyncSession, order_id: int) -> list[Coupon]:
    """An order's coupons."""
    rows = await session.scalars(
        select(Coupon).where(Coupon.order_id == order_id).order_by(Coupon.id)
    )
    return list(rows.all())


# --- batches ------------------------------------------------------------------------------------


async def add_batch(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert a batch; returns its id."""
    result = await session.execute(insert(BatchAction).values(**values).returning(BatchAction.id))
    return int(result.scalar_one())


async def get_batch(session: AsyncSession, batch_id: int) -> BatchAction | None:
    """One batch."""
    return await session.get(BatchAction, batch_id)


async def change_batch(
    session: AsyncSession, batch_id: int, from_states: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Compare-and-set a batch's state."""
    result = await session.execute(
        update(BatchAction)
        .where(BatchAction.id == batch_id, BatchAction.state.in_(from_states))
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def advance_batch(
    session: AsyncSession, batch_id: int, cursor: int, processed: int, changed: int
) -> bool:
    """Record a chunk's progress, only while the batch is still running (not cancelled)."""
    result = await session.execute(
        update(BatchAction)
        .where(BatchAction.id == batch_id, BatchAction.state == "running")
        .values(
            cursor=cursor,
            processed=BatchAction.processed + processed,
            changed=BatchAction.changed + changed,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def queued_batches(session: AsyncSession, limit: int) -> list[int]:
    """Batches waiting for (or interrupted in) their run, oldest first."""
    rows = await session.scalars(
        select(BatchAction.id)
        .where(BatchAction.state.in_(("queued", "running")))
        .order_by(BatchAction.id)
        .limit(limit)
    )
    return [int(i) for i in rows.all()]


async def audited(session: AsyncSession, batch_id: int, order_ids: list[int]) -> set[int]:
    """Which of these orders the batch already did."""
    rows = await session.scalars(
        select(BatchAudit.order_id).where(
            BatchAudit.batch_id == batch_id, BatchAudit.order_id.in_(order_ids)
        )
    )
    return {int(i) for i in rows.all()}


async def add_audit(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write a chunk's audit rows."""
    if rows:
        await session.execute(insert(BatchAudit), rows)


async def audit_of(session: AsyncSession, batch_id: int) -> dict[str, int]:
    """A batch's audit rows per outcome."""
    rows = await session.execute(
        select(BatchAudit.outcome, func.count())
        .where(BatchAudit.batch_id == batch_id)
        .group_by(BatchAudit.outcome)
    )
    return {str(o): int(n) for o, n in rows.all()}
