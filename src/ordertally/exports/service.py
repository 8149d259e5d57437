"""Export use cases: request an export (checked, audited, queued), run it in one snapshot
into a streamed file with its manifest, and expire files after their retention."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.core.settings import get_settings
from ordertally.exports import repository
from ordertally.exports.errors import (
    ExportInconsistent,
    ExportNotFound,
    ExportOutOfScope,
    ExportTooLarge,
    InvalidExport,
    PiiNotAllowed,
    TemplateExists,
    UnknownTemplate,
)
from ordertally.exports.models import ExportAudit, ExportTemplate
from ordertally.exports.schemas import ExportIn, TemplateIn
from ordertally.exports.templates import Column, Template, load_built_in
from ordertally.exports.templates.base import RenderContext, sheet_cells
from ordertally.exports.writer import (
    AnyWriter,
    CopyLines,
    CsvWriter,
    FileWriter,
    SheetLines,
    SheetXlsxWriter,
    Watermark,
    XlsxTooLarge,
    file_sha256,
    open_writer,
)

log = logging.getLogger(__name__)

# Roles that may see buyers' personal data in clear in an export (those who may reveal an
# order's contact, but the warehouse, which sees only a label's fields).
PII_ROLES = frozenset({"admin", "ops", "cs"})
RETENTION = timedelta(days=7)
PROGRESS_EVERY = 10_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks for an export, and from where."""

    actor_id: str
    role: str
    source_ip: str | None
    # A scoped key's or user's warehouses and channel accounts (None: not scoped).
    warehouses: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None


def _scoped_filters(
    template: Template, filters: dict[str, str], channels: tuple[str, ...] | None
) -> dict[str, str]:
    """A channel-scoped requester's export is filtered to one of its accounts: the one it
    names, or its only one; a template that cannot be filtered by channel is refused."""
    if channels is None:
        return filters
    if "channel" not in template.filters:
        raise ExportOutOfScope(f"template {template.name} cannot be limited to your channels")
    named = filters.get("channel")
    if named is None and len(channels) == 1:
        return {**filters, "channel": channels[0]}
    if named not in channels:
        raise ExportOutOfScope("name one of your channel accounts in filters.channel")
    return filters


def visible_to(export: ExportAudit, channels: tuple[str, ...] | None) -> bool:
    """Whether a channel-scoped caller may see an export: only one filtered to its accounts."""
    return channels is None or (export.filters or {}).get("channel") in channels


def check_visible(export: ExportAudit, channels: tuple[str, ...] | None) -> ExportAudit:
    """The export, or ExportOutOfScope for a channel-scoped caller and another's export."""
    if not visible_to(export, channels):
        raise ExportOutOfScope(f"export {export.export_no} is outside your channel accounts")
    return export


def templates() -> dict[str, Template]:
    """The built-in templates by name."""
    return load_built_in()


async def saved_templates(session: AsyncSession) -> list[ExportTemplate]:
    """Every saved custom template."""
    return await repository.saved_templates(session)


async def save_template(session: AsyncSession, body: TemplateIn, actor_id: str) -> ExportTemplate:
    """Save a custom template (a built-in template's rows, some of its columns)."""
    base = templates().get(body.base)
    if base is None:
        raise UnknownTemplate(f"no built-in template {body.base!r}", field="base")
    if body.name in templates() or await repository.get_saved(session, body.name) is not None:
        raise TemplateExists(f"template {body.name!r} exists", field="name")
    _check_columns(base, body.columns)
    return await repository.add_saved(
        session,
        {
            "name": body.name,
            "base": body.base,
            "columns": list(body.columns),
            "created_by": actor_id,
            "created_at": clock.now(),
        },
    )


def _check_columns(template: Template, keys: list[str]) -> None:
    unknown = [k for k in keys if template.column(k) is None]
    if unknown:
        raise InvalidExport(
            f"template {template.name} has no column {', '.join(unknown)}", field="columns"
        )
    if len(set(keys)) != len(keys):
        raise InvalidExport("a column is chosen twice", field="columns")


async def _resolve(session: AsyncSession, name: str) -> tuple[Template, list[str]]:
    """A template by name (built-in or saved) and its default columns."""
    built_in = templates().get(name)
    if built_in is not None:
        return built_in, [c.key for c in built_in.columns]
    saved = await repository.get_saved(session, name)
    if saved is None or saved.base not in templates():
        raise UnknownTemplate(f"no export template {name!r}", field="template")
    return templates()[saved.base], list(saved.columns)


async def template_of(session: AsyncSession, name: str) -> tuple[Template, list[str]]:
    """A template by name (built-in or saved): the built-in it reads and its columns."""
    return await _resolve(session, name)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidExport(f"{name!r} is not a time zone", field="timezone") from exc


async def request_export(
    session: AsyncSession, body: ExportIn, requester: Requester
) -> ExportAudit:
    """Check an export request and queue it; its audit row is written now, in this
    transaction (a refused request writes nothing)."""
    template, default_columns = await _resolve(session, body.template)
    columns = body.columns or default_columns
    _check_columns(template, columns)
    unknown = sorted(set(body.filters) - set(template.filters))
    if unknown:
        raise InvalidExport(
            f"template {template.name} cannot be filtered by {', '.join(unknown)}",
            field="filters",
        )
    if body.date_from and body.date_to and body.date_from > body.date_to:
        raise InvalidExport("date_from is after date_to", field="date_from")
    timezone = body.timezone or get_settings().timezone
    _zone(timezone)
    wants_pii = body.unmask_pii and any(template.column(k).pii for k in columns)  # type: ignore[union-attr]
    if body.unmask_pii and requester.role not in PII_ROLES:
        raise PiiNotAllowed(f"role {requester.role!r} may not export personal data in clear")
    if body.unmask_pii and requester.warehouses is not None:
        # A warehouse-scoped caller sees a label's fields of its own allocated orders only.
        raise PiiNotAllowed("a warehouse-scoped caller may not export personal data in clear")
    if wants_pii and not body.pii_reason:
        raise InvalidExport("exporting personal data in clear needs a reason", field="pii_reason")
    filters: dict[str, Any] = dict(
        sorted(_scoped_filters(template, body.filters, requester.channels).items())
    )
    if body.date_from:
        filters["date_from"] = body.date_from.isoformat()
    if body.date_to:
        filters["date_to"] = body.date_to.isoformat()
    now = clock.now()
    export = await repository.add_export(
        session,
        {
            "export_no": f"EXP{now:%Y%m%d%H%M%S}{secrets.token_hex(4).upper()}",
            "template": body.template,
            "format": body.format,
            "columns": columns,
            "filters": filters,
            "timezone": timezone,
            "pii_unmasked": wants_pii,
            "pii_reason": body.pii_reason if wants_pii else None,
            "actor_id": requester.actor_id,
            "role": requester.role,
            "source_ip": requester.source_ip,
            "state": "queued",
            "rows_done": 0,
            "created_at": now,
        },
    )
    if wants_pii:
        log.info(
            "pii access: export %s of %s by %s (%s) from %s: %s",
            export.export_no,
            template.name,
            requester.actor_id,
            requester.role,
            requester.source_ip,
            body.pii_reason,
        )
    return export


async def get_export(session: AsyncSession, export_no: str) -> ExportAudit:
    """An export by number (404 if unknown)."""
    export = await repository.get_export(session, export_no)
    if export is None:
        raise ExportNotFound(f"export {export_no} does not exist")
    return export


async def list_exports(session: AsyncSession, limit: int = 50) -> list[ExportAudit]:
    """The newest exports."""
    return await repository.list_exports(session, limit)


def export_dir() -> Path:
    """Where export files are written (under the data directory)."""
    path = get_settings().data_dir / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_path(export: ExportAudit) -> Path | None:
    """The file of a finished export, if it still exists."""
    if export.state != "done" or not export.file_name:
        return None
    path = export_dir() / export.file_name
    return path if path.is_file() else None


def where_of(export: ExportAudit) -> dict[str, Any]:
    """The filters as the repository applies them: merchant-local days to UTC bounds."""
    zone = _zone(export.timezone)
    filters = dict(export.filters)
    where: dict[str, Any] = {}
    if "date_from" in filters:
        start = date.fromisoformat(filters.pop("date_from"))
        where["since"] = datetime.combine(start, time(), zone)
    if "date_to" in filters:
        end = date.fromisoformat(filters.pop("date_to")) + timedelta(days=1)
        where["until"] = datetime.combine(end, time(), zone)
    where["equal"] = filters
    return where


async def database_aggregates(session: AsyncSession, export: ExportAudit) -> dict[str, Any]:
    """The database's own count and per-currency sums for an export's filters (the proof an
    export is compared with)."""
    template, _ = await _resolve(session, export.template)
    where = where_of(export)
    sums = await repository.sums_by_currency(session, template, where)
    return {
        "row_count": await repository.count_rows(session, template, where),
        "sums": {cur: format_minor(v, cur) for cur, v in sorted(sums.items())},
    }


async def _update(db: Database, export_id: int, **values: Any) -> None:
    async with db.transaction() as session:
        await repository.set_progress(session, export_id, **values)


async def run_export(
    db: Database,
    export: ExportAudit,
    on_progress: Progress | None = None,
    *,
    render_in_database: bool = True,
) -> dict[str, Any]:
    """Write a claimed (running) export's file from one snapshot and record its manifest.

    The count and the rows are read in the same read-only snapshot; the file is streamed row
    by row (constant memory); progress is recorded in short transactions of its own. A CSV
    file on PostgreSQL whose columns all render in SQL is formatted by the database and
    streamed through COPY (the same bytes as the Python renderers: ADR 0036 addendum);
    `render_in_database=False` keeps the Python path (the equality test compares the two).
    """
    async with db.transaction(write=False) as session:
        snapshot_at = await repository.open_snapshot(session)  # the transaction's first statement
        template, _ = await _resolve(session, export.template)
        columns: list[Column] = [c for k in export.columns if (c := template.column(k))]
        where = where_of(export)
        total = await repository.count_rows(session, template, where)
        await _update(db, export.id, rows_total=total, snapshot_at=snapshot_at)
        title = f"{template.title_zh} {template.title_en}"
        watermark = Watermark(
            export_no=export.export_no,
            actor_id=export.actor_id,
            role=export.role,
            source_ip=export.source_ip,
            created_at=_iso(export.created_at),
            snapshot_at=_iso(snapshot_at),
            filters=orjson.dumps(export.filters, option=orjson.OPT_SORT_KEYS).decode(),
            timezone=export.timezone,
            title=title,
        )
        name = f"{export.export_no}.{export.format}"
        path = export_dir() / name
        try:
            writer = open_writer(
                export.format,
                path,
                watermark,
                get_settings().export_xlsx_writer,
                width=len(columns),
                total=total,
            )
        except XlsxTooLarge as exc:
            raise ExportTooLarge(str(exc)) from exc
        writer.header([c.header(export.timezone) for c in columns])
        cells = _sql_cells(session, export, columns) if render_in_database else None
        if cells is not None and isinstance(writer, SheetXlsxWriter):
            done, sums = await _copy_sheet(
                db, session, export, template, columns, writer, total, on_progress
            )
        elif cells is not None:
            kinds = [c.kind for c in columns]
            done, sums = await _copy_rows(
                db, session, export, template, (cells, kinds), writer, total, on_progress
            )
        else:
            done, sums = await _render_rows(
                db, session, export, template, columns, writer, total, on_progress
            )
        writer.close([f"行数 Rows: {done}", watermark.line()])
    if done != total:
        raise ExportInconsistent(f"export {export.export_no} wrote {done} rows of {total}")
    if on_progress:
        on_progress(done, total)
    manifest = {
        "template": export.template,
        "columns": export.columns,
        "filters": export.filters,
        "timezone": export.timezone,
        "pii_unmasked": export.pii_unmasked,
        "row_count": done,
        "sums": {cur: format_minor(v, cur) for cur, v in sorted(sums.items())},
        "body_sha256": writer.body.hexdigest(),
        # What differs per run: the delivered file (its watermark) and the snapshot time.
        "export_no": export.export_no,
        "format": export.format,
        "snapshot_at": _iso(snapshot_at),
        "file_sha256": file_sha256(path),
        "file_bytes": path.stat().st_size,
    }
    now = clock.now()
    async with db.transaction() as session:
        await repository.finish(
            session,
            export.id,
            state="done",
            rows_done=done,
            manifest=manifest,
            file_name=name,
            finished_at=now,
            expires_at=now + RETENTION,
        )
    return manifest


def _sql_cells(
    session: AsyncSession, export: ExportAudit, columns: list[Column]
) -> list[Any] | None:
    """The columns' cells as SQL text expressions, or None when the file is rendered in Python:
    not PostgreSQL, a column without a SQL rendering, personal data in clear (it needs the
    cipher), or a single column (the csv module quotes a lone empty cell)."""
    if not repository.can_copy(session) or len(columns) < 2:
        return None
    if export.pii_unmasked and any(c.pii for c in columns):
        return None
    cells = [c.sql(c.reads) if c.sql else None for c in columns]
    return None if any(cell is None for cell in cells) else cells


async def _copy_rows(
    db: Database,
    session: AsyncSession,
    export: ExportAudit,
    template: Template,
    columns: tuple[list[Any], list[str]],
    writer: AnyWriter,
    total: int,
    on_progress: Progress | None,
) -> tuple[int, dict[str, int]]:
    """The body rendered by PostgreSQL as CSV lines and streamed through COPY (an XLSX file
    parses them back into cells: the body hashed is the same); the per-currency sums are the
    snapshot's own aggregate (the same rows)."""
    cells, kinds = columns
    where = where_of(export)
    sums: dict[str, int] = {}
    if template.amount is not None:
        found = await repository.sums_by_currency(session, template, where)
        sums = {cur: v for cur, v in found.items() if cur is not None}
    lines = CopyLines(writer.body)
    marks = [PROGRESS_EVERY]

    async def sink(data: bytes) -> None:
        rows = lines.feed(data)
        if not isinstance(writer, CsvWriter | SheetXlsxWriter):
            writer.csv_rows(rows, kinds)
        if lines.rows >= marks[0]:
            marks[0] = (lines.rows // PROGRESS_EVERY + 1) * PROGRESS_EVERY
            await _update(db, export.id, rows_done=lines.rows)
            if on_progress:
                on_progress(lines.rows, total)

    await repository.copy_csv_lines(session, template, cells, where, export.timezone, sink)
    lines.close()
    return lines.rows, sums


async def _copy_sheet(
    db: Database,
    session: AsyncSession,
    export: ExportAudit,
    template: Template,
    columns: list[Column],
    writer: SheetXlsxWriter,
    total: int,
    on_progress: Progress | None,
) -> tuple[int, dict[str, int]]:
    """The body rendered by PostgreSQL as the sheet's XML rows and, from the same values, the
    CSV lines that are hashed (ADR 0041); Python only splits each block and streams the XML
    into the deflated sheet. The per-currency sums are the snapshot's own aggregate."""
    where = where_of(export)
    sums: dict[str, int] = {}
    if template.amount is not None:
        found = await repository.sums_by_currency(session, template, where)
        sums = {cur: v for cur, v in found.items() if cur is not None}
    values, build = sheet_cells(columns, template.root)
    lines = SheetLines(writer)
    marks = [PROGRESS_EVERY]

    async def sink(data: bytes) -> None:
        lines.feed(data)
        if lines.rows >= marks[0]:
            marks[0] = (lines.rows // PROGRESS_EVERY + 1) * PROGRESS_EVERY
            await _update(db, export.id, rows_done=lines.rows)
            if on_progress:
                on_progress(lines.rows, total)

    await repository.copy_sheet_rows(session, template, values, build, where, export.timezone, sink)
    lines.close()
    return lines.rows, sums


async def _render_rows(
    db: Database,
    session: AsyncSession,
    export: ExportAudit,
    template: Template,
    columns: list[Column],
    writer: FileWriter,
    total: int,
    on_progress: Progress | None,
) -> tuple[int, dict[str, int]]:
    """The body rendered row by row in Python."""
    reads: list[Any] = []
    index: dict[int, int] = {}

    def slot(expr: Any) -> int:
        if id(expr) not in index:
            index[id(expr)] = len(reads)
            reads.append(expr)
        return index[id(expr)]

    # Per column, its renderer and a getter of the values it reads as one tuple.
    plan = [(c.render, _getter([slot(e) for e in c.reads])) for c in columns]
    amount = (slot(template.amount[0]), slot(template.amount[1])) if template.amount else None
    ctx = RenderContext(_zone(export.timezone), export.pii_unmasked)
    sums: dict[str, int] = {}
    done = 0
    async for row in repository.stream_rows(session, template, reads, where_of(export)):
        writer.row([render(get(row), ctx) for render, get in plan])
        if amount is not None and row[amount[0]] is not None:
            cur = row[amount[1]]
            sums[cur] = sums.get(cur, 0) + row[amount[0]]
        done += 1
        if done % PROGRESS_EVERY == 0:
            await _update(db, export.id, rows_done=done)
            if on_progress:
                on_progress(done, total)
    return done, sums


def _getter(indexes: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function from a row to the tuple of its values at these indexes (`itemgetter` gives a
    bare value for one index: wrapped, so a renderer always gets a tuple)."""
    if len(indexes) == 1:
        one = indexes[0]
        return lambda row: (row[one],)
    return itemgetter(*indexes)


def _iso(value: datetime) -> str:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z")


async def claim(db: Database, export_no: str) -> ExportAudit | None:
    """Claim one queued export to run it here (the CLI); None if it is not queued."""
    async with db.transaction() as session:
        export = await repository.get_export(session, export_no)
        if export is None:
            raise ExportNotFound(f"export {export_no} does not exist")
        return await repository.claim(session, export.id, clock.now())


async def run_claimed(
    db: Database, export: ExportAudit, on_progress: Progress | None = None
) -> dict[str, Any] | None:
    """Run a claimed export; a failure is recorded on its row (state failed) and re-raised."""
    try:
        return await run_export(db, export, on_progress)
    except Exception as exc:
        log.exception("export %s failed", export.export_no)
        async with db.transaction() as session:
            await repository.finish(
                session,
                export.id,
                state="failed",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                finished_at=clock.now(),
                expires_at=clock.now() + RETENTION,
            )
        raise


async def run_queued(db: Database, limit: int = 5) -> int:
    """Run up to `limit` queued exports, one at a time; returns how many ran."""
    ran = 0
    for _ in range(limit):
        async with db.transaction() as session:
            export = await repository.claim_queued(session, clock.now())
        if export is None:
            break
        # A failure is recorded on the export's row; the next export still runs.
        with contextlib.suppress(Exception):
            await run_claimed(db, export)
        ran += 1
    return ran


async def expire(db: Database, now: datetime) -> int:
    """Delete the files of exports past their retention and mark them expired."""
    async with db.transaction() as session:
        due = await repository.expired_exports(session, now, 500)
        for export in due:
            if export.file_name:
                (export_dir() / export.file_name).unlink(missing_ok=True)
        await repository.mark_expired(session, [e.id for e in due])
    return len(due)
