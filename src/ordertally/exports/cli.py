"""`ordertally export`: request an export and run it here with a progress bar."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from ordertally.core.db import create_database
from ordertally.exports import service
from ordertally.exports.schemas import ExportIn

console = Console()


def register(app: typer.Typer) -> None:
    """Add `ordertally export` to the command line."""

    @app.command("export")
    def export(
        template: Annotated[str, typer.Argument(help="Template name (orders, payments, ...)")],
        fmt: Annotated[str, typer.Option("--format", help="csv or xlsx")] = "csv",
        date_from: Annotated[str | None, typer.Option(help="First local day, YYYY-MM-DD")] = None,
        date_to: Annotated[str | None, typer.Option(help="Last local day, YYYY-MM-DD")] = None,
        timezone: Annotated[str | None, typer.Option(help="Merchant time zone")] = None,
        actor: Annotated[str, typer.Option(help="Who runs it (watermark)")] = "cli",
        role: Annotated[str, typer.Option(help="The role it runs as")] = "ops",
    ) -> None:
        """Export in one snapshot to a file under the data directory, with a progress bar."""
        body = ExportIn.model_validate(
            {
                "template": template,
                "format": fmt,
                "date_from": date.fromisoformat(date_from) if date_from else None,
                "date_to": date.fromisoformat(date_to) if date_to else None,
                "timezone": timezone,
            }
        )

        async def main() -> dict[str, object] | None:
            db = create_database()
            try:
                async with db.transaction() as session:
                    queued = await service.request_export(
                        session, body, service.Requester(actor, role, None)
                    )
                claimed = await service.claim(db, queued.export_no)
                assert claimed is not None
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as bar:
                    task = bar.add_task(claimed.export_no, total=None)
                    return await service.run_claimed(
                        db,
                        claimed,
                        lambda done, total: bar.update(task, completed=done, total=total),
                    )
            finally:
                await db.dispose()

        manifest = asyncio.run(main())
        console.print_json(json.dumps(manifest, ensure_ascii=False))
