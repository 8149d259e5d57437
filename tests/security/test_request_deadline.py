"""The request deadline in the request's own task (PostgreSQL): a late request gets its 503 on
time and the retry its one result; a started answer is not replaced; a cancellation that is not
the deadline's still cancels (ADR 0051)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select, text
from starlette.types import Message, Receive, Scope, Send

from ordertally.core.db import Database
from ordertally.core.edge import RequestDeadlineMiddleware
from ordertally.core.settings import get_settings
from ordertally.orders.models import SalesOrder
from tests.conftest import ONLY_PG
from tests.factories import auth, order_body
from tests.live import ordertally_app, serve_live

pytestmark = pytest.mark.anyio


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://ordertally.test")


@ONLY_PG  # SQLite runs the request in a task of its own (the held-lock test)
async def test_a_request_stuck_on_a_postgresql_lock_gets_503_within_the_deadline(
    db: Database, keys: dict[str, str]
) -> None:
    from ordertally.app import create_app

    # Given a 1 s deadline and another connection holding the stock table locked
    settings = get_settings().model_copy(update={"request_deadline_seconds": 1.0})
    app = create_app(settings, db=db)
    body = order_body()
    headers = auth(keys["ops"], **{"Idempotency-Key": "k-pg-1"})
    async with db.write_engine.connect() as holder:
        await holder.execute(text("LOCK TABLE stock IN ACCESS EXCLUSIVE MODE"))
        async with _client(app) as c:
            started = time.monotonic()
            # When an order is created
            late = await c.post("/api/v1/orders", json=body, headers=headers)
            took = time.monotonic() - started
        await holder.rollback()
    async with _client(app) as c:
        retry = await c.post("/api/v1/orders", json=body, headers=headers)
    # Then a 503 problem with Retry-After comes about when the deadline ends
    assert late.status_code == 503, late.text
    assert late.headers["retry-after"] == "5"
    assert late.headers["content-type"] == "application/problem+json"
    assert late.json()["code"] == "request.deadline_exceeded"
    assert 1.0 <= took < 2.5
    # and the retry with the same Idempotency-Key makes the one order
    assert retry.status_code == 201, retry.text
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 1


def _post_then_get(port: int, key: str, body: bytes) -> tuple[bytes, float, bytes]:
    """On one kept-alive connection: the order (its status line and seconds), then /healthz."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nIdempotency-Key: k-pg-2\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        first = _read_response(s)
        took = time.monotonic() - started
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(s)
    return first.split(b"\r\n", 1)[0], took, second.split(b"\r\n", 1)[0]


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += s.recv(65536)
    return head


@ONLY_PG  # the deadline in the request's own task (PostgreSQL)
async def test_the_503_leaves_the_connection_usable_on_a_real_server(
    db: Database, keys: dict[str, str]
) -> None:
    # Given a real server with a 1 s deadline, the stock table locked by another connection
    with serve_live(ordertally_app(request_deadline_seconds=1.0)) as server:
        async with db.write_engine.connect() as holder:
            await holder.execute(text("LOCK TABLE stock IN ACCESS EXCLUSIVE MODE"))
            # When an order is posted, then /healthz asked on the same connection
            body = json.dumps(order_body()).encode()
            late, took, then = await anyio.to_thread.run_sync(
                _post_then_get, server.port, keys["ops"], body
            )
            await holder.rollback()
    # Then the order got its 503 at the deadline, and the connection served the next request
    assert late == b"HTTP/1.1 503 Service Unavailable"
    assert 1.0 <= took < 2.5
    assert then == b"HTTP/1.1 200 OK"


async def _wait_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """A toy app: its answer comes after `?wait` seconds, a streamed one in two parts."""
    wait = float(scope["query_string"].decode().partition("=")[2] or 0)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await anyio.sleep(wait)
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await send({"type": "http.response.body", "body": b"second"})
        return
    await anyio.sleep(wait)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"on time"})


def _guarded() -> RequestDeadlineMiddleware:
    return RequestDeadlineMiddleware(_wait_then_answer, seconds=0.3, retry_after=7)


async def test_the_deadline_answers_503_and_drops_the_late_answer() -> None:
    # Given a 0.3 s deadline in the request's own task
    async with _client(_guarded()) as c:
        # When one request answers in time and one would answer after 1 s
        prompt = await c.get("/x?wait=0")
        started = time.monotonic()
        late = await c.get("/x?wait=1")
        took = time.monotonic() - started
    # Then the first is answered and the second gets the 503 problem at the deadline, alone
    assert (prompt.status_code, prompt.text) == (200, "on time")
    assert late.status_code == 503
    assert late.headers["retry-after"] == "7"
    assert late.json()["code"] == "request.deadline_exceeded"
    assert late.json()["retry_after"] == 7
    assert 0.3 <= took < 0.9


async def test_an_answer_already_started_is_not_replaced() -> None:
    # Given a 0.3 s deadline
    async with _client(_guarded()) as c:
        # When an answer starts at once and finishes its body after 0.6 s
        streamed = await c.get("/stream?wait=0.6")
    # Then it is left to finish: no 503 in its place, the whole body
    assert (streamed.status_code, streamed.text) == (200, "first,second")


async def test_a_cancellation_that_is_not_the_deadline_still_cancels() -> None:
    # Given a request under a 10 s deadline whose answer takes 5 s
    guarded = RequestDeadlineMiddleware(_wait_then_answer, seconds=10, retry_after=7)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/x", "query_string": b"wait=5", "headers": []}
    request = asyncio.ensure_future(guarded(scope, receive, send))
    await asyncio.sleep(0.1)
    # When the server cancels it (shutting down)
    request.cancel()
    # Then the cancellation goes through, and nothing was answered
    with pytest.raises(asyncio.CancelledError):
        await request
    assert sent == []


async def test_the_deadline_cancels_and_answers_even_when_the_app_swallows_it() -> None:
    # Given an app that ignores cancellation for 0.5 s (cleanup), under a 0.2 s deadline
    cleaned = []

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await anyio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(0.3))
            cleaned.append(True)
            return  # swallows it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    guarded = RequestDeadlineMiddleware(stubborn, seconds=0.2, retry_after=3)
    async with _client(guarded) as c:
        # When a request runs into the deadline
        answer = await c.get("/x")
    # Then it got the 503, and the app's cleanup ran to its end
    assert answer.status_code == 503
    assert answer.json()["code"] == "request.deadline_exceeded"
    assert cleaned == [True]
