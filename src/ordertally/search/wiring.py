"""How the search domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the search domain: the search and synonym routes, the hook that queues changed
    orders, the re-indexing consumers, the lane that indexes, the dictionary watcher job."""
    from ordertally.search import api, consumers, jobs, lane  # noqa: F401  (decorators register)

    if app is not None:
        app.include_router(api.router)
