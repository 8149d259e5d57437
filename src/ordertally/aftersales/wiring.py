"""How the after-sales domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire after-sales: routes, event schemas, jobs (receipt confirmation, refunds, SLA), the
    channel inbox's handler of Shopify refunds and the case facts analytics reads."""
    from ordertally.aftersales import api, events, jobs, platforms, service  # noqa: F401
    from ordertally.analytics import aftersale as analytics_aftersale
    from ordertally.channels import callbacks as channel_callbacks

    channel_callbacks.register_topic_handler("refunds/create", platforms.apply_shopify_refund)
    analytics_aftersale.register_case_source(service.analytics_facts)

    if app is not None:
        app.include_router(api.router)
