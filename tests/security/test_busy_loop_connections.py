"""The x0.5 drill's connection reset (issue 21): the read deadlines of `core/server.py` and
uvicorn's keep-alive must not close a connection whose request arrived in time while the
server's event loop was busy. A real server on a socket, each HTTP parser, the loop held for
longer than every timeout while a client sends (ADR 0051)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import anyio
import pytest

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from tests.conftest import ONLY_SQLITE
from tests.live import serve_live

pytestmark = pytest.mark.anyio
STALL = 2.0  # seconds the loop is held: longer than the header, body and keep-alive timeouts
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(params=["httptools", "h11"])
def busy_server(db: Database, request: pytest.FixtureRequest) -> Iterator[int]:
    """The real app behind a deadline protocol with 1 s header and body timeouts and a 1 s
    keep-alive, plus a route that holds the event loop for `STALL` seconds."""
    from ordertally.app import create_app
    from ordertally.core.server import protocol_for

    settings = get_settings().model_copy(
        update={
            "header_timeout_seconds": 1.0,
            "body_timeout_seconds": 1.0,
            "http_implementation": request.param,
        }
    )
    app = create_app(settings)

    async def stall() -> dict[str, bool]:
        time.sleep(STALL)  # noqa: ASYNC251 - the point: nothing else runs on the loop meanwhile
        return {"stalled": True}

    app.add_api_route("/stall", stall, methods=["GET"])
    with serve_live(lambda: app, http=protocol_for(settings), timeout_keep_alive=1) as server:
        yield server.port


def _answer(s: socket.socket) -> bytes:
    """The status line of the next response, or what the connection did instead."""
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return b"closed"
            data += chunk
    except OSError as exc:
        return type(exc).__name__.encode()
    return data.split(b"\r\n", 1)[0]


def _during_a_stall(port: int) -> dict[str, bytes]:
    """Three clients send while the loop is held: one on a kept-alive connection, one on a
    new connection, one finishing a body whose headers came before the stall."""
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(GET)
    assert _answer(kept) == b"HTTP/1.1 200 OK"
    split = socket.create_connection(("127.0.0.1", port))
    split.sendall(b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
    time.sleep(0.1)
    staller = socket.create_connection(("127.0.0.1", port))
    staller.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # the loop is now held
    kept.sendall(GET)
    fresh = socket.create_connection(("127.0.0.1", port))
    fresh.sendall(GET)
    split.sendall(b"{}")
    answers = {
        "stalled": _answer(staller),
        "kept-alive": _answer(kept),
        "new": _answer(fresh),
        "split body": _answer(split),
    }
    for s in (kept, split, staller, fresh):
        s.close()
    return answers


@ONLY_SQLITE  # the protocol does not depend on the database
async def test_requests_sent_while_the_loop_is_busy_are_answered(busy_server: int) -> None:
    # When clients send complete requests while the server's loop is held past every timeout
    answers = await anyio.to_thread.run_sync(_during_a_stall, busy_server)
    # Then each is answered once the loop is free (no close, no reset): the body's request is
    # refused for its missing key, as any request without one
    assert answers == {
        "stalled": b"HTTP/1.1 200 OK",
        "kept-alive": b"HTTP/1.1 200 OK",
        "new": b"HTTP/1.1 200 OK",
        "split body": b"HTTP/1.1 401 Unauthorized",
    }
