"""Provider callbacks: verify, store raw in the inbox (one short transaction), answer.

Nothing is applied here: the inbox write publishes an event and a worker applies it, so the
platform gets its answer in milliseconds and a resend finds its duplicate absorbed.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.payments import service
from ordertally.payments.inbox import InboxWriter
from ordertally.payments.metrics import ACK_SECONDS, CALLBACKS
from ordertally.payments.providers import Rejected, alipay, wechatpay

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])

JSON = "application/json"


def _writer(request: Request) -> InboxWriter:
    """The process's group-commit writer for this app's database."""
    db: Database = request.app.state.db
    writer: InboxWriter | None = getattr(request.app.state, "payments_inbox", None)
    if writer is None or writer.db is not db:
        writer = request.app.state.payments_inbox = InboxWriter(db)
    return writer


def _wechat_fail(status: int, message: str) -> Response:
    body = b'{"code":"FAIL","message":"%s"}' % message.replace('"', "'").encode()
    return Response(body, status_code=status, media_type=JSON)


def _done(provider: str, outcome: str, started: float) -> None:
    CALLBACKS.labels(provider, outcome).inc()
    ACK_SECONDS.labels(provider).observe(time.perf_counter() - started)


@router.post(
    "/callbacks/wechatpay",
    summary="WeChat Pay v3 notifications (TRANSACTION.*, REFUND.*)",
    status_code=204,
    responses={401: {"description": "Not verified"}, 404: {"description": "Provider off"}},
)
async def wechatpay_callback(request: Request) -> Response:
    """Verify signature, window, nonce and merchant; store; answer 204 (or FAIL)."""
    started = time.perf_counter()
    settings = get_settings()
    config = wechatpay.configured(settings)
    if config is None:
        _done("wechatpay", "not_configured", started)
        return _wechat_fail(404, "wechatpay is not configured")
    body = await request.body()
    if len(body) > settings.payment_max_notification_bytes:
        _done("wechatpay", "too_large", started)
        return _wechat_fail(413, "notification too large")
    headers = {k: v for k, v in request.headers.items() if k.startswith("wechatpay-")}
    now = clock.now()
    ip = request.client.host if request.client else None
    db: Database = request.app.state.db
    try:
        notice = wechatpay.verify_notification(config, headers, body, now)
    except Rejected as rejected:
        if rejected.notice is not None:
            await _store_rejected(db, rejected, ip)
        _done("wechatpay", rejected.reason, started)
        log.debug("wechatpay callback from %s refused: %s", ip, rejected.detail)
        return _wechat_fail(rejected.status, rejected.detail)
    try:
        stored = await _writer(request).store(notice, received_at=now, source_ip=ip)
    except Exception:
        log.exception("wechatpay callback could not be stored")
        _done("wechatpay", "error", started)
        return _wechat_fail(500, "temporarily unavailable")
    if stored == "replay":
        _done("wechatpay", "replay", started)
        return _wechat_fail(401, "nonce already used")
    _done("wechatpay", stored, started)
    return Response(status_code=204)


@router.post(
    "/callbacks/alipay",
    summary="Alipay asynchronous notifications (trade_status_sync)",
    responses={200: {"description": "`success`, or `fail` with a 4xx status"}},
)
async def alipay_callback(request: Request) -> Response:
    """Verify the RSA2 signature, app and seller; store; answer exactly `success`."""
    started = time.perf_counter()
    settings = get_settings()
    config = alipay.configured(settings)
    if config is None:
        _done("alipay", "not_configured", started)
        return Response(b"fail", status_code=404, media_type="text/plain")
    body = await request.body()
    if len(body) > settings.payment_max_notification_bytes:
        _done("alipay", "too_large", started)
        return Response(b"fail", status_code=413, media_type="text/plain")
    now = clock.now()
    ip = request.client.host if request.client else None
    db: Database = request.app.state.db
    try:
        text = body.decode("ascii")
        form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
        charset = form.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            form = dict(parse_qsl(text, keep_blank_values=True, encoding=charset))
        notice = alipay.verify_notification(config, form, now)
    except (UnicodeDecodeError, ValueError, LookupError):
        _done("alipay", "malformed", started)
        return Response(b"fail", status_code=400, media_type="text/plain")
    except Rejected as rejected:
        if rejected.notice is not None:
            rejected.notice.body = body.decode("ascii", "replace")
            await _store_rejected(db, rejected, ip)
        _done("alipay", rejected.reason, started)
        log.debug("alipay callback from %s refused: %s", ip, rejected.detail)
        return Response(b"fail", status_code=rejected.status, media_type="text/plain")
    notice.body = text
    notice.headers = {"content-type": request.headers.get("content-type", "")}
    try:
        stored = await _writer(request).store(notice, received_at=now, source_ip=ip)
    except Exception:
        log.exception("alipay callback could not be stored")
        _done("alipay", "error", started)
        return Response(b"fail", status_code=500, media_type="text/plain")
    _done("alipay", stored, started)
    return Response(b"success", media_type="text/plain")


async def _store_rejected(db: Database, rejected: Rejected, ip: str | None) -> None:
    """Keep a genuine but refused message (right signature, wrong merchant) for inspection."""
    assert rejected.notice is not None
    try:
        async with db.transaction() as session:
            await service.store_notice(
                session,
                rejected.notice,
                source="callback",
                received_at=clock.now(),
                source_ip=ip,
                rejected=rejected,
            )
    except Exception:
        log.exception("refused %s callback could not be stored", rejected.notice.provider)
