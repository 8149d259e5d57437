"""The callback routes as the app serves them, ahead of FastAPI's stack: they never reach the
framework's routing, still refuse an oversized body with the problem document, still answer an
unexpected error with one, and are still timed under their route template; the documented
FastAPI routes give the same answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from ordertally.core.db import Database
from ordertally.payments import callbacks
from ordertally.payments.models import PaymentNotification
from ordertally.payments.providers import wechatpay
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator import messages
from tests.factories import make_order
from tests.payments.helpers import count, make_attempt

pytestmark = pytest.mark.anyio

WECHAT = "/callbacks/wechatpay"
ALIPAY = "/callbacks/alipay"
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def wechat_message(db: Database, sim: sim_keys.SimKeys) -> tuple[dict[str, str], bytes]:
    payment = await make_attempt(db, await make_order(db), "wechatpay")
    txn = messages.wechat_transaction(sim, payment.out_trade_no, payment.amount_minor)
    return messages.wechat_notification(sim, txn)


async def alipay_body(db: Database, sim: sim_keys.SimKeys) -> bytes:
    payment = await make_attempt(db, await make_order(db), "alipay")
    form = messages.alipay_notification(
        sim, payment.out_trade_no, messages.yuan(payment.amount_minor)
    )
    return str(httpx.QueryParams(form)).encode()


def timed(route: str, status: int) -> float:
    """How many requests the HTTP latency histogram holds for a route template and status."""
    labels = {"method": "POST", "route": route, "status": str(status)}
    value = REGISTRY.get_sample_value("ordertally_http_request_duration_seconds_count", labels)
    return value or 0.0


def counted(outcome: str) -> float:
    return callbacks.CALLBACKS.labels("wechatpay", outcome)._value.get()


async def test_callbacks_are_answered_without_the_framework_routes(
    sim: sim_keys.SimKeys,
    client: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given FastAPI's own callback routes out of order
    async def unreachable(*_: Any) -> None:
        raise AssertionError("the FastAPI route was used")

    monkeypatch.setattr(callbacks, "_answer", unreachable)
    headers, body = await wechat_message(db, sim)
    form = await alipay_body(db, sim)
    before = (timed(WECHAT, 204), timed(ALIPAY, 200))

    # When a WeChat and an Alipay notification are posted to the app
    wx = await client.post(WECHAT, content=body, headers=headers)
    ali = await client.post(ALIPAY, content=form, headers=FORM)

    # Then both are acknowledged as their platforms expect, stored, and timed under their route
    assert (wx.status_code, wx.content, "content-type" in wx.headers) == (204, b"", False)
    assert (ali.status_code, ali.content) == (200, b"success")
    assert ali.headers["content-type"] == "text/plain; charset=utf-8"
    assert await count(db, PaymentNotification) == 2
    assert (timed(WECHAT, 204), timed(ALIPAY, 200)) == (before[0] + 1, before[1] + 1)


async def test_an_oversized_callback_gets_the_problem_document(
    sim: sim_keys.SimKeys, client: httpx.AsyncClient, db: Database
) -> None:
    headers, body = await wechat_message(db, sim)
    huge = body + b" " * 1_048_576  # over ORDERTALLY_MAX_BODY_BYTES (1 MiB)
    before = (timed(WECHAT, 413), counted("too_large"))

    # When it announces its length, and when it is streamed without one
    announced = await client.post(WECHAT, content=huge, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        yield huge[:600_000]
        yield huge[600_000:]

    streamed = await client.post(WECHAT, content=chunks(), headers=headers)

    # Then both get the app's 413 problem document, before the handler ever runs
    for response in (announced, streamed):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json() == {
            "type": "urn:ordertally:problem:request.too_large",
            "title": "Request body too large",
            "status": 413,
            "detail": "request body exceeds 1048576 bytes",
            "code": "request.too_large",
            "instance": WECHAT,
        }
    # And a body under that limit but over the notification limit (64 KiB) gets WeChat's own
    # refusal, counted as too_large
    large = await client.post(WECHAT, content=body + b" " * 70_000, headers=headers)
    assert large.status_code == 413
    assert large.json() == {"code": "FAIL", "message": "notification too large"}
    # And nothing was stored; all three were timed under the route
    assert await count(db, PaymentNotification) == 0
    assert (timed(WECHAT, 413), counted("too_large")) == (before[0] + 3, before[1] + 1)


async def test_an_unexpected_error_gets_the_problem_document(
    sim: sim_keys.SimKeys,
    client: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a bug in verification
    def broken(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(wechatpay, "verify_notification", broken)
    headers, body = await wechat_message(db, sim)

    # When a notification arrives
    response = await client.post(WECHAT, content=body, headers=headers)

    # Then it gets the same 500 problem document as any route, and nothing is stored
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal"
    assert response.json()["instance"] == WECHAT
    assert await count(db, PaymentNotification) == 0


async def test_other_methods_still_reach_the_framework(
    sim: sim_keys.SimKeys, client: httpx.AsyncClient
) -> None:
    response = await client.get(WECHAT)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_the_documented_routes_give_the_same_answers(
    sim: sim_keys.SimKeys, db: Database
) -> None:
    # Given only the FastAPI router of the callbacks, in a bare app
    app = FastAPI()
    app.include_router(callbacks.router)
    app.state.db = db
    headers, body = await wechat_message(db, sim)
    form = await alipay_body(db, sim)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
        # When a notification, its replay, a forged one and an Alipay one are posted
        wx = await c.post(WECHAT, content=body, headers=headers)
        replay = await c.post(WECHAT, content=body, headers=headers)
        forged = await c.post(WECHAT, content=body.replace(b"}", b" }", 1), headers=headers)
        ali = await c.post(ALIPAY, content=form, headers=FORM)

    # Then the answers are the platforms' own, and exactly the two genuine ones are stored
    assert (wx.status_code, wx.content) == (204, b"")
    assert (replay.status_code, replay.json()) == (
        401,
        {"code": "FAIL", "message": "nonce already used"},
    )
    assert (forged.status_code, forged.json()["code"]) == (401, "FAIL")
    assert (ali.status_code, ali.content) == (200, b"success")
    assert await count(db, PaymentNotification) == 2
