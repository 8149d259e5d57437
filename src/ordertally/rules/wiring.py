"""How the rules domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the rules domain: routes, the rule-evaluating consumer, the schedule tick."""
    from ordertally.rules import api, consumers, jobs  # noqa: F401  (decorators register)

    if app is not None:
        app.include_router(api.router)
