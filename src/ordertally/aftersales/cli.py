"""Commands of after-sales for operations: `ordertally aftersales
list|show|pull|import-amazon-returns|import-after-sale-list|records|reapply` (cases in a table,
one case as JSON, an account's after-sale records pulled now, an Amazon returns report or a
Douyin / JD / Taobao after-sale list answer imported, the inbox
of platform records not applied, and applying those again once their order is here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

RECORD_STATUSES = ("pending", "unknown_order", "refused", "applied")


def _db() -> Any:
    from ordertally.core.db import create_database

    return create_database()


async def _list(status: str | None, case_type: str | None, limit: int) -> list[dict[str, Any]]:
    from ordertally.aftersales import api, service

    db = _db()
    try:
        async with db.transaction(write=False) as session:
            return [
                api.case_doc(c) for c in await service.list_cases(session, status, case_type, limit)
            ]
    finally:
        await db.dispose()


async def _show(case_no: str) -> dict[str, Any]:
    from ordertally.aftersales import api, refunds, service

    db = _db()
    try:
        async with db.transaction(write=False) as session:
            found = await service.view(session, case_no)
            return api.view_doc(found, await refunds.refunds_of(session, found.case), reveal=True)
    finally:
        await db.dispose()


async def _pull(account: str, start: datetime | None) -> dict[str, Any]:
    from ordertally.aftersales import pulls

    db = _db()
    try:
        if start is not None:
            async with db.transaction() as session:
                await pulls.set_cursor(session, account, start)
        return (await pulls.pull_account(db, account)).as_dict()
    finally:
        await db.dispose()


async def _import_amazon_returns(account: str, data: bytes) -> dict[str, Any]:
    from ordertally.aftersales import platforms

    report = platforms.read_amazon_returns(data)
    db = _db()
    try:
        async with db.transaction() as session:
            result = await platforms.import_amazon_returns(session, account, report, "cli")
        return platforms.amazon_import_doc(report, result)
    finally:
        await db.dispose()


async def _import_after_sale_list(account: str, data: bytes) -> dict[str, Any]:
    from ordertally.aftersales import platforms
    from ordertally.aftersales.errors import ReportRefused

    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ReportRefused(f"not a JSON after-sale list answer: {exc}") from exc
    db = _db()
    try:
        async with db.transaction() as session:
            page, result = await platforms.import_listed(session, account, doc, "cli")
        return platforms.listed_doc(page, result)
    finally:
        await db.dispose()


def _report_import(run: Coroutine[Any, Any, dict[str, Any]]) -> None:
    """Run an import and print what it came to; exits 1 while some record found no order or
    was refused, and with the problem when the file was refused."""
    from ordertally.core.errors import OrdertallyError

    try:
        result = asyncio.run(run)
    except OrdertallyError as exc:
        raise _fail(exc) from exc
    console.print_json(json.dumps(result, default=str))
    if result["unknown_order"] or result["refused"]:
        raise typer.Exit(1)


async def _records(
    status: tuple[str, ...], account: str | None, limit: int
) -> list[dict[str, Any]]:
    from ordertally.aftersales import platforms

    db = _db()
    try:
        async with db.transaction(write=False) as session:
            return [
                {
                    "id": r.id,
                    "account": r.channel,
                    "platform_refund_id": r.platform_refund_id,
                    "status": r.status,
                    "outcome": r.outcome,
                    "received_at": r.received_at.isoformat(),
                    "applied_at": r.applied_at.isoformat() if r.applied_at else None,
                }
                for r in await platforms.stored_records(session, status, account, limit)
            ]
    finally:
        await db.dispose()


async def _reapply(account: str | None, limit: int) -> dict[str, Any]:
    from ordertally.aftersales import platforms

    db = _db()
    try:
        async with db.transaction() as session:
            result = await platforms.reapply_records(session, "cli", account, limit)
        return {
            "created": result.created,
            "duplicates": result.duplicates,
            "unknown_order": result.unknown_order,
            "refused": [{"refund_id": r, "message": m} for r, m in result.refused],
        }
    finally:
        await db.dispose()


def _fail(exc: Exception) -> typer.Exit:
    code = getattr(exc, "code", type(exc).__name__)
    console.print(f"[red]{code}[/red]: {getattr(exc, 'detail', exc)}")
    return typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the after-sales commands to the main command line."""
    aftersales = typer.Typer(
        help="After-sales cases (售后单) and platform records.", no_args_is_help=True
    )
    app.add_typer(aftersales, name="aftersales")

    @aftersales.command("list")
    def list_command(
        status: Annotated[str | None, typer.Option(help="Only cases in this status")] = None,
        case_type: Annotated[
            str | None, typer.Option("--type", help="refund_only | return_refund | ...")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    ) -> None:
        """Cases, newest first."""
        rows = asyncio.run(_list(status, case_type, limit))
        if as_json:
            console.print_json(json.dumps(rows, default=str))
            return
        table = Table("case", "order", "account", "type", "status", "reason", "refund", "opened")
        for r in rows:
            table.add_row(
                r["case_no"],
                r["order_no"],
                r["channel"] or "-",
                r["type"],
                r["status"],
                r["reason_code"],
                f"{r['refund']['total']} {r['currency']}",
                r["created_at"] or "-",
            )
        console.print(table)

    @aftersales.command("show")
    def show_command(
        case_no: Annotated[str, typer.Argument(help="The case number (AS...)")],
    ) -> None:
        """One case as JSON: lines with product names, refunds, audit trail."""
        from ordertally.core.errors import OrdertallyError

        try:
            doc = asyncio.run(_show(case_no))
        except OrdertallyError as exc:
            raise _fail(exc) from exc
        console.print_json(json.dumps(doc, default=str))

    @aftersales.command("pull")
    def pull_command(
        account: Annotated[
            str, typer.Argument(help="A Pinduoduo, Taobao, JD or Douyin account code")
        ],
        start: Annotated[
            datetime | None,
            typer.Option("--from", help="Move the cursor here first (ISO 8601 with offset)"),
        ] = None,
    ) -> None:
        """Pull the account's after-sale records now (pdd.refund.list.increment.get,
        taobao.refunds.receive.get, jingdong.pop.afs.soa.refundapply.queryPageList or
        afterSale/List), from its cursor minus the overlap to 3 minutes behind the platform
        clock (Pinduoduo's) or ours."""
        from ordertally.core.errors import OrdertallyError

        try:
            result = asyncio.run(_pull(account, start))
        except OrdertallyError as exc:
            raise _fail(exc) from exc
        console.print_json(json.dumps(result, default=str))

    @aftersales.command("import-amazon-returns")
    def import_amazon_returns_command(
        account: Annotated[str, typer.Argument(help="An Amazon account code")],
        path: Annotated[
            Path,
            typer.Argument(
                exists=True, dir_okay=False, help="A GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE file"
            ),
        ],
    ) -> None:
        """Import an Amazon seller-fulfilled returns report: each decided return becomes a case
        once per Amazon RMA ID; exits 1 while some return found no order or was refused."""
        _report_import(_import_amazon_returns(account, path.read_bytes()))

    @aftersales.command("import-after-sale-list")
    def import_after_sale_list_command(
        account: Annotated[str, typer.Argument(help="A Douyin, JD or Taobao account code")],
        path: Annotated[
            Path,
            typer.Argument(
                exists=True, dir_okay=False, help="One answer of the platform's after-sale list API"
            ),
        ],
    ) -> None:
        """Import one answer of a Douyin (afterSale/List), JD (refundapply.queryPageList) or
        Taobao (taobao.refunds.receive.get) after-sale list: each record's stage is applied once
        per refund id; exits 1 while some record found no order or was refused."""
        _report_import(_import_after_sale_list(account, path.read_bytes()))

    @aftersales.command("records")
    def records_command(
        status: Annotated[
            list[str] | None,
            typer.Option(help="pending | unknown_order | refused | applied (repeatable)"),
        ] = None,
        account: Annotated[str | None, typer.Option(help="Only this account's records")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    ) -> None:
        """Platform records in the inbox (default: those not applied), without their bodies."""
        wanted = tuple(status or ("pending", "unknown_order", "refused"))
        unknown = [s for s in wanted if s not in RECORD_STATUSES]
        if unknown:
            console.print(f"[red]unknown status[/red]: {', '.join(unknown)}")
            raise typer.Exit(2)
        console.print_json(json.dumps(asyncio.run(_records(wanted, account, limit)), default=str))

    @aftersales.command("reapply")
    def reapply_command(
        account: Annotated[str | None, typer.Option(help="Only this account's records")] = None,
        limit: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
    ) -> None:
        """Apply again the records that found no order (or were refused) once the order has
        arrived or the cause is fixed; exits 1 while some still do not apply."""
        result = asyncio.run(_reapply(account, limit))
        console.print_json(json.dumps(result, default=str))
        if result["unknown_order"] or result["refused"]:
            raise typer.Exit(1)
