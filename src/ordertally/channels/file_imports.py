"""Platform order files uploaded from the back office. An upload is stored before it is
acknowledged (a restart loses nothing), then the worker imports it through the command line's
own path (`import_cli.import_file`: the same parsing, dedupe and rejected-rows report, so a file
imported twice creates nothing the second time), recording its progress while it runs. A
running import whose worker stops reporting is run again from the start (safe: dedupe)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import tempfile
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import files, import_cli, repository
from ordertally.channels import service as channels_service
from ordertally.channels.errors import AccountNotFound, FileImportNotFound, FileImportRefused
from ordertally.channels.models import FileImport
from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database
from ordertally.core.settings import get_settings

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

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_SECONDS)
            if seen:
                async with db.transaction() as session:
                    await repository.change_file_import(
                        session, import_id, {**seen, "beat_at": clock.now()}
                    )

    with tempfile.TemporaryDirectory(prefix="ordertally-import-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        await asyncio.to_thread(path.write_bytes, body)
        reporter = asyncio.create_task(report())
        try:
            summary = await import_cli.import_file(
                db,
                account,
                path,
                template=template,
                errors_out=Path(tmp) / "rejected.csv",
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
                "report": summary.report.read_bytes() if summary.report else None,
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
