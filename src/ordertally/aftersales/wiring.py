"""How the after-sales domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire after-sales: routes, event schemas, jobs (receipt confirmation, refunds, SLA)."""
    from ordertally.aftersales import api, events, jobs  # noqa: F401  (decorators register)

    if app is not None:
        app.include_router(api.router)
