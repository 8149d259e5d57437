"""Provider callbacks: verify, store raw in the inbox (one short transaction), answer.

Nothing is applied here: the inbox write publishes an event and a worker applies it, so the
platform gets its answer in milliseconds and a resend finds its duplicate absorbed. The answer
functions know nothing of the framework: the app serves them ahead of FastAPI's stack
(`RAW_ROUTES`) and the documented FastAPI routes call the same functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from starlette.datastructures import Headers, State
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.payments.inbox import InboxWriter, store_notice
from ordertally.payments.metrics import ACK_SECONDS, CALLBACKS
from ordertally.payments.providers import Rejected, alipay, wechatpay

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])

JSON = "application/json"
TEXT = "text/plain"


# (status, body, media type) of a callback's answer, whichever route produced it.
Answer = tuple[int, bytes, str | None]
Answerer = Callable[[State, Headers, bytes, str | None, float], Awaitable[Answer]]


def _writer(state: State) -> InboxWriter:
    """The process's group-commit writer for this app's database."""
    db: Database = state.db
    writer: InboxWriter | None = getattr(state, "payments_inbox", None)
    if writer is None or writer.db is not db:
        writer = state.payments_inbox = InboxWriter(db)
    return writer


def _wechat_fail(status: int, message: str) -> Answer:
    body = b'{"code":"FAIL","message":"%s"}' % message.replace('"', "'").encode()
    return status, body, JSON


def _alipay(status: int, body: bytes) -> Answer:
    return status, body, TEXT


def _done(provider: str, outcome: str, started: float) -> None:
    CALLBACKS.labels(provider, outcome).inc()
    ACK_SECONDS.labels(provider).observe(time.perf_counter() - started)


async def answer_wechatpay(
    state: State, headers: Headers, body: bytes, ip: str | None, started: float
) -> Answer:
    """Verify signature, window, nonce and merchant; store; answer 204 (or FAIL)."""
    settings = get_settings()
    config = wechatpay.configured(settings)
    if config is None:
        _done("wechatpay", "not_configured", started)
        return _wechat_fail(404, "wechatpay is not configured")
    if len(body) > settings.payment_max_notification_bytes:
        _done("wechatpay", "too_large", started)
        return _wechat_fail(413, "notification too large")
    signed = {k: v for k, v in headers.items() if k.startswith("wechatpay-")}
    now = clock.now()
    db: Database = state.db
    try:
        notice = wechatpay.verify_notification(config, signed, body, now)
    except Rejected as rejected:
        if rejected.notice is not None:
            await _store_rejected(db, rejected, ip)
        _done("wechatpay", rejected.reason, started)
        log.debug("wechatpay callback from %s refused: %s", ip, rejected.detail)
        return _wechat_fail(rejected.status, rejected.detail)
    try:
        stored = await _writer(state).store(notice, received_at=now, source_ip=ip)
    except Exception:
        log.exception("wechatpay callback could not be stored")
        _done("wechatpay", "error", started)
        return _wechat_fail(500, "temporarily unavailable")
    if stored == "replay":
        _done("wechatpay", "replay", started)
        return _wechat_fail(401, "nonce already used")
    _done("wechatpay", stored, started)
    return 204, b"", None


async def answer_alipay(
    state: State, headers: Headers, body: bytes, ip: str | None, started: float
) -> Answer:
    """Verify the RSA2 signature, app and seller; store; answer exactly `success`."""
    settings = get_settings()
    config = alipay.configured(settings)
    if config is None:
        _done("alipay", "not_configured", started)
        return _alipay(404, b"fail")
    if len(body) > settings.payment_max_notification_bytes:
        _done("alipay", "too_large", started)
        return _alipay(413, b"fail")
    now = clock.now()
    db: Database = state.db
    try:
        text = body.decode("ascii")
        form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
        charset = form.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            form = dict(parse_qsl(text, keep_blank_values=True, encoding=charset))
        notice = alipay.verify_notification(config, form, now)
    except (UnicodeDecodeError, ValueError, LookupError):
        _done("alipay", "malformed", started)
        return _alipay(400, b"fail")
    except Rejected as rejected:
        if rejected.notice is not None:
            rejected.notice.body = body.decode("ascii", "replace")
            await _store_rejected(db, rejected, ip)
        _done("alipay", rejected.reason, started)
        log.debug("alipay callback from %s refused: %s", ip, rejected.detail)
        return _alipay(rejected.status, b"fail")
    notice.body = text
    notice.headers = {"content-type": headers.get("content-type", "")}
    try:
        stored = await _writer(state).store(notice, received_at=now, source_ip=ip)
    except Exception:
        log.exception("alipay callback could not be stored")
        _done("alipay", "error", started)
        return _alipay(500, b"fail")
    _done("alipay", stored, started)
    return _alipay(200, b"success")


class RawCallback:
    """ASGI endpoint of one callback route, for serving it ahead of FastAPI's stack (the body
    limit is the caller's: the app's `CallbackRoutes` puts its BodyLimitMiddleware first)."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the platform hung up: nothing stored, nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        client = scope.get("client")
        status, content, media = await self.answer(
            scope["app"].state, Headers(scope=scope), body, client[0] if client else None, started
        )
        await Response(content, status_code=status, media_type=media)(scope, receive, send)


# The same two routes as raw Starlette routes; the documented FastAPI routes below give the
# same answers through the whole stack.
RAW_ROUTES = [
    Route("/callbacks/wechatpay", RawCallback(answer_wechatpay), methods=["POST"]),
    Route("/callbacks/alipay", RawCallback(answer_alipay), methods=["POST"]),
]


async def _answer(request: Request, answer: Answerer) -> Response:
    started = time.perf_counter()
    body = await request.body()
    ip = request.client.host if request.client else None
    status, content, media = await answer(request.app.state, request.headers, body, ip, started)
    return Response(content, status_code=status, media_type=media)


@router.post(
    "/callbacks/wechatpay",
    summary="WeChat Pay v3 notifications (TRANSACTION.*, REFUND.*)",
    status_code=204,
    responses={401: {"description": "Not verified"}, 404: {"description": "Provider off"}},
)
async def wechatpay_callback(request: Request) -> Response:
    """Verify signature, window, nonce and merchant; store; answer 204 (or FAIL)."""
    return await _answer(request, answer_wechatpay)


@router.post(
    "/callbacks/alipay",
    summary="Alipay asynchronous notifications (trade_status_sync)",
    responses={200: {"description": "`success`, or `fail` with a 4xx status"}},
)
async def alipay_callback(request: Request) -> Response:
    """Verify the RSA2 signature, app and seller; store; answer exactly `success`."""
    return await _answer(request, answer_alipay)


async def _store_rejected(db: Database, rejected: Rejected, ip: str | None) -> None:
    """Keep a genuine but refused message (right signature, wrong merchant) for inspection."""
    assert rejected.notice is not None
    try:
        async with db.transaction() as session:
            await store_notice(
                session,
                rejected.notice,
                source="callback",
                received_at=clock.now(),
                source_ip=ip,
                rejected=rejected,
            )
    except Exception:
        log.exception("refused %s callback could not be stored", rejected.notice.provider)
