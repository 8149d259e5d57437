"""How the channels domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the channels domain: routes and platform webhooks, event schemas, the webhook
    consumer, pull and sweep jobs."""
    from ordertally.channels import api, consumers, events, jobs  # noqa: F401  (decorators)

    if app is not None:
        app.include_router(api.router)
