"""How the job machinery plugs into the worker: its one register() (the retention job)."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI | None) -> None:
    """Wire the machinery's retention job."""
    from ordertally.jobs import retention  # noqa: F401  (@periodic_outside registers the purge)
