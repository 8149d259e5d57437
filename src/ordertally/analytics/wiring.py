"""How the analytics domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire analytics: the daily tally and timeline consumers, and its routes."""
    from ordertally.analytics import consumers  # noqa: F401  (@consumer registers them)

    if app is not None:
        from ordertally.analytics import api

        app.include_router(api.router)
