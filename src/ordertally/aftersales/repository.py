"""Every query of the after-sales domain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales.models import (
    AftersaleCase,
    AftersaleEvent,
    AftersaleLine,
    AftersaleMoney,
    AftersalePlatformRecord,
    AftersalePullState,
    AftersaleRefund,
    ReturnParcel,
)
from ordertally.core.db import dialect_of, table_of, upsert_insert

NO_SYNC = {"synchronize_session": False}

# --- cases --------------------------------------------------------------------------------------


async def insert_case(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Add a case; None when the platform's refund id is already a case of that channel."""
    stmt = (
        upsert_insert(session, AftersaleCase)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["channel", "platform_refund_id"])
        .returning(AftersaleCase.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_lines(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add a case's lines."""
    if rows:
        await session.execute(insert(AftersaleLine), rows)


async def get_case(session: AsyncSession, case_id: int) -> AftersaleCase | None:
    """A case by id, read afresh."""
    found = await session.scalars(
        select(AftersaleCase)
        .where(AftersaleCase.id == case_id)
        .execution_options(populate_existing=True)
    )
    return found.first()


async def get_case_by_no(session: AsyncSession, case_no: str) -> AftersaleCase | None:
    """A case by its number, read afresh."""
    found = await session.scalars(
        select(AftersaleCase)
        .where(AftersaleCase.case_no == case_no)
        .execution_options(populate_existing=True)
    )
    return found.first()


async def existing_platform_ids(
    session: AsyncSession, channel: str, platform_refund_ids: Sequence[str]
) -> set[str]:
    """Which of these platform refund ids are already cases of the channel."""
    if not platform_refund_ids:
        return set()
    rows = await session.scalars(
        select(AftersaleCase.platform_refund_id).where(
            AftersaleCase.channel == channel,
            AftersaleCase.platform_refund_id.in_(list(platform_refund_ids)),
        )
    )
    return {r for r in rows.all() if r is not None}


async def case_by_platform_refund(
    session: AsyncSession, channel: str, platform_refund_id: str
) -> AftersaleCase | None:
    """The channel's case of a platform refund id, read afresh."""
    found = await session.scalars(
        select(AftersaleCase)
        .where(
            AftersaleCase.channel == channel,
            AftersaleCase.platform_refund_id == platform_refund_id,
        )
        .execution_options(populate_existing=True)
    )
    return found.first()


async def cases_by_platform_refunds(
    session: AsyncSession, channel: str, platform_refund_ids: Sequence[str]
) -> dict[str, AftersaleCase]:
    """The channel's cases of these platform refund ids, by refund id, read afresh."""
    if not platform_refund_ids:
        return {}
    found = await session.scalars(
        select(AftersaleCase)
        .where(
            AftersaleCase.channel == channel,
            AftersaleCase.platform_refund_id.in_(list(platform_refund_ids)),
        )
        .execution_options(populate_existing=True)
    )
    return {c.platform_refund_id: c for c in found.all() if c.platform_refund_id is not None}


async def cases_of_order(session: AsyncSession, order_id: int) -> list[AftersaleCase]:
    """An order's cases, oldest first."""
    rows = await session.scalars(
        select(AftersaleCase).where(AftersaleCase.order_id == order_id).order_by(AftersaleCase.id)
    )
    return list(rows.all())


async def list_cases(
    session: AsyncSession, status: str | None, case_type: str | None, limit: int
) -> list[AftersaleCase]:
    """Cases, newest first, optionally of one status and type."""
    query = select(AftersaleCase)
    if status:
        query = query.where(AftersaleCase.status == status)
    if case_type:
        query = query.where(AftersaleCase.type == case_type)
    rows = await session.scalars(query.order_by(AftersaleCase.id.desc()).limit(limit))
    return list(rows.all())


async def page_cases(
    session: AsyncSession,
    *,
    status: str | None = None,
    case_type: str | None = None,
    channel: str | None = None,
    responsibility: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AftersaleCase]:
    """One keyset page of cases, newest (highest id) first, below `before_id`."""
    query = select(AftersaleCase)
    for column, value in (
        (AftersaleCase.status, status),
        (AftersaleCase.type, case_type),
        (AftersaleCase.channel, channel),
        (AftersaleCase.responsibility, responsibility),
    ):
        if value:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AftersaleCase.created_at >= since)
    if until is not None:
        query = query.where(AftersaleCase.created_at < until)
    if before_id is not None:
        query = query.where(AftersaleCase.id < before_id)
    rows = await session.scalars(query.order_by(AftersaleCase.id.desc()).limit(limit))
    return list(rows.all())


async def set_status(
    session: AsyncSession,
    case_id: int,
    *,
    from_status: str,
    version: int,
    to_status: str,
    at: datetime,
    extra: dict[str, Any],
) -> bool:
    """Compare-and-set a case's status; False when someone else moved it first."""
    result = await session.execute(
        update(AftersaleCase)
        .where(
            AftersaleCase.id == case_id,
            AftersaleCase.status == from_status,
            AftersaleCase.version == version,
        )
        .values(status=to_status, version=version + 1, updated_at=at, **extra)
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def update_case(session: AsyncSession, case_id: int, values: dict[str, Any]) -> None:
    """Change a case's handling facts (responsibility, waybill, goods status)."""
    await session.execute(
        update(AftersaleCase)
        .where(AftersaleCase.id == case_id)
        .values(**values)
        .execution_options(**NO_SYNC)
    )


async def lines_of(session: AsyncSession, case_id: int) -> list[AftersaleLine]:
    """A case's lines in line order, read afresh."""
    rows = await session.scalars(
        select(AftersaleLine)
        .where(AftersaleLine.case_id == case_id)
        .order_by(AftersaleLine.line_no)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def returned_quantities(session: AsyncSession, order_id: int) -> dict[int, int]:
    """Units per order line already asked back by the order's open or finished cases."""
    rows = await session.execute(
        select(AftersaleLine.line_no, func.sum(AftersaleLine.quantity))
        .join(AftersaleCase, AftersaleCase.id == AftersaleLine.case_id)
        .where(
            AftersaleCase.order_id == order_id,
            AftersaleCase.status != "rejected",
            AftersaleCase.type.in_(("return_refund", "refused", "refund_only")),
        )
        .group_by(AftersaleLine.line_no)
    )
    return {int(n): int(q) for n, q in rows.all()}


async def add_received(session: AsyncSession, line_id: int, quantity: int) -> bool:
    """Count units received back on a line, within what the line asked back."""
    result = await session.execute(
        update(AftersaleLine)
        .where(
            AftersaleLine.id == line_id,
            AftersaleLine.received_quantity + quantity <= AftersaleLine.quantity,
        )
        .values(received_quantity=AftersaleLine.received_quantity + quantity)
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_inspected(
    session: AsyncSession, line_id: int, restocked: int, written_off: int
) -> bool:
    """Count inspected units of a line, within what was received."""
    result = await session.execute(
        update(AftersaleLine)
        .where(
            AftersaleLine.id == line_id,
            AftersaleLine.restocked_quantity
            + AftersaleLine.written_off_quantity
            + restocked
            + written_off
            <= AftersaleLine.received_quantity,
        )
        .values(
            restocked_quantity=AftersaleLine.restocked_quantity + restocked,
            written_off_quantity=AftersaleLine.written_off_quantity + written_off,
        )
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """Add one audit row of a case."""
    await session.execute(insert(AftersaleEvent), [values])


async def events_of(session: AsyncSession, case_id: int) -> list[AftersaleEvent]:
    """A case's audit trail in order."""
    rows = await session.scalars(
        select(AftersaleEvent)
        .where(AftersaleEvent.case_id == case_id)
        .order_by(AftersaleEvent.version)
    )
    return list(rows.all())


async def stale_cases(
    session: AsyncSession, status: str, before: datetime, limit: int
) -> list[AftersaleCase]:
    """Cases in a status since before a time (past their SLA)."""
    rows = await session.scalars(
        select(AftersaleCase)
        .where(AftersaleCase.status == status, AftersaleCase.updated_at < before)
        .order_by(AftersaleCase.updated_at)
        .limit(limit)
    )
    return list(rows.all())


async def counts_by_type_status(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Cases per (type, status)."""
    rows = await session.execute(
        select(AftersaleCase.type, AftersaleCase.status, func.count()).group_by(
            AftersaleCase.type, AftersaleCase.status
        )
    )
    return {(t, s): int(n) for t, s, n in rows.all()}


async def returns_since(
    session: AsyncSession, order_ids: Sequence[int], since: datetime
) -> dict[int, int]:
    """Return cases (not rejected) opened since a time, per order."""
    if not order_ids:
        return {}
    rows = await session.execute(
        select(AftersaleCase.order_id, func.count())
        .where(
            AftersaleCase.order_id.in_(list(order_ids)),
            AftersaleCase.created_at >= since,
            AftersaleCase.status != "rejected",
            AftersaleCase.type.in_(("return_refund", "exchange", "refused")),
        )
        .group_by(AftersaleCase.order_id)
    )
    return {int(o): int(n) for o, n in rows.all()}


# --- money --------------------------------------------------------------------------------------


async def ensure_money(
    session: AsyncSession, order_id: int, currency: str, paid_minor: int, at: datetime
) -> None:
    """Create an order's refund ledger row when it has none."""
    await session.execute(
        upsert_insert(session, AftersaleMoney)
        .values(
            order_id=order_id,
            currency=currency,
            paid_minor=paid_minor,
            committed_minor=0,
            refunded_minor=0,
            updated_at=at,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )


async def get_money(session: AsyncSession, order_id: int) -> AftersaleMoney | None:
    """An order's refund ledger row, read afresh."""
    found = await session.scalars(
        select(AftersaleMoney)
        .where(AftersaleMoney.order_id == order_id)
        .execution_options(populate_existing=True)
    )
    return found.first()


async def commit_money(session: AsyncSession, order_id: int, amount: int, at: datetime) -> bool:
    """Count a refund against what was paid, only while the total stays within it: one
    conditional UPDATE of the order's row, so concurrent requests queue on its lock."""
    result = await session.execute(
        update(AftersaleMoney)
        .where(
            AftersaleMoney.order_id == order_id,
            AftersaleMoney.committed_minor + amount <= AftersaleMoney.paid_minor,
        )
        .values(committed_minor=AftersaleMoney.committed_minor + amount, updated_at=at)
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_money(session: AsyncSession, order_id: int, amount: int, at: datetime) -> None:
    """Give back a refund that failed."""
    await session.execute(
        update(AftersaleMoney)
        .where(AftersaleMoney.order_id == order_id)
        .values(committed_minor=AftersaleMoney.committed_minor - amount, updated_at=at)
        .execution_options(**NO_SYNC)
    )


async def confirm_money(session: AsyncSession, order_id: int, amount: int, at: datetime) -> None:
    """Count a confirmed refund."""
    await session.execute(
        update(AftersaleMoney)
        .where(AftersaleMoney.order_id == order_id)
        .values(refunded_minor=AftersaleMoney.refunded_minor + amount, updated_at=at)
        .execution_options(**NO_SYNC)
    )


# --- refunds ------------------------------------------------------------------------------------


async def insert_refund(session: AsyncSession, values: dict[str, Any]) -> int:
    """Add a refund; returns its id."""
    result = await session.execute(
        insert(AftersaleRefund).values(**values).returning(AftersaleRefund.id)
    )
    return int(result.scalar_one())


async def get_refund(session: AsyncSession, refund_id: int) -> AftersaleRefund | None:
    """A refund, read afresh."""
    found = await session.scalars(
        select(AftersaleRefund)
        .where(AftersaleRefund.id == refund_id)
        .execution_options(populate_existing=True)
    )
    return found.first()


async def refunds_of_case(session: AsyncSession, case_id: int) -> list[AftersaleRefund]:
    """A case's refunds, oldest first."""
    rows = await session.scalars(
        select(AftersaleRefund)
        .where(AftersaleRefund.case_id == case_id)
        .order_by(AftersaleRefund.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def lease_due_refunds(
    session: AsyncSession, now: datetime, limit: int, until: datetime, *, skip_locked: bool
) -> list[AftersaleRefund]:
    """Claim provider refunds to send or to ask about (pending or sent, due): their next look
    moves to `until` and their attempt count goes up, so no other worker takes them while
    the provider is asked outside any transaction."""
    stmt = (
        select(AftersaleRefund)
        .where(
            AftersaleRefund.source == "provider",
            AftersaleRefund.state.in_(("pending", "sent")),
            AftersaleRefund.next_at <= now,
        )
        .order_by(AftersaleRefund.next_at, AftersaleRefund.id)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    due = list((await session.scalars(stmt)).all())
    if due:
        await session.execute(
            update(AftersaleRefund)
            .where(AftersaleRefund.id.in_([r.id for r in due]))
            .values(next_at=until, attempts=AftersaleRefund.attempts + 1)
            .execution_options(**NO_SYNC)
        )
    return due


async def set_refund(
    session: AsyncSession, refund_id: int, from_states: Sequence[str], values: dict[str, Any]
) -> bool:
    """Move a refund on from one of some states; False when it was not in any of them."""
    result = await session.execute(
        update(AftersaleRefund)
        .where(AftersaleRefund.id == refund_id, AftersaleRefund.state.in_(list(from_states)))
        .values(**values)
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def refunded_by_day(
    session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[date, str, int, int]]:
    """(UTC day, currency, refunds, amount) of the refunds confirmed in a window."""
    day = func.date(AftersaleRefund.confirmed_at)
    rows = await session.execute(
        select(day, AftersaleRefund.currency, func.count(), func.sum(AftersaleRefund.amount_minor))
        .where(
            AftersaleRefund.state == "succeeded",
            AftersaleRefund.confirmed_at >= start,
            AftersaleRefund.confirmed_at < end,
        )
        .group_by(day, AftersaleRefund.currency)
        .order_by(day)
    )
    out = []
    for d, currency, n, amount in rows.all():
        out.append(
            (
                d if isinstance(d, date) else date.fromisoformat(str(d)),
                currency,
                int(n),
                int(amount),
            )
        )
    return out


async def refunded_of_order(session: AsyncSession, order_id: int) -> int:
    """The sum of an order's confirmed refunds."""
    total = await session.scalar(
        select(func.coalesce(func.sum(AftersaleRefund.amount_minor), 0)).where(
            AftersaleRefund.order_id == order_id, AftersaleRefund.state == "succeeded"
        )
    )
    return int(total or 0)


async def platform_refund_exists(session: AsyncSession, out_refund_no: str) -> bool:
    """Whether a refund number is already recorded."""
    found = await session.scalar(
        select(func.count()).where(AftersaleRefund.out_refund_no == out_refund_no)
    )
    return bool(found)


# --- returned parcels ---------------------------------------------------------------------------


async def insert_parcel(session: AsyncSession, values: dict[str, Any]) -> int:
    """Record a parcel that came back."""
    result = await session.execute(insert(ReturnParcel).values(**values).returning(ReturnParcel.id))
    return int(result.scalar_one())


async def get_parcel(session: AsyncSession, parcel_id: int) -> ReturnParcel | None:
    """A returned parcel, read afresh."""
    found = await session.scalars(
        select(ReturnParcel)
        .where(ReturnParcel.id == parcel_id)
        .execution_options(populate_existing=True)
    )
    return found.first()


async def unmatched_parcels(session: AsyncSession, limit: int) -> list[ReturnParcel]:
    """Parcels received without a case (无主件), oldest first."""
    rows = await session.scalars(
        select(ReturnParcel)
        .where(ReturnParcel.case_id.is_(None))
        .order_by(ReturnParcel.id)
        .limit(limit)
    )
    return list(rows.all())


async def match_parcel(session: AsyncSession, parcel_id: int, case_id: int, at: datetime) -> bool:
    """Tie an unmatched parcel to a case; False when it was matched already."""
    result = await session.execute(
        update(ReturnParcel)
        .where(ReturnParcel.id == parcel_id, ReturnParcel.case_id.is_(None))
        .values(case_id=case_id, matched_at=at)
        .execution_options(**NO_SYNC)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def case_by_return_waybill(session: AsyncSession, waybill_no: str) -> AftersaleCase | None:
    """The open case whose buyer gave this return waybill."""
    found = await session.scalars(
        select(AftersaleCase)
        .where(
            AftersaleCase.return_waybill_no == waybill_no,
            AftersaleCase.status == "awaiting_return",
        )
        .order_by(AftersaleCase.id)
    )
    return found.first()


# --- doctor -------------------------------------------------------------------------------------


async def confirmed_provider_refunds(
    session: AsyncSession, start: datetime, end: datetime
) -> dict[str, int]:
    """out_refund_no -> amount of the provider refunds confirmed in a window."""
    rows = await session.execute(
        select(AftersaleRefund.out_refund_no, AftersaleRefund.amount_minor).where(
            AftersaleRefund.source == "provider",
            AftersaleRefund.state == "succeeded",
            AftersaleRefund.confirmed_at >= start,
            AftersaleRefund.confirmed_at < end,
        )
    )
    return {no: int(amount) for no, amount in rows.all()}


async def inspected_units_by_sku(session: AsyncSession) -> dict[str, int]:
    """Units the warehouse inspected (restocked + written off) over all cases, per line SKU."""
    rows = await session.execute(
        select(
            AftersaleLine.sku,
            func.sum(AftersaleLine.restocked_quantity + AftersaleLine.written_off_quantity),
        ).group_by(AftersaleLine.sku)
    )
    return {str(sku): int(units or 0) for sku, units in rows.all()}


# --- the after-sales record inbox ---------------------------------------------------------------


async def records(
    session: AsyncSession,
    statuses: Sequence[str],
    channel: str | None,
    limit: int,
    received_after: datetime | None = None,
) -> list[AftersalePlatformRecord]:
    """Stored platform records in these statuses (of one channel, received after a time),
    oldest first."""
    stmt = select(AftersalePlatformRecord).where(AftersalePlatformRecord.status.in_(statuses))
    if channel is not None:
        stmt = stmt.where(AftersalePlatformRecord.channel == channel)
    if received_after is not None:
        stmt = stmt.where(AftersalePlatformRecord.received_at > received_after)
    rows = await session.scalars(stmt.order_by(AftersalePlatformRecord.id).limit(limit))
    return list(rows.all())


async def purge_record_bodies(session: AsyncSession, applied_before: datetime) -> int:
    """Empty the bodies of platform records applied before a time; returns how many."""
    result = await session.execute(
        update(AftersalePlatformRecord)
        .where(
            AftersalePlatformRecord.status == "applied",
            AftersalePlatformRecord.applied_at < applied_before,
            AftersalePlatformRecord.body != "",
        )
        .values(body="")
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- the pull state of platform after-sale records ----------------------------------------------


async def pull_state(session: AsyncSession, channel: str) -> AftersalePullState | None:
    """One account's after-sale pull state, read fresh."""
    return await session.get(AftersalePullState, channel, populate_existing=True)


async def ensure_pull_state(
    session: AsyncSession, channel: str, cursor_at: datetime, at: datetime
) -> AftersalePullState:
    """The account's pull state, made with `cursor_at` when it has none."""
    await session.execute(
        upsert_insert(session, AftersalePullState)
        .values(channel=channel, cursor_at=cursor_at, error_count=0, records_seen=0, updated_at=at)
        .on_conflict_do_nothing(index_elements=["channel"])
    )
    state = await pull_state(session, channel)
    assert state is not None
    return state


async def pull_states(session: AsyncSession) -> dict[str, AftersalePullState]:
    """Every account's after-sale pull state by channel."""
    rows = await session.scalars(select(AftersalePullState))
    return {row.channel: row for row in rows.all()}


# --- a page of platform records at once (the batched ingest, `aftersales.batch`) ----------------


async def insert_cases_many(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Add many platform cases in one statement; platform refund id -> new case id (those
    whose (channel, refund id) is already a case are skipped: the unique index decides)."""
    return await _insert_new_refund_ids(session, AftersaleCase, rows)


async def _insert_new_refund_ids(
    session: AsyncSession, model: type[AftersaleCase | AftersalePlatformRecord], rows: list[Any]
) -> dict[str, int]:
    """Insert rows keyed by (channel, platform refund id), skipping keys already stored;
    platform refund id -> id of each row inserted."""
    if not rows:
        return {}
    table = table_of(model)
    stmt = (
        upsert_insert(session, table)
        .on_conflict_do_nothing(index_elements=["channel", "platform_refund_id"])
        .returning(table.c.platform_refund_id, table.c.id)
    )
    # executemany: one cached statement sent as multi-row batches (insertmanyvalues)
    return {str(pid): int(i) for pid, i in (await session.execute(stmt, rows)).all()}


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add many audit rows of cases."""
    if rows:
        await session.execute(insert(table_of(AftersaleEvent)), rows)


async def returned_quantities_many(
    session: AsyncSession, order_ids: Sequence[int]
) -> dict[int, dict[int, int]]:
    """`returned_quantities` of many orders: order id -> line number -> units asked back."""
    if not order_ids:
        return {}
    rows = await session.execute(
        select(AftersaleCase.order_id, AftersaleLine.line_no, func.sum(AftersaleLine.quantity))
        .join(AftersaleCase, AftersaleCase.id == AftersaleLine.case_id)
        .where(
            AftersaleCase.order_id.in_(list(order_ids)),
            AftersaleCase.status != "rejected",
            AftersaleCase.type.in_(("return_refund", "refused", "refund_only")),
        )
        .group_by(AftersaleCase.order_id, AftersaleLine.line_no)
    )
    out: dict[int, dict[int, int]] = {}
    for order_id, line_no, quantity in rows.all():
        out.setdefault(int(order_id), {})[int(line_no)] = int(quantity)
    return out


async def lock_money_many(
    session: AsyncSession, order_ids: Sequence[int]
) -> dict[int, tuple[int, int, int]]:
    """The refund ledger rows of these orders that exist, locked on PostgreSQL in order id
    order: order id -> (paid, committed, refunded)."""
    if not order_ids:
        return {}
    money = table_of(AftersaleMoney)
    stmt = (
        select(
            money.c.order_id, money.c.paid_minor, money.c.committed_minor, money.c.refunded_minor
        )
        .where(money.c.order_id.in_(sorted(set(order_ids))))
        .order_by(money.c.order_id)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    rows = await session.execute(stmt)
    return {int(o): (int(p), int(c), int(r)) for o, p, c, r in rows.all()}


async def insert_money_many(session: AsyncSession, rows: list[dict[str, Any]]) -> set[int]:
    """Add refund ledger rows (with their first refunds counted); returns the order ids
    added (one that appeared meanwhile is skipped)."""
    if not rows:
        return set()
    money = table_of(AftersaleMoney)
    stmt = (
        upsert_insert(session, money)
        .on_conflict_do_nothing(index_elements=["order_id"])
        .returning(money.c.order_id)
    )
    return {int(o) for o in (await session.execute(stmt, rows)).scalars().all()}


async def add_money_many(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Count refunds on locked ledger rows: rows of {"oid", "add_committed", "add_refunded",
    "at"}, each within what was paid; returns how many rows changed."""
    if not rows:
        return 0
    money = table_of(AftersaleMoney)
    result = await session.execute(
        update(money)
        .where(
            money.c.order_id == bindparam("oid"),
            money.c.committed_minor + bindparam("add_committed") <= money.c.paid_minor,
        )
        .values(
            committed_minor=money.c.committed_minor + bindparam("add_committed"),
            refunded_minor=money.c.refunded_minor + bindparam("add_refunded"),
            updated_at=bindparam("at"),
        ),
        rows,
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def existing_refund_nos(session: AsyncSession, out_refund_nos: Sequence[str]) -> set[str]:
    """Which of these refund numbers are already recorded."""
    if not out_refund_nos:
        return set()
    rows = await session.scalars(
        select(AftersaleRefund.out_refund_no).where(
            AftersaleRefund.out_refund_no.in_(list(out_refund_nos))
        )
    )
    return set(rows.all())


async def insert_refunds_many(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Add many refunds in one statement; refund number -> id."""
    if not rows:
        return {}
    refund = table_of(AftersaleRefund)
    stmt = insert(refund).returning(refund.c.out_refund_no, refund.c.id)
    return {str(no): int(i) for no, i in (await session.execute(stmt, rows)).all()}


async def store_records_many(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert received platform records of one channel in one statement; platform refund id ->
    new record id (those stored before are skipped)."""
    return await _insert_new_refund_ids(session, AftersalePlatformRecord, rows)


async def mark_records_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record what applying stored platform records came to: rows of {"rid", "status",
    "outcome", "at"}."""
    if not rows:
        return
    record = table_of(AftersalePlatformRecord)
    await session.execute(
        update(record)
        .where(record.c.id == bindparam("rid"))
        .values(
            status=bindparam("status"), outcome=bindparam("outcome"), applied_at=bindparam("at")
        ),
        rows,
    )


# --- what analytics reads (its after-sales timeline consumer, through the service) ----------


async def analytics_facts(session: AsyncSession, case_nos: Sequence[str]) -> list[dict[str, Any]]:
    """For each case number that exists: its channel, type, currency, responsibility, creation
    time, the earliest time its audit trail reached each status, its lines (SKU, units) in
    line order and the sum of its confirmed refunds; four statements per 1,000 cases."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(case_nos), 1000):
        part = list(case_nos[start : start + 1000])
        cases = (
            await session.execute(
                select(
                    AftersaleCase.id,
                    AftersaleCase.case_no,
                    AftersaleCase.order_no,
                    AftersaleCase.channel,
                    AftersaleCase.type,
                    AftersaleCase.currency,
                    AftersaleCase.responsibility,
                    AftersaleCase.created_at,
                ).where(AftersaleCase.case_no.in_(part))
            )
        ).all()
        if not cases:
            continue
        ids = [c.id for c in cases]
        reached: dict[int, dict[str, datetime]] = {i: {} for i in ids}
        for case_id, status, at in (
            await session.execute(
                select(
                    AftersaleEvent.case_id,
                    AftersaleEvent.to_status,
                    func.min(AftersaleEvent.occurred_at),
                )
                .where(AftersaleEvent.case_id.in_(ids))
                .group_by(AftersaleEvent.case_id, AftersaleEvent.to_status)
            )
        ).all():
            reached[case_id][status] = at
        lines: dict[int, list[tuple[str, int]]] = {i: [] for i in ids}
        for case_id, sku, qty in (
            await session.execute(
                select(AftersaleLine.case_id, AftersaleLine.sku, AftersaleLine.quantity)
                .where(AftersaleLine.case_id.in_(ids))
                .order_by(AftersaleLine.case_id, AftersaleLine.line_no)
            )
        ).all():
            lines[case_id].append((sku, int(qty)))
        refunded = dict(
            (
                await session.execute(
                    select(AftersaleRefund.case_id, func.sum(AftersaleRefund.amount_minor))
                    .where(AftersaleRefund.case_id.in_(ids), AftersaleRefund.state == "succeeded")
                    .group_by(AftersaleRefund.case_id)
                )
            ).all()
        )
        out += [
            {
                "case_no": c.case_no,
                "order_no": c.order_no,
                "channel": c.channel,
                "type": c.type,
                "currency": c.currency,
                "responsibility": c.responsibility,
                "created_at": c.created_at,
                "reached": reached[c.id],
                "lines": lines[c.id],
                "refunded_minor": int(refunded.get(c.id) or 0),
            }
            for c in cases
        ]
    return out
