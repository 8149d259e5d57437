"""How the payments domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the payments domain: callbacks and routes, event schema, the apply consumer,
    compensation jobs, and the last query before an unpaid order is closed."""
    from ordertally.payments import (  # noqa: F401  (decorators register)
        api,
        callbacks,
        compensation,
        consumers,
        events,
        jobs,
    )

    compensation.register_checks()
    if app is not None:
        app.include_router(callbacks.router)
        app.include_router(api.router)
