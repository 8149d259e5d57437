"""Liveness, readiness and the metrics endpoint."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from ordertally.core.db import Database
from ordertally.core.errors import problem
from ordertally.ops import metrics

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable")
async def readyz(request: Request) -> Response:
    """200 when a query succeeds, 503 otherwise."""
    db: Database = request.app.state.db
    try:
        async with db.transaction(write=False) as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        body = problem(503, "ops.not_ready", "Not ready", f"database unreachable: {exc}")
        return Response(orjson.dumps(body), 503, media_type="application/problem+json")
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    """Exposition format, with database-derived gauges refreshed first."""
    if not metrics.scrape_allowed(
        getattr(request.app.state, "metrics_token", ""), request.headers.get("authorization")
    ):
        refusal = problem(
            401,
            "auth.unauthenticated",
            "Missing or invalid metrics token",
            "send Authorization: Bearer <metrics token>",
        )
        return Response(orjson.dumps(refusal), 401, media_type="application/problem+json")
    await metrics.refresh_gauges(request.app.state.db)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
