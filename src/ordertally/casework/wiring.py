"""How the exception workbench plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the workbench: routes, the SLA clock and batch runner, and the order's "cases"."""
    from ordertally.casework import api, jobs, service  # noqa: F401  (decorators register)
    from ordertally.orders import snapshot as orders_snapshot

    orders_snapshot.register_snapshot_part(service.order_cases)
    if app is not None:
        app.include_router(api.router)
