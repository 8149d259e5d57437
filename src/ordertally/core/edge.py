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
from limits.aio.storage import RedisStorage, Storage
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


class LocalWindows:
    """Fixed windows counted in this process's memory, as `limits`' fixed-window strategy
    counts them in its memory storage: a key's window opens at its first hit and lasts the
    limit's period, and a refused hit still counts. A dict read and write per check, where that
    storage takes an `asyncio.Lock` and starts an expiry task on every hit; windows that have
    ended are swept at most once a minute (that storage never drops a key it is not asked
    about again)."""

    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._windows: dict[tuple[str, int, str], list[float]] = {}  # key: [hits, ends at]
        self._sweep_at = 0.0

    def hit(self, item: RateLimitItem, key: tuple[str, int, str], now: float) -> bool:
        """Count one hit; False when it is over the limit."""
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            if now >= self._sweep_at:
                self._sweep(now)
            window = self._windows[key] = [0, now + item.get_expiry()]
        window[0] += 1
        return window[0] <= item.amount

    def test(self, item: RateLimitItem, key: tuple[str, int, str], now: float) -> bool:
        """True when one more hit would be within the limit (nothing counted)."""
        window = self._windows.get(key)
        return window is None or window[1] <= now or window[0] < item.amount

    def reset_time(self, key: tuple[str, int, str], now: float) -> float:
        """When the key's window ends (now when it has none)."""
        window = self._windows.get(key)
        return now if window is None else window[1]

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + self.SWEEP_SECONDS
        ended = [key for key, (_, ends_at) in self._windows.items() if ends_at <= now]
        for key in ended:
            del self._windows[key]


def limit_storage(redis_url: str) -> Storage | LocalWindows:
    """The shared Redis store when configured (production), else this process's memory."""
    if not redis_url:
        return LocalWindows()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return RedisStorage(uri, implementation="redispy")


# A refusal: the limit, its identifiers (kind, index of the limit in its list, who), the reason.
Refusal = tuple[RateLimitItem, tuple[str, int, str], str]
REASONS = {
    "authfail": "too many failed authentications from this address",
    "ip": "too many requests from this address",
    "key": "too many requests for this API key",
}


class RateLimitMiddleware:
    """Per-key and per-address request limits, and a stricter one on failed authentications.

    A key is identified by a hash of what the client presented (valid or not), so limiting
    costs no database read; random-key guessing is stopped by the failure limit on the address.
    Without Redis the windows are this process's `LocalWindows` (no await on the way); with it,
    `limits`' fixed-window strategy over the shared store.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: str,
        per_ip: str,
        auth_failures: str,
        storage: Storage | LocalWindows,
    ) -> None:
        self.app = app
        self.per_key = parse_many(per_key)
        self.per_ip = parse_many(per_ip)
        self.auth_failures = parse_many(auth_failures)
        self.local = storage if isinstance(storage, LocalWindows) else None
        self.limiter = (
            None if isinstance(storage, LocalWindows) else FixedWindowRateLimiter(storage)
        )

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
        key = hashlib.sha256(token.encode()).hexdigest()[:32] if token is not None else None
        refused: Refusal | None
        if self.local is not None:
            refused = self._refused_here(self.local, ip, key, time.time())
        else:
            try:
                refused = await self._refused_shared(ip, key)
            except Exception:  # a store outage must not take the API down with it
                log.warning("rate-limit store unavailable; request let through", exc_info=True)
                refused = None
        if refused is not None:
            await self._too_many(scope, send, *refused)
            return

        async def watch_status(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                with contextlib.suppress(Exception):
                    await self._failed(ip)
            await send(message)

        await self.app(scope, receive, watch_status)

    def _refused_here(
        self, windows: LocalWindows, ip: str, key: str | None, now: float
    ) -> Refusal | None:
        for i, item in enumerate(self.auth_failures):
            if not windows.test(item, ("authfail", i, ip), now):
                return item, ("authfail", i, ip), REASONS["authfail"]
        for i, item in enumerate(self.per_ip):
            if not windows.hit(item, ("ip", i, ip), now):
                return item, ("ip", i, ip), REASONS["ip"]
        if key is not None:
            for i, item in enumerate(self.per_key):
                if not windows.hit(item, ("key", i, key), now):
                    return item, ("key", i, key), REASONS["key"]
        return None

    async def _refused_shared(self, ip: str, key: str | None) -> Refusal | None:
        assert self.limiter is not None
        for i, item in enumerate(self.auth_failures):
            if not await self.limiter.test(item, "authfail", ip):
                return item, ("authfail", i, ip), REASONS["authfail"]
        for i, item in enumerate(self.per_ip):
            if not await self.limiter.hit(item, "ip", ip):
                return item, ("ip", i, ip), REASONS["ip"]
        if key is not None:
            for i, item in enumerate(self.per_key):
                if not await self.limiter.hit(item, "key", key):
                    return item, ("key", i, key), REASONS["key"]
        return None

    async def _failed(self, ip: str) -> None:
        if self.local is not None:
            now = time.time()
            for i, failure in enumerate(self.auth_failures):
                self.local.hit(failure, ("authfail", i, ip), now)
            return
        assert self.limiter is not None
        for failure in self.auth_failures:
            await self.limiter.hit(failure, "authfail", ip)

    async def _too_many(
        self,
        scope: Scope,
        send: Send,
        item: RateLimitItem,
        identifiers: tuple[str, int, str],
        reason: str,
    ) -> None:
        now = time.time()
        if self.local is not None:
            reset_time = self.local.reset_time(identifiers, now)
        else:
            assert self.limiter is not None
            kind, _, who = identifiers
            reset_time = (await self.limiter.get_window_stats(item, kind, who)).reset_time
        retry_after = max(1, math.ceil(reset_time - now))
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

    The request runs in the connection's own task under a timer (no task or `asyncio.wait` per
    request). When the deadline passes before the answer has started, the 503 is sent at once
    by a short task of its own and the request's task is cancelled; its late answer is dropped.
    An answer already under way (a long stream) is left to finish.

    `own_task` (SQLite) runs the request in a task of its own instead, as before ADR 0051: a
    request cancelled while it waits on SQLite's busy thread unwinds only when that thread
    returns (its rollback queues behind the stuck statement), and the middleware must not wait
    for that before it returns. Either way a write already handed to the database may still
    commit once the lock frees: a 503 means "outcome unknown", and a retry with the same
    Idempotency-Key returns the one result.
    """

    def __init__(
        self, app: ASGIApp, *, seconds: float, retry_after: int, own_task: bool = False
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.retry_after = retry_after
        self.own_task = own_task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        if self.own_task:
            await self._in_own_task(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        started = False
        answer: asyncio.Task[None] | None = None

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answer is not None:
                return
            started = True
            await send(message)

        def expire() -> None:
            nonlocal answer
            if started:  # an answer already under way (a long stream) is left to finish
                return
            answer = loop.create_task(self._late(scope, send))
            task.cancel()

        timer = loop.call_later(self.seconds, expire)
        try:
            await self.app(scope, receive, guarded_send)
        except BaseException as exc:
            if answer is None:
                raise
            late: BaseException | None = exc
        else:
            if answer is None:
                return
            late = None  # it swallowed the cancellation
        finally:
            timer.cancel()
        if task.uncancel() > 0:  # cancelled by someone else too (the server shutting down)
            answer.cancel()
            raise asyncio.CancelledError
        if late is not None and not isinstance(late, asyncio.CancelledError):
            log.warning("request failed after its deadline: %r", late)
        await answer

    async def _in_own_task(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        await self._late(scope, send)

    async def _late(self, scope: Scope, send: Send) -> None:
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
