"""How the after-sales domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire after-sales: routes, event schemas, jobs (receipt confirmation, refunds, SLA) and
    the channel inbox's handler of Shopify refunds."""
    from ordertally.aftersales import api, events, jobs, platforms  # noqa: F401  (decorators)
    from ordertally.channels import callbacks as channel_callbacks

    channel_callbacks.register_topic_handler("refunds/create", platforms.apply_shopify_refund)

    if app is not None:
        app.include_router(api.router)
