"""Findings: no 429 anywhere (random-key guessing, floods), slow-header and slow-body clients kept
for 90 s+, and a locked SQLite making requests hang for the lock's whole duration."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.orders.models import SalesOrder
from tests.conftest import ONLY_SQLITE, REQUIRE_SERVICES
from tests.factories import auth, order_body
from tests.live import free_port, serve_live

pytestmark = pytest.mark.anyio
REDIS_URL = "redis://127.0.0.1:6379/0"


def _app(db: Database, **overrides: Any) -> Any:
    from ordertally.app import create_app

    return create_app(get_settings().model_copy(update=overrides), db=db)


def _client(app: Any, ip: str = "198.51.100.20") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://ordertally.test")


async def test_random_key_guessing_is_stopped_long_before_300_tries(
    db: Database, keys: dict[str, str]
) -> None:
    # Given the default limits
    app = _app(db)
    statuses: list[int] = []
    async with _client(app) as guesser, _client(app, ip="198.51.100.99") as other:
        # When one address tries 300 random keys
        for _ in range(300):
            r = await guesser.get(
                "/api/v1/orders", headers=auth(f"ot_{uuid.uuid4().hex}{uuid.uuid4().hex}")
            )
            statuses.append(r.status_code)
        last = r
        honest_there = await guesser.get("/api/v1/orders", headers=auth(keys["ops"]))
        honest_elsewhere = await other.get("/api/v1/orders", headers=auth(keys["ops"]))
    # Then after 10 failures every further try is refused with 429 and Retry-After
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429] * 290
    assert last.headers["content-type"] == "application/problem+json"
    assert last.json()["code"] == "request.rate_limited"
    assert 1 <= int(last.headers["retry-after"]) <= 60
    assert last.json()["retry_after"] == int(last.headers["retry-after"])
    # and the address stays blocked even with a good key, while other addresses are not
    assert (honest_there.status_code, honest_elsewhere.status_code) == (429, 200)


async def test_a_key_over_its_limit_gets_429_and_nothing_is_written(
    db: Database, keys: dict[str, str]
) -> None:
    # Given a per-key limit of 3 a minute
    app = _app(db, rate_limit_per_key="3/minute")
    async with _client(app) as c:
        # When the key creates 5 orders
        statuses = [
            (await c.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"])))
            for _ in range(5)
        ]
        other_key = await c.get("/api/v1/orders", headers=auth(keys["cs"]))
    # Then the last two are refused, only three orders exist, and another key is unaffected
    assert [r.status_code for r in statuses] == [201, 201, 201, 429, 429]
    assert int(statuses[-1].headers["retry-after"]) >= 1
    assert other_key.status_code == 200
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 3


async def test_callbacks_are_never_rate_limited(db: Database) -> None:
    # Given an address limit of 2 a minute
    app = _app(db, rate_limit_per_ip="2/minute")
    async with _client(app) as c:
        # When a platform posts 6 notifications (and the address is over its limit)
        answers = [
            (await c.post("/callbacks/wechatpay", content=b"{}")).status_code for _ in range(6)
        ]
        carrier = [
            (await c.post("/callbacks/carriers/kuaidi100", content=b"param=x")).status_code
            for _ in range(4)
        ]
        api = [(await c.get("/healthz")).status_code for _ in range(3)]
    # Then every notification gets the callback's own answer, never 429
    assert 429 not in answers and len(set(answers)) == 1
    assert 429 not in carrier and len(set(carrier)) == 1
    assert api == [200, 200, 429]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_processes_sharing_redis_share_the_limit(db: Database, keys: dict[str, str]) -> None:
    if not _redis_up():
        if REQUIRE_SERVICES:  # CI starts Redis: its absence fails the run rather than skipping
            pytest.fail("Redis not running on 127.0.0.1:6379 but ORDERTALLY_REQUIRE_SERVICES=1")
        pytest.skip("Redis not running on 127.0.0.1:6379")
    # Given two apps (two processes' worth of state) with the Redis store and 4 requests a minute
    one = _app(db, redis_url=REDIS_URL, rate_limit_per_key="4/minute")
    two = _app(db, redis_url=REDIS_URL, rate_limit_per_key="4/minute")
    # When one key is used twice on each, then once more on the second
    async with _client(one) as a, _client(two) as b:
        first = [
            (await a.get("/api/v1/orders", headers=auth(keys["ops"]))).status_code for _ in range(2)
        ]
        second = [
            (await b.get("/api/v1/orders", headers=auth(keys["ops"]))).status_code for _ in range(3)
        ]
    # Then the fifth request overall is refused, whichever process serves it
    assert first == [200, 200] and second == [200, 200, 429]


@ONLY_SQLITE  # the SQLite write lock
async def test_a_held_sqlite_lock_gives_503_within_the_deadline(
    db: Database, keys: dict[str, str]
) -> None:
    # Given a 1 s request deadline and another connection holding SQLite's write lock
    app = _app(db, request_deadline_seconds=1.0, order_batch_max=0)
    body = order_body()
    holder = sqlite3.connect(make_url(db.url).database or "", isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with _client(app) as c:
            started = time.monotonic()
            # When an order is created
            r = await c.post(
                "/api/v1/orders", json=body, headers=auth(keys["ops"], **{"Idempotency-Key": "k-1"})
            )
            took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await anyio.sleep(0.3)
    async with _client(app) as c:
        retry = await c.post(
            "/api/v1/orders", json=body, headers=auth(keys["ops"], **{"Idempotency-Key": "k-1"})
        )
    # Then a 503 with Retry-After comes within the deadline (not after the 30 s busy timeout)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["code"] == "request.deadline_exceeded"
    assert 1.0 <= took < 2.5
    # and, once the lock is gone, a retry with the same Idempotency-Key yields one order
    assert retry.status_code in (200, 201), retry.text
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 1


@pytest.fixture(params=["httptools", "h11"])
def slow_server(db: Database, request: pytest.FixtureRequest) -> Iterator[int]:
    """The real app behind each HTTP implementation's deadline protocol, 1 s header and body
    timeouts."""
    from ordertally.app import create_app
    from ordertally.core.server import protocol_for

    settings = get_settings().model_copy(
        update={
            "header_timeout_seconds": 1.0,
            "body_timeout_seconds": 1.0,
            "http_implementation": request.param,
        }
    )
    protocol = protocol_for(settings)
    parser = {"httptools": "HttpToolsProtocol", "h11": "H11Protocol"}[request.param]
    assert parser in {c.__name__ for c in protocol.__mro__}
    with serve_live(lambda: create_app(settings), http=protocol, timeout_keep_alive=30) as server:
        yield server.port


def _dribble(port: int, head: bytes, then: bytes) -> float:
    """Send `head`, then `then` one byte every 0.2 s until the server closes; seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for byte in then:
            time.sleep(0.2)
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            s.settimeout(0.01)
            try:
                if s.recv(1024) == b"":
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if time.monotonic() - started > 10:
                raise AssertionError("still connected after 10 s")
    return time.monotonic() - started


@ONLY_SQLITE  # the protocol does not depend on the database
async def test_slow_header_and_slow_body_clients_are_disconnected(slow_server: int) -> None:
    # When one client dribbles its headers and another its body, a byte every 0.2 s
    headers = await anyio.to_thread.run_sync(
        _dribble, slow_server, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 100
    )
    body = await anyio.to_thread.run_sync(
        _dribble,
        slow_server,
        b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        b"{" * 100,
    )
    # Then both are disconnected about when their 1 s timeouts end (not after 20 s of bytes)
    assert 0.9 <= headers < 2.0
    assert 0.9 <= body < 2.0
    # and a normal request on a fresh connection still works
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"http://127.0.0.1:{slow_server}/healthz")).status_code == 200


@ONLY_SQLITE  # the protocol does not depend on the database
async def test_a_kept_alive_connection_gets_a_fresh_header_clock_per_request(
    slow_server: int,
) -> None:
    # When a client sends a prompt request, waits longer than the header timeout, then
    # dribbles the next request's headers on the same kept-alive connection
    kept = await anyio.to_thread.run_sync(_slow_kept_alive, slow_server)
    # Then the first was answered (checked inside) and the second is cut about its timeout
    assert 0.9 <= kept < 2.0


def _slow_kept_alive(port: int) -> float:
    """One prompt request, then the next request's headers a byte every 0.2 s on the same
    connection; seconds from the first byte of the second request until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            assert chunk, "closed before answering"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK")
        # Past the first request's own header timeout: only a fresh clock can cut this one.
        time.sleep(1.2)
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        for byte in b"X-Slow: " + b"a" * 100:
            time.sleep(0.2)
            try:
                s.sendall(bytes([byte]))
                s.settimeout(0.01)
                if s.recv(4096) == b"":
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if time.monotonic() - started > 10:
                raise AssertionError("still connected after 10 s")
        return time.monotonic() - started


def _serve(port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ordertally", "serve", "--host", "127.0.0.1", "--port", str(port),
         *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("mode", [["--no-worker"], ["--workers", "2"]], ids=["one", "workers"])
@ONLY_SQLITE  # the protocol does not depend on the database
async def test_ordertally_serve_on_h11_disconnects_slow_clients(
    db: Database, mode: list[str]
) -> None:
    # Given `ordertally serve` told to use h11, with 1 s read timeouts, in one process and in
    # --workers mode (where each process imports the protocol by name)
    port = free_port()
    process = _serve(
        port,
        *mode,
        ORDERTALLY_HTTP_IMPLEMENTATION="h11",
        ORDERTALLY_HEADER_TIMEOUT_SECONDS="1",
        ORDERTALLY_BODY_TIMEOUT_SECONDS="1",
    )
    try:
        async with httpx.AsyncClient() as c:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "ordertally serve did not start"
                try:
                    if (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await anyio.sleep(0.2)
        # ... and every process of it: with --workers each listens on a socket of its own (ADR
        # 0059), so a new connection may land on one still starting, whose header clock would
        # start only once it accepts. Fresh connections land on each at random: when sixteen
        # in a row are answered, every process is serving (a 1-in-65,536 chance otherwise).
        for _ in range(16):
            async with httpx.AsyncClient() as fresh:
                answer = await fresh.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
                assert answer.status_code == 200
        # When a client dribbles its headers and another its body
        headers = await anyio.to_thread.run_sync(
            _dribble, port, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 100
        )
        body = await anyio.to_thread.run_sync(
            _dribble,
            port,
            b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
            b"{" * 100,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # Then both are disconnected about when their 1 s timeouts end
    assert 0.9 <= headers < 2.0
    assert 0.9 <= body < 2.0
