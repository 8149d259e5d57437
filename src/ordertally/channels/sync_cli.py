"""Commands of the channel sync engine and its simulators:
`ordertally channels sync ACCOUNT`, `ordertally channels status`, `ordertally channelsim serve`."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _db() -> Any:
    from ordertally.core.db import create_database

    return create_database()


async def _sync(code: str) -> dict[str, Any]:
    from ordertally.channels import sync

    db = _db()
    try:
        return (await sync.sync_account(db, code)).as_dict()
    finally:
        await db.dispose()


async def _status() -> list[dict[str, Any]]:
    from ordertally.channels import service

    db = _db()
    try:
        async with db.transaction(write=False) as session:
            return [
                await service.status_view(session, a.code)
                for a in await service.list_accounts(session)
            ]
    finally:
        await db.dispose()


async def _replay(account: str | None) -> list[dict[str, Any]]:
    from ordertally.channels import callbacks

    db = _db()
    try:
        return await callbacks.replay_failed(db, account=account)
    finally:
        await db.dispose()


async def _decrypt(account: str) -> list[dict[str, Any]]:
    from ordertally.channels import decrypt

    db = _db()
    try:
        return await decrypt.retry_held(db, account)
    finally:
        await db.dispose()


def register(app: typer.Typer) -> None:
    """Add the sync and simulator commands to the main command line."""
    channels = typer.Typer(help="Channel accounts: pull now, sync status.", no_args_is_help=True)
    channelsim = typer.Typer(help="Local simulators of Shopify, Amazon and Pinduoduo.")
    app.add_typer(channels, name="channels")
    app.add_typer(channelsim, name="channelsim")

    @channels.command("sync")
    def sync_command(account: Annotated[str, typer.Argument(help="Account code")]) -> None:
        """Pull one account now (from its cursor minus the overlap)."""
        from ordertally.core.errors import OrdertallyError

        try:
            result = asyncio.run(_sync(account))
        except OrdertallyError as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(1) from exc
        console.print_json(json.dumps(result, default=str))

    @channels.command("status")
    def status_command() -> None:
        """Every account's last success, lag, errors and empty streak."""
        rows = asyncio.run(_status())
        table = Table(
            "account",
            "platform",
            "active",
            "last success",
            "lag s",
            "errors",
            "empty streak",
            "orders",
        )
        for r in rows:
            table.add_row(
                r["account"],
                r["platform"],
                "yes" if r["active"] else "no",
                str(r["last_success_at"] or "-"),
                f"{r['lag_seconds']:.0f}" if r["lag_seconds"] is not None else "-",
                str(r["error_count"]),
                f"{r['empty_streak']}{' !' if r['empty_streak_alert'] else ''}",
                str(r["orders_linked"]),
            )
        console.print(table)

    @channels.command("replay")
    def replay_command(
        account: Annotated[str | None, typer.Option(help="Only this account's held orders")] = None,
    ) -> None:
        """Apply again every held platform order (an order_not_created case) once its cause
        (a missing exchange rate, an unknown SKU mapping...) is fixed."""
        from ordertally.core.errors import OrdertallyError

        try:
            outcomes = asyncio.run(_replay(account))
        except OrdertallyError as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(1) from exc
        console.print_json(json.dumps(outcomes, default=str))
        if any(o["status"] != "applied" for o in outcomes):
            raise typer.Exit(1)

    @channels.command("decrypt")
    def decrypt_command(
        account: Annotated[str, typer.Argument(help="A Pinduoduo account with config.decrypt")],
    ) -> None:
        """Ask the decrypt service again for the account's orders held address_not_decrypted;
        an answered order gets its recipient and its hold resolved."""
        from ordertally.core.errors import OrdertallyError

        try:
            outcomes = asyncio.run(_decrypt(account))
        except OrdertallyError as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(1) from exc
        console.print_json(json.dumps(outcomes, default=str))
        if any(o["status"] != "decrypted" for o in outcomes):
            raise typer.Exit(1)

    @channelsim.command("serve")
    def channelsim_serve(
        host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port")] = 8910,
        time_scale: Annotated[
            float, typer.Option(min=0.001, help="Divide Shopify's retry delays by this")
        ] = 1.0,
    ) -> None:
        """Serve Amazon getOrders/getOrderItems, the Pinduoduo router and /sim controls
        (Shopify webhooks are sent to the target set with POST /sim/shopify/target)."""
        import uvicorn

        from ordertally.channels.simulators.app import create_channel_sim_app

        console.print(f"channel simulator on http://{host}:{port}  ·  control API under /sim")
        uvicorn.run(
            create_channel_sim_app(time_scale=time_scale),
            host=host,
            port=port,
            access_log=False,
            log_level="info",
        )
