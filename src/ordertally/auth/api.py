"""Dependencies that authenticate the caller and check their role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from ordertally.auth.service import Authenticator, Principal, check_permission


def require(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold `permission`."""

    async def dependency(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        principal = await authenticator.authenticate(request.headers.get("authorization"))
        check_permission(principal, permission)
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency
