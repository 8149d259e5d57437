"""The role x endpoint matrix, generated from the permission table and the app's routes: every
route declares its permission (a `require(...)` dependency) or is listed public below, and every
role is refused exactly where `PERMISSIONS` says so. A new route without either fails here."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from ordertally.auth.models import ROLES
from ordertally.auth.service import PERMISSIONS
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from tests.conftest import ONLY_SQLITE
from tests.factories import auth

# The matrix is the same on both databases: it runs once.
pytestmark = [pytest.mark.anyio, ONLY_SQLITE]

# Routes that take no API key, and why.
PUBLIC = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/metrics"): "Prometheus scrape (metrics token when configured)",
    ("GET", "/docs"): "API docs page (setting)",
    ("GET", "/redoc"): "API docs page (setting)",
    ("GET", "/openapi.json"): "the API description",
    ("GET", "/"): "redirects to the back office's sign-in",
}
# Permissions in the table that no route checks today (no fulfillment management route yet;
# users are managed from the back office's session pages). A route that starts checking one must
# be removed from here (`channels.import` was, when order files could be uploaded over the API).
UNUSED = {"fulfillment.manage", "users.manage"}
PUBLIC_PREFIXES = (
    "/callbacks/",  # platforms' signed notifications
    "/t/",  # buyers' tracking page behind an unguessable token
    "/webhooks/",  # channel webhooks, signed per account
    # The back office signs people in with a session, not an API key; each page checks the same
    # PERMISSIONS table through its session (test_web_role_matrix.py, every page x every role).
    "/ui/",
)


def _permission(route: APIRoute) -> str | None:
    """The permission a route's `require(...)` dependency checks, if any."""
    found = [
        dep.call.__name__.removeprefix("require_")
        for dep in route.dependant.dependencies
        if dep.call is not None and getattr(dep.call, "__name__", "").startswith("require_")
    ]
    assert len(found) <= 1, f"{route.path} requires several permissions: {found}"
    if not found:
        return None
    name = found[0]
    matches = [p for p in PERMISSIONS if p.replace(".", "_") == name]
    assert matches, f"{route.path} requires {name!r}, which is not in PERMISSIONS"
    return matches[0]


def _routes(app: Any) -> list[tuple[str, str, str | None]]:
    rows = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            rows.append((method, str(context.path), _permission(route)))
    return rows


def _url(path: str) -> str:
    """Fill path parameters with values that match nothing (so allowed calls change nothing)."""
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.fixture
def matrix_app(db: Database) -> Any:
    from ordertally.app import create_app

    settings = get_settings().model_copy(update={"rate_limit_enabled": False})
    return create_app(settings, db=db)


async def test_every_route_declares_a_permission_or_is_public(matrix_app: Any) -> None:
    # Given the app's routes / Then each has a permission or a stated public reason
    undeclared = [
        (m, p)
        for m, p, perm in _routes(matrix_app)
        if perm is None and (m, p) not in PUBLIC and not p.startswith(PUBLIC_PREFIXES)
    ]
    assert undeclared == []
    used = {perm for _, _, perm in _routes(matrix_app) if perm is not None}
    assert set(PERMISSIONS) - used == UNUSED, "permissions no route checks"


async def test_each_role_is_refused_exactly_where_the_table_says(
    matrix_app: Any, keys: dict[str, str]
) -> None:
    guarded = [row for row in _routes(matrix_app) if row[2] is not None]
    transport = httpx.ASGITransport(app=matrix_app, client=("192.0.2.1", 4000))
    wrong: list[tuple[str, str, str, int]] = []
    checked = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
        for method, path, permission in _routes(matrix_app):
            if permission is None:
                continue
            url = _url(path)
            # When no key is sent / Then 401
            anonymous = await c.request(method, url)
            if anonymous.status_code != 401:
                wrong.append((method, path, "anonymous", anonymous.status_code))
            for role in ROLES:
                # When each role calls it
                r = await c.request(method, url, headers=auth(keys[role]))
                refused = r.status_code == 403 and r.json().get("code") == "auth.forbidden"
                checked += 1
                # Then it is refused iff the table does not grant the permission to the role
                if refused == (role in PERMISSIONS[permission]) or r.status_code == 401:
                    wrong.append((method, path, role, r.status_code))
    assert wrong == []
    assert len(guarded) > 40 and checked == len(ROLES) * len(guarded)
