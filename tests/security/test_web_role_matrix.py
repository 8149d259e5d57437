"""The role x page matrix of the back office, the session-side twin of test_role_matrix.py: every
`/ui/` route either checks a permission of the PERMISSIONS table through `signed_in(request,
"…")` (read from the handler's code) or is listed public below, and each role, signed in, is
refused exactly where the table says so (the 403 page, `data-refused="role"`); an anonymous
browser is sent to the sign-in page. A new page without either fails here."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from ordertally.auth.models import ROLES
from ordertally.auth.service import PERMISSIONS
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from tests.conftest import ONLY_SQLITE
from tests.web.helpers import make_user, sign_in

# The matrix is the same on both databases: it runs once.
pytestmark = [pytest.mark.anyio, ONLY_SQLITE]

# Pages anyone may open, and why.
PUBLIC = {
    ("GET", "/ui/login"): "the sign-in form",
    ("POST", "/ui/login"): "signing in",
    ("POST", "/ui/logout"): "signing out (a session, if any, is forgotten)",
    ("GET", "/ui/lang/{locale}"): "the language switch (a cookie)",
}
# The settings screen opens for a role holding any of its sections' permissions.
SETTINGS_SECTIONS = ("auth.manage", "notify.manage", "fx.manage")


def _permissions_in(function: Callable[..., Any]) -> list[str]:
    """The permissions a function passes to `signed_in(request, "…")`, or else to a helper
    that passes it on (`_step(request, case_no, "aftersales.manage", …)`: a call's argument
    that names a permission of the table)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return [
        node.args[1].value
        for node in calls
        if getattr(node.func, "id", None) == "signed_in"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
    ] or [
        arg.value
        for node in calls
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value in PERMISSIONS
    ]


def _checked_permission(endpoint: Callable[..., Any]) -> str | None:
    """The permission a page checks: in its handler, or in the page function of its own
    module that the handler calls (`batch_page` → `_page(request, batch_id)`). Whether the
    role is then refused is what the matrix below checks over HTTP."""
    found = _permissions_in(endpoint)
    if not found:
        tree = ast.parse(textwrap.dedent(inspect.getsource(endpoint)))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            helper = endpoint.__globals__.get(node.func.id)
            if callable(helper) and getattr(helper, "__module__", None) == endpoint.__module__:
                found += _permissions_in(helper)
    assert len(set(found)) <= 1, f"{endpoint.__name__} checks several permissions: {found}"
    return found[0] if found else None


def _allowed(method: str, path: str, endpoint: Callable[..., Any]) -> frozenset[str] | None:
    """The roles that may open a page (None: public)."""
    if (method, path) in PUBLIC:
        return None
    if (method, path) == ("GET", "/ui/settings"):
        return frozenset(r for r in ROLES if any(r in PERMISSIONS[p] for p in SETTINGS_SECTIONS))
    permission = _checked_permission(endpoint)
    assert permission is not None, f"{method} {path} checks no permission and is not public"
    assert permission in PERMISSIONS, f"{method} {path} checks unknown {permission!r}"
    return PERMISSIONS[permission]


def _pages(app: Any) -> list[tuple[str, str, frozenset[str] | None]]:
    rows = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = str(context.path)
        if not isinstance(route, APIRoute) or not path.startswith("/ui/"):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            rows.append((method, path, _allowed(method, path, route.endpoint)))
    return rows


def _url(path: str) -> str:
    """Fill path parameters with values that match nothing (so allowed calls change nothing)."""
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.fixture
def matrix_app(db: Database) -> Any:
    from ordertally.app import create_app

    settings = get_settings().model_copy(update={"rate_limit_enabled": False})
    return create_app(settings, db=db)


async def test_each_role_is_refused_exactly_where_the_table_says_on_every_page(
    matrix_app: Any, db: Database
) -> None:
    pages = _pages(matrix_app)
    guarded = [p for p in pages if p[2] is not None]
    # The pages added since the first matrix are in it
    paths = {p for _, p, _ in guarded}
    for page in ("/ui/cases", "/ui/channels", "/ui/payments", "/ui/shipping", "/ui/settings"):
        assert page in paths
    wrong: list[tuple[str, str, str, int]] = []
    transport = httpx.ASGITransport(app=matrix_app, client=("192.0.2.2", 4000))
    base = "https://ordertally.test"
    async with httpx.AsyncClient(transport=transport, base_url=base) as anonymous:
        for method, path, _ in guarded:
            # When no one is signed in / Then the browser is sent to sign in
            r = await anonymous.request(method, _url(path))
            if r.status_code != 303 or not r.headers["location"].startswith("/ui/login"):
                wrong.append((method, path, "anonymous", r.status_code))
    checked = 0
    for role in ROLES:
        await make_user(db, f"matrix-{role}", role)
        async with httpx.AsyncClient(transport=transport, base_url=base) as browser:
            assert (await sign_in(browser, f"matrix-{role}")).status_code == 303
            for method, path, allowed in guarded:
                assert allowed is not None
                # When the role opens the page or posts the action (no CSRF token: an allowed
                # role is stopped there, so nothing changes)
                r = await browser.request(method, _url(path))
                refused = r.status_code == 403 and 'data-refused="role"' in r.text
                checked += 1
                # Then it is refused by role iff the table does not grant it
                if refused == (role in allowed) or r.status_code in (303, 500):
                    wrong.append((method, path, role, r.status_code))
    assert wrong == []
    assert len(guarded) >= 20 and checked == len(ROLES) * len(guarded)
