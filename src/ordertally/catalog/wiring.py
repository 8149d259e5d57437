"""How the catalog domain plugs into the app: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the catalog domain: its routes."""
    from ordertally.catalog import api

    if app is not None:
        app.include_router(api.router)
