"""`ordertally analytics`: rebuild the read models from the event log; import business
events from a file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ordertally.analytics import aftersale, service
from ordertally.core.db import create_database

console = Console()


def register(app: typer.Typer) -> None:
    """Add `ordertally analytics ...` to the command line."""
    analytics_app = typer.Typer(help="时效分析 / timeliness analytics", no_args_is_help=True)
    app.add_typer(analytics_app, name="analytics")

    @analytics_app.command("rebuild")
    def rebuild(
        stages_only: Annotated[
            bool,
            typer.Option(
                "--stages-only",
                help="Recompute only the stage, delay-cause and paid rows from the timelines",
            ),
        ] = False,
    ) -> None:
        """Rebuild the daily tally, the order timelines, their stage, delay-cause and paid rows,
        the shipped rows and the after-sales timelines with their stage and KPI rows from the
        event log and the exception cases (or, with --stages-only, the order stage, delay-cause
        and paid rows from the timelines and the cases)."""

        async def main() -> int:
            db = create_database()
            try:
                if stages_only:
                    return await service.rebuild_stages(db)
                return await service.rebuild(db) + await aftersale.rebuild(db)
            finally:
                await db.dispose()

        done = asyncio.run(main())
        console.print(f"{done} stage rows" if stages_only else f"replayed {done} events")

    @analytics_app.command("import-events")
    def import_events(
        path: Annotated[Path, typer.Argument(help="CSV: order_no, type, occurred_at")],
        actor: Annotated[str, typer.Option(help="Who imports it")] = "cli",
    ) -> None:
        """Record business events from a CSV file (one transaction)."""
        events = service.read_events_file(path)

        async def main() -> int:
            db = create_database()
            try:
                async with db.transaction() as session:
                    return await service.record_events(session, events, actor, "file")
            finally:
                await db.dispose()

        console.print(f"recorded {asyncio.run(main())} events")
