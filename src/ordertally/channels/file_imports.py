"""Platform order files uploaded from the back office or over the API. An upload is stored
before it is acknowledged (a restart loses nothing), then the worker imports it through the
command line's own path (`import_cli.import_file`: the same parsing, dedupe and rejected-rows
report, so a file imported twice creates nothing the second time), recording its progress while
it runs. A running import whose worker stops reporting is run again from the start (safe:
dedupe)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
from collections.abc import Mapping
from datetime import timedelta
from pathlib import PurePath
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import files, import_cli, repository
from ordertally.channels import service as channels_service
from ordertally.channels.errors import AccountNotFound, FileImportNotFound, FileImportRefused
from ordertally.channels.models import FileImport
from ordertally.core import clock, phones
from ordertally.core.crypto import get_cipher, open_body, seal_body
from ordertally.core.db import Database
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import get_settings
from ordertally.core.spreadsheet import safe_row
from ordertally.orders import service as orders_service

MAX_BYTES = 20 * 1024 * 1024
SUFFIXES = (".csv", ".xlsx")
TEMPLATES = (*files.TEMPLATES, files.CUSTOM)
QUIET = timedelta(minutes=5)
REPORT_EVERY_SECONDS = 0.5


async def submit(
    session: AsyncSession,
    *,
    account: str,
    template: str | None,
    filename: str,
    body: bytes,
    by: str,
    source_ip: str | None,
) -> int:
    """Store an uploaded order file for the worker to import; refuses (nothing stored) an
    unknown or non-file account, an unknown template, another kind of file, or an empty or
    oversized one."""
    name = PurePath(filename.replace("\\", "/")).name.strip()[:200]
    if PurePath(name).suffix.lower() not in SUFFIXES:
        raise FileImportRefused("only .csv and .xlsx files are imported", field="file")
    if not body or len(body) > MAX_BYTES:
        raise FileImportRefused(
            f"the file must hold 1 to {MAX_BYTES} bytes", field="file", limit=MAX_BYTES
        )
    if template is not None and template not in TEMPLATES:
        raise FileImportRefused(f"unknown template {template!r}", field="template")
    try:
        found = await channels_service.get_account(session, account)
    except AccountNotFound as exc:
        raise FileImportRefused(f"no channel account {account!r}", field="account") from exc
    if found.platform not in import_cli.FILE_PLATFORMS:
        raise FileImportRefused(
            f"{found.platform} accounts take no files", field="account", platform=found.platform
        )
    return await repository.add_file_import(
        session,
        {
            "account": account,
            "template": template,
            "filename": name,
            "body": _seal(body, account),
            "state": "queued",
            "created_by": by[:100],
            "source_ip": source_ip,
            "created_at": clock.now(),
        },
    )


async def get(session: AsyncSession, import_id: int, *, with_report: bool = False) -> FileImport:
    """A file import, or FileImportNotFound."""
    found = await repository.get_file_import(session, import_id, with_report=with_report)
    if found is None:
        raise FileImportNotFound(f"file import {import_id} does not exist")
    return found


def view(found: FileImport) -> dict[str, Any]:
    """An import as the API shows it: its file's name, progress and outcome counts (never the
    file, its rejected rows, who sent it or from where)."""
    return {
        "id": found.id,
        "account": found.account,
        "filename": found.filename,
        "template": found.template,
        "state": found.state,
        "rows": found.rows,
        "total_rows": found.total_rows,
        "orders": found.orders,
        "created": found.created,
        "updated": found.updated,
        "duplicates": found.duplicates,
        "held": found.held,
        "rejected_rows": found.rejected_rows,
        "error": found.error,
        "created_at": found.created_at,
        "started_at": found.started_at,
        "finished_at": found.finished_at,
    }


async def recent(session: AsyncSession, limit: int = 20) -> list[FileImport]:
    """The latest file imports, newest first."""
    return await repository.recent_file_imports(session, limit)


async def to_run(session: AsyncSession) -> list[int]:
    """Queued imports, and those whose worker went quiet."""
    return await repository.file_imports_to_run(session, clock.now() - QUIET, 5)


async def run(db: Database, import_id: int) -> str | None:
    """Import one stored file (claimed first: None when another worker has it); returns its
    final state. No transaction is held while the file is parsed and its orders stored."""
    now = clock.now()
    async with db.transaction() as session:
        claimed = await repository.change_file_import(
            session,
            import_id,
            {"state": "running", "started_at": now, "beat_at": now, "error": None},
            from_states=("queued", "running"),
            quiet_since=now - QUIET,
        )
        if not claimed:
            return None
        found = await repository.get_file_import(session, import_id, with_body=True)
        assert found is not None
        account, template = found.account, found.template
        body = _unseal(found.body, account)
        suffix = PurePath(found.filename).suffix.lower()
    seen: dict[str, Any] = {}

    def on_progress(rows: int, total: int | None, stored: int) -> None:
        seen.update(rows=rows, total_rows=total, orders=stored)

    async def beat() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_SECONDS)
            if seen:
                async with db.transaction() as session:
                    await repository.change_file_import(
                        session, import_id, {**seen, "beat_at": clock.now()}
                    )

    # The file is parsed from memory and its rejected rows written to memory: buyers' cells are
    # never in clear on disk (issue 14); the report is stored sealed like the upload.
    source = files.InMemoryFile(f"upload{suffix}", body)
    rejected = io.BytesIO()
    reporter = asyncio.create_task(beat())
    try:
        summary = await import_cli.import_file(
            db,
            account,
            source,
            template=template,
            errors_out=rejected,
            chunk=get_settings().import_chunk_orders,
            progress=on_progress,
        )
        outcome: dict[str, Any] = {
            "state": "done",
            "rows": summary.rows,
            "orders": summary.orders,
            "created": summary.created,
            "updated": summary.updated,
            "duplicates": summary.duplicates,
            "held": summary.held,
            "rejected_rows": summary.rejected_rows,
            "report": (
                _seal_report(rejected.getvalue(), account) if summary.rejected_rows else None
            ),
            "body": b"",  # imported: the orders and the report are what remains
        }
    except (files.FileError, import_cli.ImportRefused) as exc:
        outcome = {"state": "failed", "error": str(exc)[:2000]}
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    async with db.transaction() as session:
        await repository.change_file_import(
            session, import_id, {**outcome, "finished_at": clock.now()}
        )
    return str(outcome["state"])


def _context(account: str) -> str:
    return f"channels.file_import:{account}"


def _seal(body: bytes, account: str) -> bytes:
    """An uploaded order file as stored until it is imported: sealed with the PII key, like
    the inboxes' raw bodies (ADR 0030), since it holds buyers' names, phones and addresses."""
    return get_cipher().encrypt(base64.b64encode(body).decode(), _context(account)).encode()


def _unseal(stored: bytes, account: str) -> bytes:
    return base64.b64decode(get_cipher().decrypt(stored.decode(), _context(account)))


def _report_context(account: str) -> str:
    return f"channels.file_import.report:{account}"


def _seal_report(report: bytes, account: str) -> bytes:
    """The rejected rows as stored: sealed with the PII key (they hold buyers' cells)."""
    return seal_body(report.decode("utf-8"), _report_context(account)).encode()


# Fields whose cells are a buyer's personal data; the report masks them unless asked for clear.
PII_FIELDS = (
    "buyer_name",
    "buyer_phone",
    "buyer_platform_id",
    "buyer_email",
    "receiver_name",
    "receiver_phone",
    "street",
    "address",
    "postal_code",
)
_NAMES = ("buyer_name", "receiver_name")
_PHONES = ("buyer_phone", "receiver_phone")


def _personal_headers(custom: Mapping[str, str] | None) -> dict[str, str]:
    """Header text -> PII field, over every template (and the account's own mapping)."""
    out: dict[str, str] = {}
    for template in files.TEMPLATES.values():
        for field in PII_FIELDS:
            out |= dict.fromkeys(template.headers_of(field), field)
    for field, header in (custom or {}).items():
        if field in PII_FIELDS:
            out[header.strip()] = field
    return out


def _masked(field: str, cell: str) -> str:
    if not cell:
        return cell
    if field in _NAMES:
        return orders_service.mask_name(cell)
    if field in _PHONES:
        try:
            return phones.mask(phones.normalise(cell))
        except OrdertallyError:
            pass
    return "*" * min(len(cell), 8)


async def rejected_report(
    session: AsyncSession, found: FileImport, *, personal_data: bool
) -> bytes | None:
    """An import's rejected rows as a CSV to download (None: none): every cell through the one
    neutraliser, and buyers' personal cells masked unless `personal_data` (the caller's role
    decides; the caller logs it)."""
    if not found.report:
        return None
    text = open_body(found.report.decode("utf-8"), _report_context(found.account))
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    if not personal_data and rows:
        custom = None
        with contextlib.suppress(AccountNotFound):
            account = await channels_service.get_account(session, found.account)
            custom = (account.config or {}).get("file_columns")
        personal = _personal_headers(custom)
        fields = {i: personal[h.strip()] for i, h in enumerate(rows[0]) if h.strip() in personal}
        rows = [rows[0]] + [
            [_masked(fields[i], c) if i in fields else c for i, c in enumerate(row)]
            for row in rows[1:]
        ]
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(safe_row(row))
    return out.getvalue().encode("utf-8-sig")
