"""The HTTP edge: rate limits, the request deadline and the headers every response carries.

Pure ASGI middleware (no per-request task or body copy on the hot path). Callbacks
(`/callbacks/...`: payments, answered ahead of this stack by `app.CallbackRoutes`, channels and
carriers) are never rate-limited: a platform whose notification is refused retries later or
gives up, and a lost payment is worse than a flood the signature check already absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterable

import orjson
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertally.core.errors import problem

log = logging.getLogger(__name__)
PROBLEM = b"application/problem+json"


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer …` header; the scheme is case-insensitive."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _send_problem(
    send: Send, status: int, body: dict[str, object], headers: Iterable[tuple[bytes, bytes]]
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` on every response, `Cache-Control: no-store` on the
    routes that carry personal data, and `WWW-Authenticate: Bearer` on every 401 but callbacks'."""

    PERSONAL = ("/api/v1/customers", "/contact")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        personal = path.startswith(self.PERSONAL[0]) or path.endswith(self.PERSONAL[1])
        bearer = not path.startswith("/callbacks/")  # platforms sign; they send no bearer key

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                if personal and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if message["status"] == 401 and bearer and b"www-authenticate" not in names:
                    headers.append((b"www-authenticate", b'Bearer realm="ordertally"'))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def limit_storage(redis_url: str) -> Storage:
    """The shared Redis store when configured (production), else this process's memory."""
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return RedisStorage(uri, implementation="redispy")


class RateLimitMiddleware:
    """Per-key and per-address request limits, and a stricter one on failed authentications.

    A key is identified by a hash of what the client presented (valid or not), so limiting
    costs no database read; random-key guessing is stopped by the failure limit on the address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: str,
        per_ip: str,
        auth_failures: str,
        storage: Storage,
    ) -> None:
        self.app = app
        self.per_key = parse_many(per_key)
        self.per_ip = parse_many(per_ip)
        self.auth_failures = parse_many(auth_failures)
        self.limiter = FixedWindowRateLimiter(storage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/callbacks/"):
            await self.app(scope, receive, send)  # platforms' notifications: never limited
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        token = bearer_token(authorization)
        try:
            refused = await self._refused(ip, token)
        except Exception:  # a store outage must not take the API down with it
            log.warning("rate-limit store unavailable; request let through", exc_info=True)
            refused = None
        if refused is not None:
            item, identifiers, reason = refused
            await self._too_many(scope, send, item, identifiers, reason)
            return

        async def watch_status(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                with contextlib.suppress(Exception):
                    for failure in self.auth_failures:
                        await self.limiter.hit(failure, "authfail", ip)
            await send(message)

        await self.app(scope, receive, watch_status)

    async def _refused(
        self, ip: str, token: str | None
    ) -> tuple[RateLimitItem, tuple[str, ...], str] | None:
        for item in self.auth_failures:
            if not await self.limiter.test(item, "authfail", ip):
                return item, ("authfail", ip), "too many failed authentications from this address"
        for item in self.per_ip:
            if not await self.limiter.hit(item, "ip", ip):
                return item, ("ip", ip), "too many requests from this address"
        if token is not None:
            key = hashlib.sha256(token.encode()).hexdigest()[:32]
            for item in self.per_key:
                if not await self.limiter.hit(item, "key", key):
                    return item, ("key", key), "too many requests for this API key"
        return None

    async def _too_many(
        self,
        scope: Scope,
        send: Send,
        item: RateLimitItem,
        identifiers: tuple[str, ...],
        reason: str,
    ) -> None:
        stats = await self.limiter.get_window_stats(item, *identifiers)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        body = problem(
            429,
            "request.rate_limited",
            "Too many requests",
            f"{reason}: limit {item}; retry after {retry_after} s",
            scope["path"],
            retry_after=retry_after,
        )
        await _send_problem(send, 429, body, [(b"retry-after", str(retry_after).encode())])


class RequestDeadlineMiddleware:
    """Answer 503 with `Retry-After` when a request is not answered within the deadline.

    The request runs in its own task so the 503 goes out on time even when the work is stuck
    in a place that does not yield to cancellation at once (SQLite's busy wait runs in a
    thread). The task is cancelled and a late answer is dropped, but a write already handed to
    the database may still commit once the lock frees: a 503 means "outcome unknown", and a
    retry with the same Idempotency-Key returns the one result.
    """

    def __init__(self, app: ASGIApp, *, seconds: float, retry_after: int) -> None:
        self.app = app
        self.seconds = seconds
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        started = False
        expired = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if expired:
                return
            started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.seconds)
            if done or started:  # an answer already under way (a long stream) is left to finish
                await task
                return
        except asyncio.CancelledError:
            task.cancel()
            raise
        expired = True
        task.cancel()
        task.add_done_callback(_log_late_failure)
        body = problem(
            503,
            "request.deadline_exceeded",
            "Service busy",
            f"the request was not answered within {self.seconds:g} s and was cancelled; "
            "retry later (with the same Idempotency-Key for writes)",
            scope["path"],
            retry_after=self.retry_after,
        )
        await _send_problem(send, 503, body, [(b"retry-after", str(self.retry_after).encode())])


def _log_late_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("request failed after its deadline: %r", task.exception())
