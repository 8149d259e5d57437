"""How the idempotency domain plugs into the app and the worker: its one register()."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire idempotency keys: the purge job."""
    from ordertally.idempotency import jobs  # noqa: F401  (@periodic_outside registers the purge)
