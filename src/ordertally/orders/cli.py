"""Commands of the orders domain: `ordertally fx list`, `ordertally fx set CUR RATE`."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()


async def _set(currency: str, rate: str, effective_from: datetime | None) -> dict[str, Any]:
    from ordertally.core.db import create_database
    from ordertally.core.settings import get_settings
    from ordertally.orders import fx

    db = create_database()
    try:
        async with db.transaction() as session:
            row = await fx.set_rate(
                session,
                get_settings(),
                currency,
                rate,
                effective_from=effective_from,
                by="cli",
            )
            return {
                "currency": row.currency,
                "base_currency": row.base_currency,
                "rate": row.rate,
                "effective_from": row.effective_from.isoformat(),
            }
    finally:
        await db.dispose()


async def _list() -> list[dict[str, Any]]:
    from ordertally.core.db import create_database
    from ordertally.core.settings import get_settings
    from ordertally.orders import fx

    db = create_database()
    try:
        async with db.transaction(write=False) as session:
            return [
                {
                    "currency": r.currency,
                    "base_currency": r.base_currency,
                    "rate": r.rate,
                    "effective_from": r.effective_from.isoformat(),
                    "created_by": r.created_by,
                }
                for r in await fx.list_rates(session, get_settings())
            ]
    finally:
        await db.dispose()


def register(app: typer.Typer) -> None:
    """Add the exchange-rate commands to the main command line."""
    fx_app = typer.Typer(help="Exchange rates to the base currency.", no_args_is_help=True)
    app.add_typer(fx_app, name="fx")

    @fx_app.command("set")
    def set_command(
        currency: Annotated[str, typer.Argument(help="ISO 4217 code, e.g. USD")],
        rate: Annotated[str, typer.Argument(help="Units of the base currency per unit")],
        effective_from: Annotated[
            datetime | None,
            typer.Option("--from", help="When it takes effect (ISO 8601 with offset; now)"),
        ] = None,
    ) -> None:
        """Record a rate; orders created from its effective moment lock it."""
        from ordertally.core.errors import OrdertallyError

        try:
            row = asyncio.run(_set(currency, rate, effective_from))
        except OrdertallyError as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(1) from exc
        console.print_json(json.dumps(row))

    @fx_app.command("list")
    def list_command() -> None:
        """Every recorded rate (the ORDERTALLY_FX_RATES setting serves currencies without one)."""
        console.print_json(json.dumps(asyncio.run(_list())))
