"""Every query on exception cases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import dialect_of
from ordertally.exceptions.models import (
    ACTIVE,
    CaseCountDelta,
    CasePolicy,
    ExceptionCase,
    ExceptionLog,
)


async def add(session: AsyncSession, **values: Any) -> int:
    """Insert a case; returns its id."""
    result = await session.execute(
        insert(ExceptionCase).values(**values).returning(ExceptionCase.id)
    )
    return int(result.scalar_one())


async def open_for_order(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Open cases of one order."""
    rows = await session.scalars(
        select(ExceptionCase)
        .where(ExceptionCase.order_id == order_id, ExceptionCase.status.in_(ACTIVE))
        .order_by(ExceptionCase.id)
    )
    return list(rows.all())


async def held_among(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """The orders among these that an open hold blocks."""
    if not order_ids:
        return set()
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(
            ExceptionCase.order_id.in_(order_ids),
            ExceptionCase.status.in_(ACTIVE),
            ExceptionCase.blocking.is_(True),
        )
        .distinct()
    )
    return {int(i) for i in rows.all() if i is not None}


async def count_blocking(session: AsyncSession, order_id: int) -> int:
    """Open holds on an order."""
    return int(
        await session.scalar(
            select(func.count()).where(
                ExceptionCase.order_id == order_id,
                ExceptionCase.status.in_(ACTIVE),
                ExceptionCase.blocking.is_(True),
            )
        )
        or 0
    )


async def get(session: AsyncSession, case_id: int) -> ExceptionCase | None:
    """One case by id."""
    return await session.get(ExceptionCase, case_id)


async def resolve(
    session: AsyncSession, case_id: int, at: datetime, by: str, resolution: str
) -> bool:
    """Close an open case; False if it was not open."""
    result = await session.execute(
        update(ExceptionCase)
        .where(ExceptionCase.id == case_id, ExceptionCase.status.in_(ACTIVE))
        .values(status="resolved", resolved_at=at, resolved_by=by, resolution=resolution)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def orders_with_open_case(session: AsyncSession, case_type: str) -> list[int]:
    """Ids of the orders with an open case of a type."""
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(
            ExceptionCase.status.in_(ACTIVE),
            ExceptionCase.type == case_type,
            ExceptionCase.order_id.is_not(None),
        )
        .distinct()
    )
    return [int(i) for i in rows.all() if i is not None]


async def open_counts_by_type(session: AsyncSession) -> dict[str, int]:
    """Open cases per type (from the count ledger)."""
    counts: dict[str, int] = {}
    for case_type, _side, _status, _role, n in await counted(session, status=ACTIVE):
        counts[case_type] = counts.get(case_type, 0) + n
    return counts


# --- the count ledger (kept by triggers, see models.CaseCountDelta) ------------------------------

LEDGER_KEY = (
    CaseCountDelta.type,
    CaseCountDelta.side,
    CaseCountDelta.status,
    CaseCountDelta.owner_role,
)


async def counted(
    session: AsyncSession,
    type: str | None = None,
    side: str | None = None,
    status: str | tuple[str, ...] | None = None,
    owner_role: str | None = None,
) -> list[tuple[str, str, str, str, int]]:
    """How many cases there are per (type, side, status, owner role), among those the given
    values select (None = any; a tuple of states = any of them), summed from the ledger.
    Combinations without a case are absent."""
    where = [
        column == value if isinstance(value, str) else column.in_(value)
        for column, value in zip(LEDGER_KEY, (type, side, status, owner_role), strict=True)
        if value is not None
    ]
    total = func.sum(CaseCountDelta.delta)
    rows = await session.execute(
        select(*LEDGER_KEY, total).where(*where).group_by(*LEDGER_KEY).having(total != 0)
    )
    return [(t, si, st, r, int(n)) for t, si, st, r, n in rows.all()]


async def fold_counts(session: AsyncSession) -> int:
    """Fold the ledger into one row per combination; returns how many rows it folded.
    Only rows this transaction can see are taken (a writer still open keeps its own), so a
    fold running beside writers or another fold never loses or doubles a count."""
    key = ", ".join(column.name for column in LEDGER_KEY)
    if dialect_of(session) == "postgresql":
        folded = await session.execute(
            text(
                f"WITH gone AS (DELETE FROM case_count_delta RETURNING {key}, delta), "
                f"kept AS (INSERT INTO case_count_delta ({key}, delta) "
                f"SELECT {key}, sum(delta) FROM gone GROUP BY {key} HAVING sum(delta) <> 0) "
                "SELECT count(*) FROM gone"
            )
        )
        return int(folded.scalar_one())
    # SQLite: one writer at a time, so read, delete and write back in the same transaction.
    total = func.sum(CaseCountDelta.delta)
    rows = (
        await session.execute(select(*LEDGER_KEY, total).group_by(*LEDGER_KEY).having(total != 0))
    ).all()
    gone = await session.execute(delete(CaseCountDelta))
    if rows:
        await session.execute(
            insert(CaseCountDelta),
            [
                {"type": t, "side": si, "status": st, "owner_role": r, "delta": int(n)}
                for t, si, st, r, n in rows
            ],
        )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


# --- the workbench: state changes, log, policies, SLA clocks ------------------------------------


async def change(
    session: AsyncSession, case_id: int, from_states: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Compare-and-set a case out of one of `from_states`; False if it was in none of them."""
    result = await session.execute(
        update(ExceptionCase)
        .where(ExceptionCase.id == case_id, ExceptionCase.status.in_(from_states))
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def stamp_once(session: AsyncSession, case_id: int, column: str, at: datetime) -> bool:
    """Set a clock column (warned_at, breached_at...) only if unset: True for the one caller
    that set it, so each SLA message is sent once however many workers race."""
    col = getattr(ExceptionCase, column)
    result = await session.execute(
        update(ExceptionCase).where(ExceptionCase.id == case_id, col.is_(None)).values({col: at})
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_logs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append log rows."""
    if rows:
        await session.execute(insert(ExceptionLog), rows)


async def logs_of(session: AsyncSession, case_ids: list[int]) -> list[ExceptionLog]:
    """The log rows of some cases, oldest first."""
    if not case_ids:
        return []
    rows = await session.scalars(
        select(ExceptionLog)
        .where(ExceptionLog.case_id.in_(case_ids))
        .order_by(ExceptionLog.case_id, ExceptionLog.id)
    )
    return list(rows.all())


async def cases_of_order(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Every case of an order, open or not, oldest first."""
    rows = await session.scalars(
        select(ExceptionCase).where(ExceptionCase.order_id == order_id).order_by(ExceptionCase.id)
    )
    return list(rows.all())


async def get_policy(session: AsyncSession, case_type: str) -> CasePolicy | None:
    """A type's stored policy."""
    return await session.get(CasePolicy, case_type)


async def list_policies(session: AsyncSession) -> list[CasePolicy]:
    """Every stored policy."""
    return list((await session.scalars(select(CasePolicy).order_by(CasePolicy.type))).all())


async def upsert_policy(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert or replace a type's policy."""
    await session.execute(delete(CasePolicy).where(CasePolicy.type == values["type"]))
    await session.execute(insert(CasePolicy).values(**values))


async def due_for(
    session: AsyncSession,
    column: str,
    before: datetime,
    limit: int,
    types: list[str] | None = None,
) -> list[ExceptionCase]:
    """Active cases (of `types`, when given) whose `due_at` is before `before` and whose clock
    column is unset."""
    col = getattr(ExceptionCase, column)
    stmt = select(ExceptionCase).where(
        ExceptionCase.status.in_(ACTIVE),
        ExceptionCase.due_at.is_not(None),
        ExceptionCase.due_at <= before,
        col.is_(None),
    )
    if types is not None:
        # "customer.*" stands for every customer.<kind>.
        exact = [t for t in types if not t.endswith(".*")]
        prefixes = [ExceptionCase.type.startswith(t[:-1]) for t in types if t.endswith(".*")]
        stmt = stmt.where(or_(ExceptionCase.type.in_(exact), *prefixes))
    rows = await session.scalars(stmt.order_by(ExceptionCase.due_at, ExceptionCase.id).limit(limit))
    return list(rows.all())


async def count_breached(session: AsyncSession, now: datetime) -> tuple[int, list[int]]:
    """Active cases past their due time: how many, and the oldest few ids."""
    where = (
        ExceptionCase.status.in_(ACTIVE),
        ExceptionCase.due_at.is_not(None),
        ExceptionCase.due_at < now,
    )
    count = int(await session.scalar(select(func.count()).where(*where)) or 0)
    ids = await session.scalars(
        select(ExceptionCase.id).where(*where).order_by(ExceptionCase.due_at).limit(10)
    )
    return count, [int(i) for i in ids.all()]


async def counts_by_type_state(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Active cases per (type, state) (the gauge, from the count ledger)."""
    counts: dict[tuple[str, str], int] = {}
    for case_type, _side, status, _role, n in await counted(session, status=ACTIVE):
        counts[case_type, status] = counts.get((case_type, status), 0) + n
    return counts


async def unannounced(session: AsyncSession, limit: int) -> list[ExceptionCase]:
    """Cases the clock has not looked at since they opened, oldest first."""
    rows = await session.scalars(
        select(ExceptionCase)
        .where(ExceptionCase.announced_at.is_(None), ExceptionCase.status.in_(ACTIVE))
        .order_by(ExceptionCase.id)
        .limit(limit)
    )
    return list(rows.all())


async def orders_with_open(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """Which of these orders have an open case."""
    if not order_ids:
        return set()
    rows = await session.scalars(
        select(ExceptionCase.order_id)
        .where(ExceptionCase.order_id.in_(order_ids), ExceptionCase.status == "open")
        .distinct()
    )
    return {int(r) for r in rows.all() if r is not None}
