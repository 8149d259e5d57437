"""How the inventory domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the inventory domain: routes and the reservation sweep."""
    from ordertally.inventory import api, jobs  # noqa: F401  (@periodic registers the sweep)

    if app is not None:
        app.include_router(api.router)
