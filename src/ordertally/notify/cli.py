"""Commands of the notify domain, added to the `ordertally` command line: the Aliyun SMS
simulator (`ordertally smssim`) and `ordertally notify send-due`."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    """Add this domain's commands to the main command line."""
    notify_app = typer.Typer(no_args_is_help=True, help="Notifications: send log and sender.")
    app.add_typer(notify_app, name="notify")

    @app.command("smssim")
    def smssim(
        host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port")] = 8910,
        access_key_id: Annotated[
            str, typer.Option(help="The AccessKeyId it accepts")
        ] = "sim-access-key",
        access_key_secret: Annotated[
            str, typer.Option(help="The AccessKeySecret it verifies signatures with")
        ] = "sim-access-secret",
    ) -> None:
        """Serve a local Aliyun SMS (Dysmsapi SendSms) with /sim control endpoints."""
        import uvicorn

        from ordertally.notify.sms_simulator import SmsSim, create_sms_sim_app

        base = f"http://{host}:{port}"
        console.print(f"Aliyun SMS simulator on {base}  ·  messages at {base}/sim/messages")
        console.print("settings for ordertally:")
        for name, value in (
            ("NOTIFY_SMS_PROVIDER", "aliyun"),
            ("ALIYUN_SMS_ENDPOINT", base),
            ("ALIYUN_SMS_ACCESS_KEY_ID", access_key_id),
            ("ALIYUN_SMS_ACCESS_KEY_SECRET", access_key_secret),
            ("ALIYUN_SMS_SIGN_NAME", "ordertally"),
        ):
            console.print(f"  ORDERTALLY_{name}={value}", markup=False)
        uvicorn.run(
            create_sms_sim_app(SmsSim(access_key_id, access_key_secret)),
            host=host,
            port=port,
            access_log=False,
            log_level="info",
        )

    @notify_app.command("send-due")
    def send_due() -> None:
        """Send one batch of due notifications now and print the counts."""
        from ordertally.core.db import create_database
        from ordertally.notify import service

        async def main() -> dict[str, int]:
            db = create_database()
            try:
                return asdict(await service.send_due(db))
            finally:
                await db.dispose()

        console.print(asyncio.run(main()))
