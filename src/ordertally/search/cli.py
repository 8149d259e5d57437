"""`ordertally search "…"` from the terminal, and `ordertally search rebuild` (every order
re-indexed in chunks, one transaction each, with a progress bar)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer

from ordertally.core.db import Database

REBUILD = "rebuild"


async def run_search(db: Database, q: str, limit: int, **filters: Any) -> Any:
    """One search, as the API runs it."""
    from ordertally.search import service
    from ordertally.search.repository import Filters

    async with db.transaction(write=False) as session:
        return await service.search(session, q, Filters(**filters), limit=limit)


async def rebuild(db: Database, chunk: int, tick: Any = None) -> tuple[int, float]:
    """Re-index every order; (rows written, seconds)."""
    from ordertally.search import service

    started = time.perf_counter()
    async with db.transaction(write=False) as session:
        total = await service.orders_to_index(session)
    if tick:
        tick(0, total)
    done, after = 0, 0
    while True:
        async with db.transaction() as session:
            after, written = await service.rebuild_chunk(session, after, chunk)
        if not written:
            break
        done += written
        if tick:
            tick(done, total)
    return done, time.perf_counter() - started


def register(app: typer.Typer) -> None:
    """Add `ordertally search …` to the main command line."""

    @app.command("search")
    def search_command(
        query: Annotated[
            list[str], typer.Argument(help='What the caller said ("张三 5678"), or: rebuild')
        ],
        status: Annotated[str | None, typer.Option(help="Only orders in this status")] = None,
        channel: Annotated[str | None, typer.Option(help="Only this channel")] = None,
        limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
        chunk: Annotated[int, typer.Option(min=1, help="rebuild: orders per transaction")] = 2000,
    ) -> None:
        """Find orders (names, pinyin, phones, dates, ids, products, addresses), or re-index
        every order with `ordertally search rebuild`."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
        from rich.table import Table

        from ordertally.core.settings import get_settings

        console = Console()
        settings = get_settings()

        if query == [REBUILD]:

            async def go_rebuild() -> tuple[int, float]:
                db = Database(settings.effective_database_url)
                try:
                    with Progress(
                        "重建索引 / rebuilding",
                        BarColumn(),
                        MofNCompleteColumn(),
                        TimeElapsedColumn(),
                        console=console,
                    ) as bar:
                        task = bar.add_task("rebuild", total=None)

                        def tick(done: int, total: int) -> None:
                            bar.update(task, completed=done, total=total)

                        return await rebuild(db, chunk, tick)
                finally:
                    await db.dispose()

            done, seconds = asyncio.run(go_rebuild())
            rate = done / seconds if seconds else 0.0
            console.print(f"{done} orders indexed in {seconds:.1f}s ({rate:.0f} orders/s)")
            return

        async def go() -> Any:
            db = Database(settings.effective_database_url)
            try:
                return await run_search(db, " ".join(query), limit, status=status, channel=channel)
            finally:
                await db.dispose()

        page = asyncio.run(go())
        console.print(" ".join(f"[bold]{t.text}[/bold]={t.kind}" for t in page.terms))
        table = Table("order", "status", "date", "name", "phone", "city", "matched")
        for hit in page.hits:
            d = hit.doc
            table.add_row(
                d.order_no,
                d.status,
                d.placed_date,
                d.customer_name_masked,
                d.customer_phone_masked,
                d.ship_city,
                ", ".join(f"{h['term']}→{h['field']}" for h in hit.highlights),
            )
        console.print(table)
        if not page.hits:
            raise typer.Exit(1)
