"""Every query of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import upsert_insert
from ordertally.orders.models import (
    IdempotencyKey,
    OrderEvent,
    OrderLine,
    PiiAccess,
    SalesOrder,
)


async def get_by_no(session: AsyncSession, order_no: str) -> SalesOrder | None:
    """One order by its number."""
    return await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))


async def get_by_id(session: AsyncSession, order_id: int) -> SalesOrder | None:
    """One order by id, read fresh from the database."""
    return await session.scalar(
        select(SalesOrder)
        .where(SalesOrder.id == order_id)
        .execution_options(populate_existing=True)
    )


async def get_by_external(
    session: AsyncSession, channel: str, external_id: str
) -> SalesOrder | None:
    """The order a channel already sent under this external id."""
    return await session.scalar(
        select(SalesOrder).where(
            SalesOrder.channel == channel, SalesOrder.external_id == external_id
        )
    )


async def find_recent_by_fingerprint(
    session: AsyncSession, fingerprint: str, since: datetime
) -> SalesOrder | None:
    """The newest order with the same fingerprint created since a moment."""
    return await session.scalar(
        select(SalesOrder)
        .where(SalesOrder.fingerprint == fingerprint, SalesOrder.created_at >= since)
        .order_by(SalesOrder.created_at.desc())
        .limit(1)
    )


async def insert_order(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert an order row; returns its id."""
    result = await session.execute(insert(SalesOrder).values(**values).returning(SalesOrder.id))
    return int(result.scalar_one())


async def insert_lines(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert order lines; returns their ids in the given order."""
    result = await session.execute(
        insert(OrderLine).returning(OrderLine.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars().all()]


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """Append one audit row."""
    await session.execute(insert(OrderEvent).values(**values))


async def lines_of(session: AsyncSession, order_id: int) -> list[OrderLine]:
    """Lines of an order in line order."""
    rows = await session.scalars(
        select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
    )
    return list(rows.all())


async def events_of(session: AsyncSession, order_id: int) -> list[OrderEvent]:
    """The audit trail of an order, oldest first."""
    rows = await session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.version)
    )
    return list(rows.all())


async def compare_and_set_status(
    session: AsyncSession,
    order_id: int,
    *,
    from_status: str,
    version: int,
    to_status: str,
    at: datetime,
) -> bool:
    """Move an order from one status to another only if nobody moved it first."""
    result = await session.execute(
        update(SalesOrder)
        .where(
            SalesOrder.id == order_id,
            SalesOrder.status == from_status,
            SalesOrder.version == version,
        )
        .values(status=to_status, version=version + 1, updated_at=at)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def list_page(
    session: AsyncSession,
    *,
    status: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[SalesOrder]:
    """Orders newest first, after a keyset cursor (created_at, id)."""
    stmt = select(SalesOrder)
    if status:
        stmt = stmt.where(SalesOrder.status == status)
    if channel:
        stmt = stmt.where(SalesOrder.channel == channel)
    if created_from:
        stmt = stmt.where(SalesOrder.created_at >= created_from)
    if created_to:
        stmt = stmt.where(SalesOrder.created_at < created_to)
    if after:
        at, order_id = after
        stmt = stmt.where(
            or_(
                SalesOrder.created_at < at,
                and_(SalesOrder.created_at == at, SalesOrder.id < order_id),
            )
        )
    stmt = stmt.order_by(SalesOrder.created_at.desc(), SalesOrder.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def due_for_timeout(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> list[SalesOrder]:
    """Pending-payment orders past their deadline, oldest deadline first."""
    stmt = (
        select(SalesOrder)
        .where(SalesOrder.status == "pending_payment", SalesOrder.payment_deadline_at <= now)
        .order_by(SalesOrder.payment_deadline_at)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def count_stuck_pending(session: AsyncSession, before: datetime) -> int:
    """Pending-payment orders whose deadline passed before a moment."""
    return int(
        await session.scalar(
            select(func.count()).where(
                SalesOrder.status == "pending_payment", SalesOrder.payment_deadline_at < before
            )
        )
        or 0
    )


async def count_orders(session: AsyncSession) -> int:
    """All orders."""
    return int(await session.scalar(select(func.count()).select_from(SalesOrder)) or 0)


async def status_counts(session: AsyncSession) -> dict[str, int]:
    """Orders per status."""
    rows = await session.execute(
        select(SalesOrder.status, func.count()).group_by(SalesOrder.status)
    )
    return {status: int(n) for status, n in rows.all()}


async def add_pii_access(session: AsyncSession, values: dict[str, Any]) -> None:
    """Log an unmasking."""
    await session.execute(insert(PiiAccess).values(**values))


# --- idempotency keys -------------------------------------------------------------------------


async def try_key_lock(session: AsyncSession, scope: str, key: str) -> bool:
    """PostgreSQL: take a transaction-scoped advisory lock on (scope, key), without waiting."""
    return bool(
        await session.scalar(
            select(func.pg_try_advisory_xact_lock(func.hashtextextended(scope + "\x1f" + key, 0)))
        )
    )


async def get_idempotency_key(session: AsyncSession, scope: str, key: str) -> IdempotencyKey | None:
    """A stored key, read fresh."""
    return await session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    )


async def store_idempotency_key(session: AsyncSession, values: dict[str, Any]) -> None:
    """Store (or, over an expired one, replace) a key's response."""
    stmt = upsert_insert(session, IdempotencyKey).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["scope", "key"],
            set_={k: stmt.excluded[k] for k in values if k not in ("scope", "key")},
        )
    )


async def purge_idempotency_keys(session: AsyncSession, now: datetime) -> int:
    """Delete expired keys."""
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now))
    return int(result.rowcount)  # type: ignore[attr-defined]
