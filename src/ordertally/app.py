"""The FastAPI application factory: routers, problem-details errors, limits, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertally import __version__
from ordertally.auth.service import Authenticator
from ordertally.core import dispatch, edge, outbound
from ordertally.core.db import Database, create_database
from ordertally.core.errors import OrdertallyError, PayloadTooLarge, problem
from ordertally.core.settings import Settings, get_settings
from ordertally.domains import register_all
from ordertally.jobs.worker import run_worker
from ordertally.ops import health, metrics
from ordertally.payments import callbacks as payments_callbacks
from ordertally.payments import service as payments_service
from ordertally.search import dictionary as search_dictionary

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def _problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=body["status"], media_type=PROBLEM, headers=headers
    )


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, by header or while streaming. A route's
    own limit is found by path prefix; a prefix's `{name}` segment matches any one segment
    (`/api/v1/channels/{code}/imports`)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_route: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.per_route = [
            (prefix.split("{", 1)[0], _segments_pattern(prefix), limit)
            for prefix, limit in sorted((per_route or {}).items(), key=lambda kv: -len(kv[0]))
        ]

    def limit_for(self, path: str) -> int:
        """The limit of the longest matching route prefix, else the default."""
        for static, pattern, limit in self.per_route:
            if path.startswith(static) and (pattern is None or pattern.match(path)):
                return limit
        return self.default_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"]) if self.per_route else self.default_max
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await self._refuse(scope, send, max_bytes)
                return
        if any(name == b"content-length" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        # No length announced (chunked): buffer up to the limit before the app sees it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > max_bytes:
                await self._refuse(scope, send, max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, max_bytes: int) -> None:
        body = PayloadTooLarge(f"request body exceeds {max_bytes} bytes").to_problem(
            scope.get("path")
        )
        response = _problem_response(body)
        await response(scope, _empty_receive, send)


def _segments_pattern(prefix: str) -> re.Pattern[str] | None:
    """A prefix with `{name}` segments as a pattern (each matches one path segment); None for
    a plain prefix, which `startswith` decides alone."""
    if "{" not in prefix:
        return None
    parts = re.split(r"\{[^/{}]+\}", prefix)
    return re.compile("[^/]+".join(re.escape(p) for p in parts))


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class CallbackRoutes:
    """The payment callbacks, answered ahead of FastAPI's middleware stack.

    The platforms' traffic skips routing, dependency solving and the exception layers it does
    not need, and keeps what it does: the latency histogram under the same route template,
    the body limit with its problem document, and a problem document for an unexpected error
    (FastAPI's outermost layer otherwise). Anything but a POST to one of them goes on to `app`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.routes = {r.path: r for r in payments_callbacks.RAW_ROUTES}
        self.callbacks = metrics.LatencyMiddleware(
            BodyLimitMiddleware(self._answer, max_bytes=max_bytes)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root + "/"):
                path = path[len(root) :]  # as Starlette's router matches it
            route = self.routes.get(path)
            if route is not None:
                scope["route"] = route
                await self.callbacks(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await scope["route"].handle(scope, receive, tracked)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s", scope["path"])
            body = problem(
                500, "internal", "Internal error", "an unexpected error occurred", scope["path"]
            )
            await _problem_response(body)(scope, _empty_receive, send)


class OrdertallyApp(FastAPI):
    """FastAPI, with the payment callbacks answered ahead of its middleware stack and the
    routes dispatched through a table of path prefixes (`core.dispatch`, ADR 0047)."""

    callback_body_limit: int = 1_048_576

    def build_middleware_stack(self) -> ASGIApp:
        # Built at the first request or lifespan event, when every route is registered.
        dispatch.install(self.router)
        stack = super().build_middleware_stack()
        return CallbackRoutes(stack, self.callback_body_limit)


async def warm_up(db: Database, settings: Settings) -> None:
    """Pay start-up costs before the first request does: provider keys (an RSA private key
    takes tens of milliseconds to load and check) and a few database connections. A failure
    here is logged, not fatal: /readyz tells whether the service can work."""
    try:
        await asyncio.to_thread(payments_service.enabled_providers, settings)

        async def touch() -> None:
            async with db.transaction(write=False) as session:
                await session.execute(text("SELECT 1"))

        await asyncio.gather(*(touch() for _ in range(min(settings.db_pool_size, 4))))
        # the catalogue's words into the segmenter (seconds for a 100k-SKU catalogue), so the
        # first search does not pay for them
        async with db.transaction(write=False) as session:
            await search_dictionary.ensure_current(session)
    except Exception as exc:
        log.warning("warm-up incomplete: %r", exc)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause every request for tens of milliseconds now and then.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# The youngest generation is collected after this many more allocations than deallocations of
# tracked objects (CPython's default: 700). A process serving a hundred requests at once keeps
# thousands of young objects alive at any moment, so at 700 it ran a young collection every few
# orders and moved each in-flight request's objects into the older generations to be scanned
# again: ~55 us of the ~580 us of CPU an API process spent per created order (ADR 0058). The
# objects of a request die with it; at 20,000 the collector runs every few hundred orders.
GC_THRESHOLDS = (20_000, 10, 10)


def body_limits(settings: Settings) -> dict[str, int]:
    """The one place that sets request-body limits per route (by path prefix, where a `{name}`
    segment stands for any one segment); every other route gets `max_body_bytes`. The routes
    re-check their own limit on what they read."""
    from ordertally.channels.api import IMPORT_BODY_BYTES
    from ordertally.fulfillment.api import MAX_LIST_BYTES
    from ordertally.fulfillment.callbacks import MAX_PUSH_BYTES
    from ordertally.web.import_desk import UPLOAD_BODY_BYTES

    return {
        "/api/v1/channels/{code}/imports": IMPORT_BODY_BYTES,
        "/api/v1/shipments/import": MAX_LIST_BYTES,
        "/callbacks/carriers/": MAX_PUSH_BYTES,
        "/callbacks/channels/": settings.channels_webhook_max_bytes,
        "/ui/channels/import": UPLOAD_BODY_BYTES,
    }


DOCS_ASSETS = "/docs-assets"


def add_local_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc with their assets served by this process (no CDN: works offline).

    The assets are the pinned `fastapi-offline` package's copies of swagger-ui-dist and ReDoc.
    """
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="ordertally API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="ordertally API",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def create_app(
    settings: Settings | None = None, *, db: Database | None = None, embedded_worker: bool = False
) -> FastAPI:
    """Build the app; the database is created in the lifespan unless one is given."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_db = db is None
        database = db or create_database(
            settings, role="ordertally" if embedded_worker else "ordertally-api"
        )
        app.state.db = database
        app.state.authenticator = Authenticator(database, settings.api_key_cache_seconds)
        stop = asyncio.Event()
        worker: asyncio.Task[None] | None = None
        if embedded_worker:
            worker = asyncio.create_task(run_worker(database, settings, stop))
        await warm_up(database, settings)
        lag = asyncio.create_task(metrics.sample_loop_lag(stop))
        try:
            yield
        finally:
            stop.set()
            lag.cancel()
            if worker is not None:
                await worker
            await outbound.close_all()
            if own_db:
                await database.dispose()

    app = OrdertallyApp(
        title="ordertally",
        version=__version__,
        summary="Every order accounted for / 每一笔订单都对得上",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # No OpenTelemetry here: FastAPI's native telemetry would otherwise ask OpenTelemetry
        # for its providers on every request (8% of the API's CPU in a search profile).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    docs_enabled = settings.docs_enabled
    if docs_enabled is None:
        docs_enabled = settings.is_sqlite
    if docs_enabled:
        add_local_docs(app)
    app.state.metrics_token = settings.metrics_token
    if db is not None:  # tests that skip the lifespan still get a working app
        app.state.db = db
        app.state.authenticator = Authenticator(db, settings.api_key_cache_seconds)

    @app.exception_handler(OrdertallyError)
    async def domain_error(request: Request, exc: OrdertallyError) -> Response:
        return _problem_response(exc.to_problem(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        body = problem(
            422,
            "request.invalid",
            "The request is not valid",
            f"{len(errors)} field(s) failed validation",
            request.url.path,
            errors=errors,
        )
        return _problem_response(body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = problem(exc.status_code, code, str(exc.detail), str(exc.detail), request.url.path)
        return _problem_response(body, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        body = problem(
            500, "internal", "Internal error", "an unexpected error occurred", request.url.path
        )
        return _problem_response(body)

    # Every domain's routes, consumers, jobs and hooks, in the same order as the worker's.
    register_all(settings, app)
    app.include_router(health.router)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, per_route=body_limits(settings)
    )
    app.add_middleware(metrics.LatencyMiddleware)
    if settings.request_deadline_seconds > 0:
        app.add_middleware(
            edge.RequestDeadlineMiddleware,
            seconds=settings.request_deadline_seconds,
            retry_after=settings.request_deadline_retry_after_seconds,
            # a cancelled SQLite request unwinds only when its busy thread returns
            own_task=db.is_sqlite if db is not None else settings.is_sqlite,
        )
    if settings.rate_limit_enabled:
        app.add_middleware(
            edge.RateLimitMiddleware,
            per_key=settings.rate_limit_per_key,
            per_ip=settings.rate_limit_per_ip,
            auth_failures=settings.rate_limit_auth_failures,
            storage=edge.limit_storage(settings.redis_url),
        )
    app.add_middleware(edge.SecurityHeadersMiddleware)
    app.callback_body_limit = settings.max_body_bytes
    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory ordertally.app:app_factory` (several workers)."""
    return create_app(embedded_worker=False)
