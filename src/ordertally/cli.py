"""The `ordertally` command line: serve, worker, migrate, demo, apikey, doctor, schemas."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ordertally.core.db import create_database
from ordertally.core.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="ordertally: every order accounted for.")
apikey_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(apikey_app, name="apikey")
paysim_app = typer.Typer(
    no_args_is_help=True, help="Payment simulator: WeChat Pay v3 and Alipay with test keys."
)
app.add_typer(paysim_app, name="paysim")
user_app = typer.Typer(no_args_is_help=True, help="Manage back-office users.")
app.add_typer(user_app, name="user")
console = Console()


# Outbound HTTP libraries whose INFO line per request ("HTTP Request: POST ...") is left out:
# a worker makes several calls per order (waybills, subscriptions, SMS, webhooks, payment
# queries), and building and writing that record was 7 % of each call's CPU in issue 21's drill
# profile; failures still surface as our own log lines and metrics.
QUIET_LOGGERS = ("httpx", "httpcore")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def migrate() -> None:
    """Migrate the configured database to the newest schema."""
    from ordertally.ops import migrations

    migrations.upgrade(get_settings().effective_database_url)
    console.print("database at head")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    workers: Annotated[int, typer.Option(help="API processes (>1 implies --no-worker)")] = 1,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run no embedded worker")] = False,
) -> None:
    """Serve the API (and, embedded mode, the worker in the same process)."""
    import uvicorn

    from ordertally.app import create_app
    from ordertally.core.server import protocol_for, protocol_path
    from ordertally.core.workers import SPREADS, SpreadWorkers

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    base = f"http://{host}:{port}"
    docs_on = settings.is_sqlite if settings.docs_enabled is None else settings.docs_enabled
    docs = f"API docs {base}/docs" if docs_on else "API docs off (ORDERTALLY_DOCS_ENABLED)"
    console.print(f"ordertally on {base}  ·  {docs}  ·  metrics {base}/metrics")
    key_file = settings.data_dir / "demo-api-key.txt"
    if key_file.exists():
        # The key was printed once, when `demo` created it; say where it is, not what it is.
        console.print(f"demo API key (admin) kept in {key_file}")
    admin_file = settings.data_dir / FIRST_ADMIN_FILE
    if admin_file.exists():
        console.print(f"back office {base}/ui/  ·  first admin's sign-in saved in {admin_file}")
    if workers > 1:
        # Counters from several processes are merged through a shared directory, wiped first.
        metrics_dir = Path(tempfile.gettempdir()) / f"ordertally-metrics-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        options: dict[str, Any] = {
            "factory": True,
            "host": host,
            "port": port,
            "workers": workers,
            "http": protocol_path(settings),
            "access_log": False,
            "log_level": "warning",
        }
        if not SPREADS:
            uvicorn.run("ordertally.app:app_factory", **options)
            return
        # A listening socket per process: the kernel spreads the connections (core/workers.py).
        SpreadWorkers(uvicorn.Config("ordertally.app:app_factory", **options)).run()
        return
    uvicorn.run(
        create_app(settings, embedded_worker=not no_worker),
        host=host,
        port=port,
        http=protocol_for(settings),
        access_log=False,
        log_level="info",
    )


@app.command()
def worker(
    lane: Annotated[
        list[str] | None,
        typer.Option(help="Run only this lane (repeatable; e.g. search): no dispatcher, no jobs"),
    ] = None,
    no_lanes: Annotated[
        bool, typer.Option("--no-lanes", help="Run the dispatcher and jobs, no lane")
    ] = False,
) -> None:
    """Run the outbox dispatcher, the periodic jobs and the lanes (the search index) until
    SIGINT/SIGTERM."""
    from ordertally.domains import register_all
    from ordertally.jobs.worker import run_worker

    if lane and no_lanes:
        raise typer.BadParameter("--lane and --no-lanes exclude each other")

    _logging()
    settings = get_settings()
    register_all(settings)

    async def main() -> None:
        db = create_database(settings, role="ordertally-lane" if lane else "ordertally-worker")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_worker(db, settings, stop, lanes=[] if no_lanes else lane, dispatch=not lane)
        finally:
            await db.dispose()

    asyncio.run(main())


@app.command()
def demo(
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if data exists")] = False,
    orders: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
) -> None:
    """Load demo warehouses, SKUs, orders and an admin API key."""
    from ordertally.domains import register_all
    from ordertally.ops import demo as demo_data

    settings = get_settings()
    register_all(settings)

    async def main() -> str | None:
        db = create_database(settings)
        try:
            if not await demo_data.is_empty(db):
                return None
            return await demo_data.load(db, orders)
        finally:
            await db.dispose()

    key = asyncio.run(main())
    if key is None:
        if not if_empty:
            console.print("[red]the database already holds data; demo not loaded[/red]")
            raise typer.Exit(1)
        console.print("demo data already loaded")
        return
    key_file = settings.data_dir / "demo-api-key.txt"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    console.print(f"demo data loaded: {orders} orders; admin API key saved to {key_file}")
    console.print(f"demo API key (admin), shown this once: {key}")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key")],
    role: Annotated[str, typer.Option(help="admin | ops | cs | finance | warehouse")],
    warehouse: Annotated[
        list[str] | None,
        typer.Option("--warehouse", help="Limit the key to this warehouse code (repeatable)"),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Limit the key to this channel account (repeatable)"),
    ] = None,
) -> None:
    """Create an API key; it is printed once, as the last line, and stored hashed."""
    from ordertally.auth import service as auth_service

    async def main() -> tuple[int, str]:
        db = create_database()
        try:
            async with db.transaction() as session:
                return await auth_service.create_api_key(session, name, role, warehouse, channel)
        finally:
            await db.dispose()

    try:
        key_id, raw = asyncio.run(main())
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created API key {key_id} ({name}, role {role}); it will not be shown again:")
    typer.echo(raw)


@apikey_app.command("list")
def apikey_list() -> None:
    """List API keys: id, name, role, prefix, warehouses, created, revoked."""
    from ordertally.auth import service as auth_service

    async def main() -> list[dict[str, Any]]:
        db = create_database()
        try:
            async with db.transaction(write=False) as session:
                return await auth_service.list_api_keys(session)
        finally:
            await db.dispose()

    for key in asyncio.run(main()):
        scope = ",".join(key["warehouses"] or []) or "-"
        state = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
        typer.echo(
            f"{key['id']}\t{key['name']}\t{key['role']}\t{key['key_prefix']}…\t{scope}\t{state}"
        )


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see list)")]) -> None:
    """Revoke an API key; every process refuses it from its next request."""
    from ordertally.auth import service as auth_service

    async def main() -> dict[str, Any]:
        db = create_database()
        try:
            async with db.transaction() as session:
                return await auth_service.revoke_api_key(session, key_id)
        finally:
            await db.dispose()

    try:
        key = asyncio.run(main())
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"revoked API key {key['id']} ({key['name']}) at {key['revoked_at']}")


FIRST_ADMIN_FILE = "first-admin.txt"


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Lowercase letters, digits, . _ -")],
    role: Annotated[str, typer.Option(help="admin | ops | cs | finance | warehouse")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    warehouse: Annotated[
        list[str] | None,
        typer.Option("--warehouse", help="Limit the user to this warehouse code (repeatable)"),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Limit the user to this channel account (repeatable)"),
    ] = None,
) -> None:
    """Create a back-office user (password from a prompt, or from stdin), scoped like an API
    key to warehouses and channel accounts when given."""
    from ordertally.auth import users

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

    async def main() -> int:
        db = create_database()
        try:
            async with db.transaction() as session:
                return await users.create_user(
                    session, username, password, role, warehouses=warehouse, channels=channel
                )
        finally:
            await db.dispose()

    try:
        user_id = asyncio.run(main())
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    scope = "".join(
        f", {label} {', '.join(sorted(set(codes)))}"
        for label, codes in (("warehouses", warehouse), ("channels", channel))
        if codes
    )
    typer.echo(f"created user {user_id} ({username.strip().lower()}, role {role}{scope})")


@user_app.command("scope")
def user_scope(
    username: Annotated[str, typer.Argument(help="The user to change")],
    warehouse: Annotated[
        list[str] | None,
        typer.Option("--warehouse", help="Limit the user to these warehouses (repeatable)"),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Limit the user to these channel accounts (repeatable)"),
    ] = None,
    all_warehouses: Annotated[
        bool, typer.Option("--all-warehouses", help="Lift the warehouse limit")
    ] = False,
    all_channels: Annotated[
        bool, typer.Option("--all-channels", help="Lift the channel-account limit")
    ] = False,
) -> None:
    """Change a back-office user's scope; it applies from the user's next request. Codes given
    replace that part of the scope; a part not named stays as it is."""
    from ordertally.auth import users

    async def main() -> tuple[list[str] | None, list[str] | None]:
        db = create_database()
        try:
            async with db.transaction() as session:
                user = await users.set_scope(
                    session,
                    username,
                    warehouses=warehouse,
                    channels=channel,
                    unscope_warehouses=all_warehouses,
                    unscope_channels=all_channels,
                )
                return user.warehouses, user.channels
        finally:
            await db.dispose()

    try:
        warehouses, channels = asyncio.run(main())
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    shown = "; ".join(
        f"{label} {', '.join(codes) if codes else 'all'}"
        for label, codes in (("warehouses", warehouses), ("channels", channels))
    )
    typer.echo(f"user {username.strip().lower()}: {shown}")


@user_app.command("bootstrap")
def user_bootstrap() -> None:
    """Create a first admin when there is no user yet; prints its password once."""
    from ordertally.auth import users

    settings = get_settings()
    password = users.generate_password()

    async def main() -> bool:
        db = create_database(settings)
        try:
            async with db.transaction() as session:
                if await users.count_users(session):
                    return False
                await users.create_user(session, "admin", password, "admin")
                return True
        finally:
            await db.dispose()

    if not asyncio.run(main()):
        console.print("back-office users already exist")
        return
    admin_file = settings.data_dir / FIRST_ADMIN_FILE
    admin_file.parent.mkdir(parents=True, exist_ok=True)
    admin_file.write_text(f"username: admin\npassword: {password}\n")
    admin_file.chmod(0o600)
    console.print(
        f"first admin created: username [bold]admin[/bold], password [bold]{password}[/bold]"
    )
    console.print(f"(saved in {admin_file})")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """Check database, migrations, outbox and stuck orders; exit 1 when a check fails."""
    from ordertally.ops import doctor as checks

    settings = get_settings()

    async def main() -> list[checks.Check]:
        db = create_database(settings)
        try:
            return await checks.run_checks(db, settings)
        finally:
            await db.dispose()

    results = asyncio.run(main())
    report = checks.as_json(results)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        table = Table("check", "ok", "detail")
        for check in results:
            table.add_row(check.name, "✔" if check.ok else "✘", check.detail)
        console.print(table)
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
def schemas() -> None:
    """Print the JSON Schema of every registered event type."""
    from ordertally.domains import register_all
    from ordertally.events.registry import json_schemas

    register_all(get_settings())
    typer.echo(json.dumps(json_schemas(), indent=2, ensure_ascii=False))


@app.command()
def replay(
    event_id: Annotated[
        str | None, typer.Option(help="Only this event (default: every dead one)")
    ] = None,
) -> None:
    """Send dead-lettered outbox events through their consumers again, once the cause is fixed."""
    from ordertally.events import service as events_service

    async def main() -> list[str]:
        db = create_database()
        try:
            async with db.transaction() as session:
                return await events_service.replay_dead(session, event_id)
        finally:
            await db.dispose()

    ids = asyncio.run(main())
    typer.echo(f"{len(ids)} dead events requeued")
    for requeued in ids:
        typer.echo(requeued)


@app.command()
def transitions() -> None:
    """Print the order transition table."""
    from ordertally.orders.state_machine import as_rows

    table = Table("transition", "from", "to", "actors", "event", "holds block")
    for row in as_rows():
        table.add_row(
            str(row["transition"]),
            ", ".join(row["from"]),  # type: ignore[arg-type]
            str(row["to"]),
            ", ".join(row["actors"]),  # type: ignore[arg-type]
            str(row["event"]),
            "yes" if row["blocked_by_holds"] else "",
        )
    console.print(table)


@app.command()
def reconcile(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Trade bill file")],
    provider: Annotated[str, typer.Option(help="wechatpay | alipay")],
    out: Annotated[Path | None, typer.Option(help="Write the report as CSV here")] = None,
    include_matched: Annotated[
        bool, typer.Option("--include-matched", help="List matched trades in the CSV too")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only: apply and record nothing")
    ] = False,
    run_by: Annotated[str, typer.Option(help="Who runs it (recorded with the run)")] = "cli",
) -> None:
    """Reconcile a provider's trade bill; a platform-only payment is applied once the platform
    confirms it, else it becomes a manual-payment request by --run-by."""
    from ordertally.domains import register_all
    from ordertally.payments import reconcile as recon

    if provider not in ("wechatpay", "alipay"):
        raise typer.BadParameter("wechatpay or alipay", param_hint="--provider")
    settings = get_settings()
    register_all(settings)

    async def main() -> recon.Report:
        db = create_database(settings)
        try:
            return await recon.run_file(
                db, provider, file, run_by=run_by, keep_matched=include_matched, apply=not dry_run
            )
        finally:
            await db.dispose()

    try:
        report = asyncio.run(main())
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    table = Table("category", "trades", title=f"{provider}: {report.rows} statement rows")
    for category, n in report.counts.items():
        table.add_row(category, str(n))
    console.print(table)
    if out is not None:
        with open(out, "w", encoding="utf-8", newline="") as handle:
            recon.write_csv(report, handle)
        console.print(f"report written to {out}")
    requested = [d for d in report.discrepancies if str(d["applied"]).startswith("manual_")]
    applied = [d for d in report.discrepancies if d["applied"] and d not in requested]
    if applied:
        console.print(f"{len(applied)} platform-only payments applied through the inbox")
    if requested:
        console.print(
            f"{len(requested)} rows the platform did not confirm: manual-payment requests "
            f"by {run_by}, awaiting a second approver"
        )


@paysim_app.command("keys")
def paysim_keys(
    out: Annotated[Path, typer.Option(help="Directory for the key set")],
    api_base: Annotated[
        str, typer.Option(help="Where the simulator will listen")
    ] = "http://127.0.0.1:8900",
) -> None:
    """Generate fresh test keys and the ORDERTALLY_* settings pointing at the simulator."""
    from ordertally.payments.simulator import keys as sim_keys

    generated = sim_keys.generate(out, api_base)
    console.print(f"test keys written under {generated.directory}")
    console.print(f"settings for ordertally: {generated.env_file}")


@paysim_app.command("serve")
def paysim_serve(
    keys: Annotated[Path, typer.Option(help="Directory made by `ordertally paysim keys`")],
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8900,
    time_scale: Annotated[
        float, typer.Option(min=0.001, help="Divide the platforms' retry delays by this")
    ] = 1.0,
) -> None:
    """Serve the simulated platforms' APIs, the notifier and the /sim control endpoints."""
    import uvicorn

    from ordertally.payments.simulator.app import create_sim_app
    from ordertally.payments.simulator.keys import SimKeys

    loaded = SimKeys.load(keys)
    console.print(f"payment simulator on http://{host}:{port}  ·  control API under /sim")
    uvicorn.run(
        create_sim_app(loaded, time_scale=time_scale),
        host=host,
        port=port,
        access_log=False,
        log_level="info",
    )


def _register_domain_commands() -> None:
    from ordertally.aftersales import cli as aftersales_cli
    from ordertally.analytics import cli as analytics_cli
    from ordertally.catalog import cli as catalog_cli
    from ordertally.channels import cli as channels_cli
    from ordertally.customers import cli as customers_cli
    from ordertally.exports import cli as exports_cli
    from ordertally.fulfillment import cli as fulfillment_cli
    from ordertally.notify import cli as notify_cli
    from ordertally.orders import cli as orders_cli
    from ordertally.search import cli as search_cli

    for module in (
        fulfillment_cli,
        notify_cli,
        channels_cli,
        customers_cli,
        orders_cli,
        catalog_cli,
        exports_cli,
        analytics_cli,
        search_cli,
        aftersales_cli,
    ):
        module.register(app)


_register_domain_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
