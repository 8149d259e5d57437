"""How the fulfillment domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the fulfillment domain: routes (the tracking page included), event schemas,
    the allocate consumer and carrier jobs, and its parts of every order's JSON."""
    from ordertally.fulfillment import (  # noqa: F401  (decorators register)
        api,
        consumers,
        events,
        jobs,
        tracking_page,
    )
    from ordertally.orders import api as orders_api
    from ordertally.orders import snapshot as orders_snapshot

    orders_snapshot.register_snapshot_part(api.order_shipments)
    orders_api.register_document_part(tracking_page.order_part)
    if app is not None:
        app.include_router(api.router)
