"""How the auth package plugs into the app: its key-management routes."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the auth routes (list and revoke API keys)."""
    from ordertally.auth import api

    if app is not None:
        app.include_router(api.router)
