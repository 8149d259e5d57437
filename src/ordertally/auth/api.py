"""Dependencies that authenticate the caller and check their role; the key-management routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from ordertally.auth import service
from ordertally.auth.service import Authenticator, Principal, check_permission
from ordertally.core.http import database, json_response


async def authorize(app: Any, authorization: str | None, permission: str) -> Principal:
    """The caller behind an `Authorization` header sent to `app`, who must hold `permission`:
    what `require` resolves, for a route that answers without FastAPI's dependency solving."""
    authenticator: Authenticator = app.state.authenticator
    principal = await authenticator.authenticate(authorization)
    check_permission(principal, permission)
    return principal


def require(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold `permission`."""

    async def dependency(request: Request) -> Principal:
        return await authorize(request.app, request.headers.get("authorization"), permission)

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency


router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.get("/keys", summary="Every API key (never the key itself)")
async def list_keys(
    request: Request, _: Annotated[Principal, Depends(require("auth.manage"))]
) -> Response:
    """List keys with their role, scope and revocation time."""
    async with database(request).transaction(write=False) as session:
        keys = await service.list_api_keys(session)
    return json_response({"items": keys})


@router.post("/keys/{key_id}/revoke", summary="Revoke a key, at once on every process")
async def revoke_key(
    request: Request, key_id: int, _: Annotated[Principal, Depends(require("auth.manage"))]
) -> Response:
    """Revoke a key; the next request with it is refused by every process."""
    async with database(request).transaction() as session:
        key = await service.revoke_api_key(session, key_id)
    return json_response(key)
