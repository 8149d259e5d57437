"""How the orders domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the orders domain: routes, event schemas, the payment-timeout job."""
    from ordertally.orders import (  # noqa: F401  (decorators register)
        api,
        events,
        fx_api,
        jobs,
        review_api,
    )

    if app is not None:
        app.include_router(api.router)
        app.include_router(fx_api.router)
        app.include_router(review_api.router)
