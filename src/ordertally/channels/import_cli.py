"""`ordertally import`: platform order files (CSV, XLSX) into orders, with a progress bar.

The file is parsed row by row (channels/files.py) and stored through `ingest_orders` in chunks
of `import_chunk_orders` (one transaction each): the same dedupe as webhooks and pulls, so
importing a file twice creates nothing the second time. Rejected rows (and the rows of the
orders they belong to) are written with their reasons to a CSV next to the input (or --errors).

Exit codes: 0 every row imported (created, updated or already known); 1 the file could not be
imported at all (unreadable, unknown layout, required columns missing, unknown account or an
account of another platform); 2 the file was imported but some rows were rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from ordertally.channels import files
from ordertally.channels.canonical import CanonicalOrder
from ordertally.core.db import Database

# Account platforms that take order files; "file" accounts take any template.
# A Pinduoduo account takes its export too: the same (account, order number) as its pulls.
FILE_PLATFORMS = ("douyin", "jd", "taobao", "pinduoduo", "file")

EXIT_OK, EXIT_BAD_FILE, EXIT_REJECTED = 0, 1, 2

Progress = Callable[[int, int | None, int], None]  # rows parsed, rows expected, orders stored


@dataclass(slots=True)
class ImportSummary:
    account: str
    template: str
    rows: int = 0
    orders: int = 0  # good orders parsed
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    held: int = 0
    rejected_rows: int = 0
    not_stored: list[tuple[str, str]] = field(default_factory=list)  # ingest errors
    report: Path | None = None
    parse_seconds: float = 0.0
    ingest_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_REJECTED if self.rejected_rows else EXIT_OK


class ImportRefused(Exception):
    """The import cannot start (exit 1); the message says why, in Chinese and English."""


async def _account_platform(db: Database, code: str) -> str:
    return (await _account_file_settings(db, code))[0]


async def _account_file_settings(db: Database, code: str) -> tuple[str, dict[str, str] | None]:
    """The account's platform and its saved column mapping (None: none saved)."""
    from ordertally.channels import service

    async with db.transaction(write=False) as session:
        try:
            account = await service.get_account(session, code)
        except Exception as exc:
            raise ImportRefused(
                f"渠道账户不存在 / channel account {code!r} does not exist"
            ) from exc
    if account.platform not in FILE_PLATFORMS:
        raise ImportRefused(
            f"账户 {code} 的平台 {account.platform} 不支持文件导入 / account {code} is a "
            f"{account.platform} account; files import into {', '.join(FILE_PLATFORMS)} accounts"
        )
    columns = (account.config or {}).get("file_columns")
    return account.platform, dict(columns) if columns else None


# Files at least this big are parsed in a child process (see import_file).
PROCESS_PARSE_BYTES = 2_000_000


@dataclass
class _Chunk:
    orders: list[CanonicalOrder]
    lines: dict[str, tuple[int, ...]]
    rejected: list[files.Rejected]
    rows: int  # data rows read so far
    parse_seconds: float  # parsing time so far
    header_names: list[str] | None = None  # with the last chunk


def _cut(
    parser: files.FileParser, results: Iterator[files.ParsedOrder | files.Rejected], size: int
) -> Iterator[_Chunk]:
    """The parse results in chunks of `size` good orders (the last one carries the header)."""
    spent = 0.0
    while True:
        begin = time.perf_counter()
        part = _Chunk([], {}, [], 0, 0.0)
        ended = True
        for item in results:
            if isinstance(item, files.Rejected):
                part.rejected.append(item)
                continue
            part.orders.append(item.order)
            part.lines[item.order.external_id] = item.lines
            if len(part.orders) >= size:
                ended = False
                break
        spent += time.perf_counter() - begin
        part.rows, part.parse_seconds = parser.stats.rows, spent
        if ended:
            part.header_names = parser.header_names
            yield part
            return
        yield part


async def _thread_chunks(
    parser: files.FileParser, results: Iterator[files.ParsedOrder | files.Rejected], size: int
) -> AsyncGenerator[_Chunk, None]:
    cut = _cut(parser, results, size)
    while True:
        part = await asyncio.to_thread(next, cut, None)
        if part is None:
            return
        yield part


def _child_parse(
    path: files.Source,
    template: str | None,
    platform: str,
    size: int,
    out: Any,
    columns: dict[str, str] | None = None,
) -> None:
    """In the child process: parse the whole file, sending chunks back (bounded queue)."""
    try:
        chosen = files.template_for(template, columns) if template else None
        parser, results = files.parse_file(path, chosen, platform)
        for part in _cut(parser, results, size):
            out.put(("chunk", part))
        out.put(("end", None))
    except BaseException as exc:  # reported to the parent, which raises it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


async def _child_chunks(
    path: files.Source,
    template: str | None,
    platform: str,
    size: int,
    columns: dict[str, str] | None = None,
) -> AsyncGenerator[_Chunk, None]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=4)
    child = context.Process(
        target=_child_parse,
        # An in-memory file goes to the child through the pipe, never through a file.
        args=(path, template, platform, size, queue, columns),
        daemon=True,
    )
    child.start()
    try:
        while True:
            kind, payload = await asyncio.to_thread(queue.get)
            if kind == "end":
                return
            if kind == "error":
                raise files.FileError(f"解析失败 / parsing failed: {payload}")
            yield payload
    finally:
        if child.is_alive():
            child.terminate()
        await asyncio.to_thread(child.join, 10)


async def import_file(
    db: Database,
    account: str,
    path: files.Source,
    *,
    template: str | None = None,
    errors_out: Path | BinaryIO | None = None,
    chunk: int = 1000,
    progress: Progress | None = None,
    parse_process: bool | None = None,
) -> ImportSummary:
    """Parse a platform order file (on disk or in memory) and store its good orders; write the
    rejected rows (to `errors_out`, else next to a file on disk)."""
    from ordertally.channels.ingest import ingest_orders

    report_to: Path | BinaryIO
    if errors_out is not None:
        report_to = errors_out
    elif isinstance(path, Path):
        report_to = files.report_path(path)
    else:
        raise ValueError("an in-memory file's rejected rows need errors_out")
    started = time.perf_counter()
    platform, columns = await _account_file_settings(db, account)
    if template is None and columns:
        template = files.CUSTOM  # the account's saved layout
    chosen = files.template_for(template, columns) if template else None
    parser, results = files.parse_file(path, chosen, platform)
    t = parser.template
    if t.platform and platform not in (t.platform, "file"):
        raise ImportRefused(
            f"模板 {t.name} 属于 {t.platform}，账户 {account} 属于 {platform} / template "
            f"{t.name} is for {t.platform} orders, account {account} is a {platform} account"
        )
    summary = ImportSummary(account=account, template=t.name)
    rejected: list[files.Rejected] = []

    use_process = (
        parse_process
        if parse_process is not None
        else await asyncio.to_thread(files.source_size, path) >= PROCESS_PARSE_BYTES
    )
    chunks = (
        _child_chunks(path, t.name, platform, chunk, columns)
        if use_process
        else _thread_chunks(parser, results, chunk)
    )
    header_names: list[str] | None = None
    rows_seen = 0
    # The next chunk is parsed while the current one is stored: in a child process for big
    # files (parsing then uses the second core instead of competing for this one), in a thread
    # for small ones (no process start-up).
    parsing = asyncio.ensure_future(chunks.__anext__())
    try:
        while True:
            try:
                part = await parsing
            except StopAsyncIteration:
                break
            rejected.extend(part.rejected)
            rows_seen = part.rows
            summary.parse_seconds = part.parse_seconds
            if part.header_names is not None:
                header_names = part.header_names
            orders, lines = part.orders, part.lines
            parsing = asyncio.ensure_future(chunks.__anext__())
            if not orders:
                continue
            summary.orders += len(orders)
            begin = time.perf_counter()
            result = await ingest_orders(db, account, orders, via="file")
            summary.ingest_seconds += time.perf_counter() - begin
            summary.created += result.created
            summary.updated += result.updated
            summary.duplicates += result.duplicates
            summary.held += result.held
            for external_id, message in result.errors:
                summary.not_stored.append((external_id, message))
                for line in lines.get(external_id, ()):
                    rejected.append(
                        files.Rejected(line, external_id, f"未能保存 / not stored: {message}", ())
                    )
            if progress is not None:
                progress(rows_seen, parser.total_rows, summary.orders)
    finally:
        if not parsing.done():
            parsing.cancel()
            with contextlib.suppress(BaseException):
                await parsing
        await chunks.aclose()
    summary.rows = rows_seen
    summary.rejected_rows = len(rejected)
    if rejected:
        rejected.sort(key=lambda r: r.line)
        files.write_report(report_to, header_names or parser.header_names, rejected)
        summary.report = report_to if isinstance(report_to, Path) else None
    summary.total_seconds = time.perf_counter() - started
    if progress is not None:
        progress(rows_seen, parser.total_rows, summary.orders)
    return summary


def register(app: typer.Typer) -> None:
    """Add the import command to the main command line."""

    @app.command("import")
    def import_command(
        file: Annotated[Path, typer.Argument(help="The platform's order export (.csv or .xlsx)")],
        account: Annotated[str, typer.Option(help="Channel account code the orders belong to")],
        template: Annotated[
            str | None,
            typer.Option(
                help="douyin | jd | taobao | generic | custom (default: the account's saved "
                "column mapping, else detected from columns)"
            ),
        ] = None,
        errors: Annotated[
            Path | None,
            typer.Option("--errors", help="Write rejected rows here (default: FILE.rejected.csv)"),
        ] = None,
        items: Annotated[
            Path | None,
            typer.Option(
                "--items",
                help="Taobao's 宝贝报表 to join with FILE (its 订单报表) on 订单编号",
            ),
        ] = None,
    ) -> None:
        """导入平台订单文件 / Import a platform order file (CSV or XLSX); rejected rows go to a
        CSV with reasons. Exit 0: all imported; 1: file not imported; 2: some rows rejected."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from ordertally.core.db import create_database
        from ordertally.core.settings import get_settings

        settings = get_settings()
        console = Console(stderr=True)
        if items is not None:
            # Taobao exports orders and items as two reports: import them joined.
            try:
                file = files.join_reports(file, items, file.with_suffix(".joined.csv"))
            except files.FileError as exc:
                typer.echo(f"错误 error: {exc}", err=True)
                raise typer.Exit(EXIT_BAD_FILE) from exc
            template = template or "taobao"
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]}"),
            TextColumn("已存 stored {task.fields[stored]:,} 单 orders"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

        async def main() -> ImportSummary:
            db = create_database(settings)
            task = bar.add_task(f"导入 import {file.name}", total=None, rows="", stored=0)

            def on_progress(rows: int, total: int | None, stored: int) -> None:
                label = f"{rows:,}/{total:,} 行 rows" if total else f"{rows:,} 行 rows"
                bar.update(task, completed=rows, total=total, rows=label, stored=stored)

            try:
                with bar:
                    return await import_file(
                        db,
                        account,
                        file,
                        template=template,
                        errors_out=errors,
                        chunk=settings.import_chunk_orders,
                        progress=on_progress,
                    )
            finally:
                await db.dispose()

        try:
            summary = asyncio.run(main())
        except (files.FileError, ImportRefused) as exc:
            typer.echo(f"错误 error: {exc}", err=True)
            raise typer.Exit(EXIT_BAD_FILE) from exc
        table = Table(
            "结果 outcome", "数量 count", title=f"{file.name} → {account} ({summary.template})"
        )
        for label, value in (
            ("读取行 rows read", summary.rows),
            ("有效订单 orders in file", summary.orders),
            ("新建 created", summary.created),
            ("更新 updated", summary.updated),
            ("重复 duplicates", summary.duplicates),
            ("挂起 held", summary.held),
            ("拒绝行 rejected rows", summary.rejected_rows),
        ):
            table.add_row(label, f"{value:,}")
        Console().print(table)
        if summary.report is not None:
            typer.echo(f"拒绝的行及原因 rejected rows and reasons: {summary.report}", err=True)
        raise typer.Exit(summary.exit_code)
