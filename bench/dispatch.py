"""Route dispatch alone: FastAPI's ordered scan against the prefix table (`core.dispatch`), for
the app's real routes. The handlers are replaced by one that sends an empty 200, so the figure is
what a request pays from the router's entry to its route's `handle`; with `--stack`, from the
app's entry (every middleware, rate limits and deadline as configured by default) instead. The
two are timed interleaved in one process.

    python -m bench.dispatch [--requests 20000] [--rounds 5] [--stack | --edge] [--bearer]
        [--database-url postgresql+asyncpg://...]

`--edge` times the whole stack (prefix table) twice, interleaved: with the edge as it was before
ADR 0051 (rate limits through `limits`' memory storage, the request deadline in a task of its
own per request) and as it is.

`--database-url` only chooses how the app is built (never connected: the handlers do not run):
a PostgreSQL URL gives the production edge (the request deadline in the request's own task;
SQLite runs each request in a task of its own). `--bearer` sends an API key, so the per-key
limit is counted as on every authenticated request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from fastapi.routing import APIRoute
from limits.aio.storage import MemoryStorage
from starlette.types import Message, Receive, Scope, Send

from ordertally.app import create_app
from ordertally.core import dispatch, edge
from ordertally.core.settings import Settings

# method, path: an order read (registered early), the search (late), the last route registered
REQUESTS = {
    "order GET /api/v1/orders/{order_no}": ("GET", "/api/v1/orders/OT2612050000001"),
    "order POST /api/v1/orders": ("POST", "/api/v1/orders"),
    "search GET /api/v1/search": ("GET", "/api/v1/search"),
    "last GET /metrics": ("GET", "/metrics"),
}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


HEADERS = [(b"host", b"127.0.0.1")]


def _scope(app: Any, method: str, path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"q=138",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "app": app,
    }


async def _time(entry: Any, app: Any, method: str, path: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await entry(_scope(app, method, path), _receive, _send)
    return (time.perf_counter() - started) / n * 1e6


def _edge_as_before(app: Any) -> None:
    """The app's edge as before ADR 0051: `limits`' memory storage, a task per deadline."""
    for entry in app.user_middleware:
        if entry.cls is edge.RateLimitMiddleware:
            entry.kwargs["storage"] = MemoryStorage()
        elif entry.cls is edge.RequestDeadlineMiddleware:
            entry.kwargs["own_task"] = True


async def _run(
    requests: int, rounds: int, stack: bool, database_url: str, bearer: bool, compare_edge: bool
) -> None:
    # the default limits' machinery, with room for a bench's requests from one address and key
    settings = Settings(
        database_url=database_url,
        docs_enabled=True,
        rate_limit_per_ip="1000000/second;60000000/minute",
        rate_limit_per_key="1000000/second;60000000/minute",
    )
    if bearer:
        HEADERS.append((b"authorization", b"Bearer ot_bench_" + b"k" * 40))
    app = create_app(settings)
    reached: list[str] = []

    async def arrived(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(self.path)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    APIRoute.handle = arrived  # type: ignore[method-assign]
    router = app.router
    table = dispatch.RouteTable(router)
    entries: dict[str, Any] = {"ordered scan (before)": router.app, "prefix table (after)": table}
    if stack:
        await app(_scope(app, "GET", "/healthz"), _receive, _send)  # builds the stack

        async def scan(scope: Scope, receive: Receive, send: Send) -> None:
            router.middleware_stack = router.app
            await app(scope, receive, send)

        async def tabled(scope: Scope, receive: Receive, send: Send) -> None:
            router.middleware_stack = table
            await app(scope, receive, send)

        entries = {"app, ordered scan (before)": scan, "app, prefix table (after)": tabled}
    if compare_edge:
        old_edge = create_app(settings)
        _edge_as_before(old_edge)
        for built in (old_edge, app):
            await built(_scope(built, "GET", "/healthz"), _receive, _send)  # builds the stack
        entries = {"edge before ADR 0051": old_edge, "edge now": app}
    for label, (method, path) in REQUESTS.items():
        for entry in entries.values():
            reached.clear()
            await entry(_scope(app, method, path), _receive, _send)
            assert reached and label.endswith(reached[0]), (label, reached)
        times: dict[str, list[float]] = {name: [] for name in entries}
        for _ in range(rounds):
            for name, entry in entries.items():
                times[name].append(await _time(entry, app, method, path, requests))
        print(label)
        for name, values in times.items():
            shown = " ".join(f"{v:.1f}" for v in values)
            print(f"  {name:28} median {statistics.median(values):7.1f} µs  ({shown})")
        before, after = (statistics.median(v) for v in times.values())
        print(f"  ratio after/before: {after / before:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stack", action="store_true", help="from the app's entry")
    parser.add_argument("--edge", action="store_true", help="the edge before ADR 0051 and now")
    parser.add_argument("--bearer", action="store_true", help="send an API key")
    parser.add_argument(
        "--database-url", default="sqlite+aiosqlite:///:memory:", help="how the app is built"
    )
    args = parser.parse_args()
    asyncio.run(
        _run(args.requests, args.rounds, args.stack, args.database_url, args.bearer, args.edge)
    )


if __name__ == "__main__":
    main()
