"""Real receivers on 127.0.0.1 for the notify tests: an HTTP server taking Apprise's JSON
webhook (scriptable to fail), an SMTP server (aiosmtpd) and the Aliyun SMS simulator, plus a
helper that points the settings at them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ordertally.core.settings import reset_settings
from ordertally.notify.sms_simulator import SmsSim, SmsSimServer
from ordertally.simkit.server import BackgroundServer, free_port

SMS_KEY_ID = "LTAI-test-key"
SMS_SECRET = "test-secret-不要泄露"
SMS_CODES = {
    "OrderPaid": "SMS_100001",
    "ShipmentShipped": "SMS_100002",
    "ShipmentDelivered": "SMS_100003",
    "ShipmentTrackingException": "SMS_100004",
    "NotificationTest": "SMS_100009",
}


@dataclass
class Receiver:
    """A JSON webhook receiver: records every POST; answers `fail_status` while `fail_left`."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    # The JSON answered to a taken POST (a robot's refusal: {"errcode": 40058, ...}).
    answer: dict[str, Any] = field(
        default_factory=lambda: {"ok": True, "errcode": 0, "errmsg": "ok"}
    )
    fail_left: int = 0
    fail_status: int = 500
    attempts: int = 0
    methods: list[str] = field(default_factory=list)
    # Seconds each request waits before it is answered (a slow channel), and the most requests
    # seen in flight at once.
    delay: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, times: int, status: int = 500) -> None:
        with self.lock:
            self.fail_left, self.fail_status = times, status

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.headers.clear()
            self.urls.clear()
            self.methods.clear()
            self.attempts = 0

    def apprise_url(self, path: str = "hook") -> str:
        return self.url.replace("http://", "json://", 1) + "/" + path


def _receiver_app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        if receiver.delay:
            with receiver.lock:
                receiver.in_flight += 1
                receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
            try:
                await asyncio.sleep(receiver.delay)
            finally:
                with receiver.lock:
                    receiver.in_flight -= 1
        with receiver.lock:
            receiver.attempts += 1
            receiver.methods.append(request.method)
            if receiver.fail_left > 0:
                receiver.fail_left -= 1
                return JSONResponse({"error": "scripted"}, status_code=receiver.fail_status)
            receiver.received.append(json.loads(body))
            receiver.headers.append({k.lower(): v for k, v in request.headers.items()})
            receiver.urls.append(str(request.url))
        # By default the WeCom and DingTalk robots' success answer; Apprise ignores it.
        return JSONResponse(receiver.answer)

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "PUT"])])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A live JSON webhook receiver on 127.0.0.1."""
    rec = Receiver()
    with BackgroundServer(lambda: _receiver_app(rec), name="receiver", lifespan="off") as server:
        rec.url = server.url
        yield rec


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    """A second live JSON webhook receiver (another channel)."""
    rec = Receiver()
    with BackgroundServer(lambda: _receiver_app(rec), name="receiver-2", lifespan="off") as server:
        rec.url = server.url
        yield rec


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return [str(make_header(decode_header(m["Subject"]))) for m in self.messages]

    def bodies(self) -> list[str]:
        out: list[str] = []
        for m in self.messages:
            part = next(p for p in m.walk() if p.get_content_type() == "text/plain")
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload.decode(part.get_content_charset() or "utf-8"))
        return out


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.box.messages.append(message_from_bytes(content))
        self.box.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A live SMTP server (aiosmtpd) on 127.0.0.1, no TLS, no auth."""
    box = Mailbox(port=free_port())
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def sms_sim() -> Iterator[SmsSimServer]:
    """The Aliyun SMS simulator on a free port."""
    server = SmsSimServer(SmsSim(SMS_KEY_ID, SMS_SECRET)).start()
    yield server
    server.stop()


def configure(
    monkeypatch: pytest.MonkeyPatch,
    *,
    ops: list[dict[str, Any]] | None = None,
    sms_url: str | None = None,
    **extra: str,
) -> None:
    """Point the notify settings at the local receivers."""
    monkeypatch.setenv("ORDERTALLY_NOTIFY_OPS_TARGETS", json.dumps(ops or []))
    if sms_url is not None:
        monkeypatch.setenv("ORDERTALLY_NOTIFY_SMS_PROVIDER", "aliyun")
        monkeypatch.setenv("ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_ID", SMS_KEY_ID)
        monkeypatch.setenv("ORDERTALLY_ALIYUN_SMS_ACCESS_KEY_SECRET", SMS_SECRET)
        monkeypatch.setenv("ORDERTALLY_ALIYUN_SMS_SIGN_NAME", "茶叶小铺")
        monkeypatch.setenv("ORDERTALLY_ALIYUN_SMS_ENDPOINT", sms_url)
        monkeypatch.setenv("ORDERTALLY_ALIYUN_SMS_TEMPLATE_CODES", json.dumps(SMS_CODES))
    for name, value in extra.items():
        monkeypatch.setenv(f"ORDERTALLY_{name.upper()}", value)
    reset_settings()
