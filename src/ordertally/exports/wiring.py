"""How the exports domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire exports: its routes and its jobs (run queued exports, expire files)."""
    from ordertally.exports import api, jobs  # noqa: F401  (@periodic_outside registers them)

    if app is not None:
        app.include_router(api.router)
