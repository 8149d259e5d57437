"""Every query of the exports domain: the snapshot an export reads in, the template's rows
(built from its declared columns), the audit rows and the saved templates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import dialect_of
from ordertally.exports.models import ExportAudit, ExportTemplate
from ordertally.exports.templates import Template

# Rows fetched per round trip while streaming (a server-side cursor on PostgreSQL).
STREAM_BATCH = 5000


async def open_snapshot(session: AsyncSession) -> datetime:
    """Make this transaction one consistent snapshot and return its time.

    On PostgreSQL: REPEATABLE READ, READ ONLY, as the transaction's first statement, so the
    count and every row come from the same snapshot of the primary. On SQLite a read
    transaction in WAL mode already sees one snapshot from its first read to its end.
    """
    if dialect_of(session) == "postgresql":
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        at = await session.scalar(select(func.now()))
        assert at is not None
        return clock.as_utc(at)
    await session.execute(select(func.count()).select_from(ExportAudit))  # takes the snapshot
    return clock.now()


def _filtered(stmt: Select[Any], template: Template, where: dict[str, Any]) -> Select[Any]:
    stmt = stmt.select_from(template.root)
    for model, on in template.joins:
        stmt = stmt.outerjoin(model, on)  # outer: a join never drops a row of the root
    since, until = where.get("since"), where.get("until")
    if since is not None:
        stmt = stmt.where(template.time >= since)
    if until is not None:
        stmt = stmt.where(template.time < until)
    for name, value in where.get("equal", {}).items():
        stmt = stmt.where(template.filters[name] == value)
    return stmt


async def count_rows(session: AsyncSession, template: Template, where: dict[str, Any]) -> int:
    """How many rows the export will write (same snapshot as the rows)."""
    return int(
        await session.scalar(_filtered(select(func.count(template.key)), template, where)) or 0
    )


async def sums_by_currency(
    session: AsyncSession, template: Template, where: dict[str, Any]
) -> dict[str, int]:
    """The database's own per-currency sum of the template's amount for these filters."""
    if template.amount is None:
        return {}
    minor, currency = template.amount
    stmt = _filtered(select(currency, func.sum(minor)), template, where).group_by(currency)
    return {cur: int(total or 0) for cur, total in (await session.execute(stmt)).all()}


async def stream_rows(
    session: AsyncSession, template: Template, reads: Sequence[Any], where: dict[str, Any]
) -> AsyncIterator[Sequence[Any]]:
    """The rows of the export, in key order, streamed in batches (constant memory)."""
    stmt = _filtered(select(*reads), template, where).order_by(template.key)
    result = await session.stream(stmt.execution_options(yield_per=STREAM_BATCH))
    async for partition in result.partitions(STREAM_BATCH):
        for row in partition:
            yield row


def can_copy(session: AsyncSession) -> bool:
    """Whether rows can be rendered by the database and streamed through COPY (PostgreSQL
    through asyncpg)."""
    bind = session.get_bind()
    return bind.dialect.name == "postgresql" and bind.dialect.driver == "asyncpg"


async def copy_csv_lines(
    session: AsyncSession,
    template: Template,
    cells: Sequence[Any],
    where: dict[str, Any],
    timezone: str,
    sink: Callable[[bytes], Awaitable[Any]],
) -> None:
    """The export's rows as CSV lines rendered by PostgreSQL (`cells`: one text expression
    per column), in key order, streamed through `COPY … TO STDOUT` into `sink` in this
    transaction's snapshot. The session's time zone is the export's for the rest of the
    transaction (local times and days are rendered in it)."""
    stmt = _filtered(select(_csv_line(cells)), template, where).order_by(template.key)
    await _copy(session, stmt, timezone, sink)


def _csv_line(cells: Sequence[Any]) -> Any:
    parts: list[Any] = []
    for cell in cells:
        parts.extend((cell, literal(",")))
    return func.concat(*parts[:-1])


async def copy_sheet_rows(
    session: AsyncSession,
    template: Template,
    values: Sequence[Any],
    cells: Callable[[list[Any]], tuple[Any, Any]],
    where: dict[str, Any],
    timezone: str,
    sink: Callable[[bytes], Awaitable[Any]],
) -> None:
    """The export's rows rendered by PostgreSQL twice, from the same values: each COPY line is
    the row as SpreadsheetML (`<row>…</row>`), a tab, and the row as a CSV line. `values`: one
    text expression per column, computed once per row (a subquery the planner cannot flatten:
    OFFSET 0); `cells` turns the subquery's columns into the XML row and the CSV line.
    Same snapshot, key order and time zone as `copy_csv_lines`."""
    inner = (
        _filtered(select(*(v.label(f"v{i}") for i, v in enumerate(values))), template, where)
        .order_by(template.key)
        .offset(literal_column("0"))
        .subquery("cells")
    )
    xml, csv = cells([inner.c[f"v{i}"] for i in range(len(values))])
    await _copy(session, select(xml, csv), timezone, sink)


async def _copy(
    session: AsyncSession, stmt: Any, timezone: str, sink: Callable[[bytes], Awaitable[Any]]
) -> None:
    """Stream a statement's rows through `COPY … TO STDOUT` (text format) in this transaction,
    with the session's time zone set to `timezone` for the rest of it."""
    conn = await session.connection()
    await conn.execute(select(func.set_config("TimeZone", timezone, True)))
    # No JIT: compiling these wide expressions costs more CPU than it saves (measured: the
    # CSV lines ~20% less backend CPU without it, the XLSX rows half).
    await conn.execute(select(func.set_config("jit", "off", True)))
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup or ()]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.copy_from_query(compiled.string, *args, output=sink)


# --- the audit table ------------------------------------------------------------------------


async def add_export(session: AsyncSession, values: dict[str, Any]) -> ExportAudit:
    """Insert an export's audit row."""
    export = ExportAudit(**values)
    session.add(export)
    await session.flush()
    return export


async def get_export(session: AsyncSession, export_no: str) -> ExportAudit | None:
    """An export by its number."""
    return await session.scalar(select(ExportAudit).where(ExportAudit.export_no == export_no))


async def list_exports(session: AsyncSession, limit: int) -> list[ExportAudit]:
    """The newest exports first."""
    rows = await session.scalars(select(ExportAudit).order_by(ExportAudit.id.desc()).limit(limit))
    return list(rows.all())


async def claim_queued(session: AsyncSession, now: datetime) -> ExportAudit | None:
    """Take the oldest queued export (queued -> running, compare-and-set)."""
    stmt = (
        select(ExportAudit.id)
        .where(ExportAudit.state == "queued")
        .order_by(ExportAudit.id)
        .limit(1)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    export_id = await session.scalar(stmt)
    if export_id is None:
        return None
    return await claim(session, export_id, now)


async def claim(session: AsyncSession, export_id: int, now: datetime) -> ExportAudit | None:
    """Move one export from queued to running; None if someone else did."""
    result = await session.execute(
        update(ExportAudit)
        .where(ExportAudit.id == export_id, ExportAudit.state == "queued")
        .values(state="running", started_at=now)
        .returning(ExportAudit)
    )
    return result.scalar_one_or_none()


async def set_progress(session: AsyncSession, export_id: int, **values: Any) -> None:
    """Record progress (rows done, the total once counted, the snapshot time)."""
    await session.execute(
        update(ExportAudit)
        .where(ExportAudit.id == export_id, ExportAudit.state == "running")
        .values(**values)
    )


async def finish(session: AsyncSession, export_id: int, **values: Any) -> None:
    """Close a running export (done or failed)."""
    await session.execute(
        update(ExportAudit)
        .where(ExportAudit.id == export_id, ExportAudit.state == "running")
        .values(**values)
    )


async def expired_exports(session: AsyncSession, now: datetime, limit: int) -> list[ExportAudit]:
    """Finished exports past their retention."""
    rows = await session.scalars(
        select(ExportAudit)
        .where(ExportAudit.state.in_(("done", "failed")), ExportAudit.expires_at < now)
        .order_by(ExportAudit.id)
        .limit(limit)
    )
    return list(rows.all())


async def mark_expired(session: AsyncSession, export_ids: list[int]) -> None:
    """Mark exports expired (their files are gone)."""
    if export_ids:
        await session.execute(
            update(ExportAudit)
            .where(ExportAudit.id.in_(export_ids), ExportAudit.state.in_(("done", "failed")))
            .values(state="expired", file_name=None)
        )


# --- saved templates ------------------------------------------------------------------------


async def saved_templates(session: AsyncSession) -> list[ExportTemplate]:
    """Every saved custom template."""
    return list((await session.scalars(select(ExportTemplate).order_by(ExportTemplate.name))).all())


async def get_saved(session: AsyncSession, name: str) -> ExportTemplate | None:
    """A saved template by name."""
    return await session.scalar(select(ExportTemplate).where(ExportTemplate.name == name))


async def add_saved(session: AsyncSession, values: dict[str, Any]) -> ExportTemplate:
    """Insert a saved template."""
    row = ExportTemplate(**values)
    session.add(row)
    await session.flush()
    return row
