"""A plugin as a merchant would write one: a periodic job registered on import, and a
register(app) that mounts a route."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.jobs.scheduler import periodic

router = APIRouter()
REGISTERED: list[bool] = []  # one entry per register() call: True when given an app


@router.get("/plugin/ping")
async def ping() -> dict[str, str]:
    """The plugin's own route."""
    return {"plugin": "pong"}


@periodic("test.plugin_job", every_seconds=3600)
async def plugin_job(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """The plugin's own job."""
    return {}


def register(app: FastAPI | None) -> None:
    """Mount the route when there is an app."""
    REGISTERED.append(app is not None)
    if app is not None:
        app.include_router(router)
