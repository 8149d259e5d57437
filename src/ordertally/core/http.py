"""What every router needs from a request, and JSON responses built with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request, Response

from ordertally.core.db import Database

JSON = "application/json"


def database(request: Request) -> Database:
    """The process's Database, set up by the app's lifespan."""
    db: Database = request.app.state.db
    return db


def client_ip(request: Request) -> str | None:
    """The peer address, for audit rows."""
    return request.client.host if request.client else None


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised by orjson (no response-model validation on the hot path)."""
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)
