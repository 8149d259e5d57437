"""The prefix table picks what FastAPI's ordered scan picks: for every registered route, every
method, and the near misses around each path (a slash more or less, a segment more, a final
newline, a root path), the same route with the same path parameters and the same scope, and the
same 404, 405 with `Allow`, slash redirect, HEAD and mounts when the app answers over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.convertors import CONVERTOR_TYPES
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route, compile_path
from starlette.types import Message, Receive, Scope, Send

from ordertally.app import create_app
from ordertally.core import dispatch
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from tests.conftest import LiveServer

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SAMPLE = {
    "str": "OT2612050000001",
    "int": "42",
    "float": "1.5",
    "uuid": str(uuid.UUID(int=7)),
    "path": "css/app.css",
}


def concrete(template: str) -> str:
    """A path the template matches: each parameter replaced by a value of its convertor."""
    _, path_format, convertors = compile_path(template)
    names = {type(c): n for n, c in CONVERTOR_TYPES.items()}
    values = {name: SAMPLE[names[type(c)]] for name, c in convertors.items()}
    return path_format.format(**values)


def templates(app: FastAPI) -> Iterator[str]:
    """Every route's path template, through included routers (FastAPI's own walk) and mounts."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            yield route.path + "/{path:path}"
        elif context.path:
            yield context.path


def variants(path: str) -> list[str]:
    return [path, path + "/", path.rstrip("/") or "/", path + "\n", path + "/extra", path[:-1]]


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _scope(app: FastAPI, method: str, path: str, root_path: str = "") -> Scope:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"ordertally.test")],
        "app": app,
    }


def _plain(value: Any) -> Any:
    """A scope value made comparable: containers by value, objects by identity."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bytes | uuid.UUID | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return ("object", id(value))


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


@pytest.fixture
def routed() -> Iterator[tuple[FastAPI, dispatch.RouteTable, list[Any]]]:
    """The app with every route's `handle` replaced by a recorder of the scope it is given."""
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", docs_enabled=True))
    reached: list[Any] = []

    async def arrived(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((id(self), _plain(scope)))

    # (and every route class of the app that answers some requests in a `handle` of its own)
    own = [c for c in _subclasses(APIRoute) if "handle" in c.__dict__]
    saved = {cls: cls.__dict__["handle"] for cls in (APIRoute, Route, Mount, *own)}
    for cls in saved:
        cls.handle = arrived  # type: ignore[method-assign]
    try:
        yield app, dispatch.RouteTable(app.router), reached
    finally:
        for cls, handle in saved.items():
            cls.handle = handle  # type: ignore[method-assign]


def _outcome(entry: Any, scope: Scope, reached: list[Any]) -> Any:
    reached.clear()
    # the recorders never suspend: one step runs the dispatch to its end
    coroutine = entry(scope, _receive, _send)
    try:
        coroutine.send(None)
    except StopIteration:
        pass
    except HTTPException as exc:
        return ("raised", exc.status_code, exc.headers, _plain(scope))
    else:
        coroutine.close()
        raise AssertionError("the dispatch suspended")
    return ("handled", reached[:], _plain(scope))


def test_every_route_is_dispatched_as_the_ordered_scan_dispatches_it(
    routed: tuple[FastAPI, dispatch.RouteTable, list[Any]],
) -> None:
    # Given the app's routes and the table built from them
    app, table, reached = routed
    paths = sorted({concrete(t) for t in templates(app)})
    assert len(paths) > 150 and "/api/v1/search" in paths and "/metrics" in paths
    compared = handled = 0
    for path in paths:
        for candidate in variants(path):
            methods = METHODS if candidate == path else ("GET", "POST")
            for method in methods:
                for root in ("", "/oms"):
                    # When the ordered scan and the table each dispatch the same request
                    scan = _outcome(app.router.app, _scope(app, method, candidate, root), reached)
                    mine = _outcome(table, _scope(app, method, candidate, root), reached)
                    # Then the same route gets it with the same scope (or the same error)
                    assert mine == scan, (method, root, candidate)
                    compared += 1
                    handled += scan[0] == "handled"
    assert handled > len(paths)  # every path reached a route at least once
    assert compared > 10 * len(paths)


def test_only_the_routes_of_the_paths_prefix_are_tried(
    routed: tuple[FastAPI, dispatch.RouteTable, list[Any]],
) -> None:
    # Given the table
    app, table, _ = routed
    # When the search and an order are looked up
    search = table.candidates(_scope(app, "GET", "/api/v1/search"))
    order = table.candidates(_scope(app, "GET", "/api/v1/orders/OT1"))
    # Then only the routes under their prefixes are candidates, in scan order
    assert [getattr(leaf.route, "path", "") for leaf in search] == ["/api/v1/search"]
    assert order
    assert all(getattr(leaf.route, "path", "").startswith("/api/v1/orders") for leaf in order)
    assert [leaf.order for leaf in order] == sorted(leaf.order for leaf in order)
    assert len(table.leaves) > 200


@pytest.mark.parametrize(
    ("template", "prefix"),
    [
        ("/api/v1/orders", ("api", "v1", "orders")),
        ("/ui/", ("ui", "")),
        ("/", ("",)),
        ("/api/v1/orders/{order_no}/cancel", ("api", "v1", "orders")),
        ("/t/{token}/qr.{kind}", ("t",)),
        ("/files/report-{day}.csv", ("files",)),
        ("/{anything:path}", ()),
        ("/ui/static/{path:path}", ("ui", "static")),
    ],
)
def test_static_prefix(template: str, prefix: tuple[str, ...]) -> None:
    assert dispatch.static_prefix(template) == prefix


@pytest.fixture
async def app_client() -> Any:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", docs_enabled=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
        yield app, c


@pytest.mark.anyio
async def test_edge_answers_over_http(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = app_client
    # A route registered late is found by the table, which the app installed
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert isinstance(app.router.middleware_stack, dispatch.RouteTable)
    # HEAD: a Starlette route answers it for GET, a FastAPI route refuses it with Allow
    assert (await client.head("/openapi.json")).status_code == 200
    head = await client.head("/healthz")
    assert head.status_code == 405 and head.headers["allow"] == "GET"
    # 405 with Allow, as problem details
    refused = await client.delete("/healthz")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "method_not_allowed"
    # 404 as problem details, nothing matched
    missing = await client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    # a slash too many is redirected to the route without it
    redirected = await client.get("/healthz/", follow_redirects=False)
    assert redirected.status_code == 307
    assert redirected.headers["location"] == "http://ordertally.test/healthz"
    # mounts: the local docs' assets and the admin UI's static files
    asset = await client.get("/docs-assets/swagger-ui.css")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/css")
    assert (await client.get("/docs-assets/no-such-file.js")).status_code == 404
    assert (await client.get("/docs")).status_code == 200
    # a path parameter reaches its route
    switched = await client.get("/ui/lang/en", follow_redirects=False)
    assert switched.status_code == 303 and switched.headers["location"] == "/ui/"


@pytest.mark.anyio
async def test_routes_added_after_the_first_request_are_served(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    assert (await client.get("/healthz")).status_code == 200
    table = app.router.middleware_stack
    assert isinstance(table, dispatch.RouteTable)

    # When a route is added to the app after it has served a request
    @app.get("/late/{n:int}")
    async def late(n: int) -> dict[str, int]:
        return {"n": n}

    # Then it is served, with its converted parameter
    answer = await client.get("/late/7")
    assert answer.status_code == 200 and answer.json() == {"n": 7}
    assert any(getattr(leaf.route, "path", "") == "/late/{n:int}" for leaf in table.leaves)


@pytest.mark.anyio
async def test_served_app_routes_through_the_table(
    live_server: LiveServer, keys: dict[str, str], db: Database
) -> None:
    # Given the app served by uvicorn on a real port, over either database
    ops = {"Authorization": f"Bearer {keys['ops']}"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        # When routes early and late in the registration order are asked for
        ready = await client.get("/readyz")
        order = await client.get("/api/v1/orders/OT0000000000000", headers=ops)
        search = await client.get("/api/v1/search", params={"q": "138"}, headers=ops)
        unknown = await client.get("/api/v1/search/nowhere", headers=ops)
        wrong = await client.put("/api/v1/search", headers=ops)
        slash = await client.get("/api/v1/search/", headers=ops, follow_redirects=False)
        static = await client.get("/ui/static/app.css")
    # Then each answers as its route does
    assert ready.status_code == 200
    assert order.status_code == 404 and order.json()["code"] == "order.not_found"
    assert search.status_code == 200 and "items" in search.json()
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert slash.status_code == 307
    assert slash.headers["location"].endswith("/api/v1/search")
    assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
