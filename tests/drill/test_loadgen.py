"""The load generator's keep-alive connection against a real server socket that closes idle
connections, as uvicorn does after `timeout_keep_alive`: a connection idle longer than its
expiry is opened anew instead of being written on while the server closes it (the drill's
"connection reset" on a request after a quiet spell)."""

from __future__ import annotations

import asyncio

import pytest
from bench.loadgen import Connection, HttpError

pytestmark = pytest.mark.anyio

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _closing_server(idle: float) -> tuple[asyncio.Server, int, list[int]]:
    """Answers each request; closes a connection idle for `idle` seconds. Returns the server,
    its port and a list counting the connections it accepted."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=idle)
                writer.write(ANSWER)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


async def test_an_idle_connection_is_opened_anew_before_the_server_closes_it() -> None:
    # Given a server that closes a connection idle for 0.3 s
    server, port, accepted = await _closing_server(0.3)
    async with server:
        # When a connection with a 0.2 s expiry sends, waits past the server's idle close, sends
        conn = Connection("127.0.0.1", port, idle_expiry=0.2)
        assert await conn.send(REQUEST) == (200, b"ok")
        await asyncio.sleep(0.5)
        # Then the second request goes on a new connection and is answered
        assert await conn.send(REQUEST) == (200, b"ok")
        assert len(accepted) == 2
        # And requests close together share one connection
        assert await conn.send(REQUEST) == (200, b"ok")
        assert len(accepted) == 2
        conn.close()


async def test_without_the_expiry_the_stale_connection_fails() -> None:
    # The case the expiry exists for: the same wait with an expiry longer than the server's
    server, port, _ = await _closing_server(0.3)
    async with server:
        conn = Connection("127.0.0.1", port, idle_expiry=60)
        assert await conn.send(REQUEST) == (200, b"ok")
        await asyncio.sleep(0.5)
        with pytest.raises((HttpError, ConnectionError)):
            await conn.send(REQUEST)
        conn.close()


def test_a_window_that_continues_a_run_sends_new_buyers() -> None:
    """The soak's minutes are separate load-generator windows: each must continue the request
    numbering (its buyers' phones), or every minute would send the same buyers again and the
    rules would open a `same_sku_burst` case for each order from the fourth minute on."""
    from bench.loadgen import Requests

    def phones(first: int) -> set[bytes]:
        requests = Requests("127.0.0.1", 1, "key", "run", first=first)
        return {requests.next().split(b'"phone":"')[1][:11] for _ in range(100)}

    assert len(phones(0)) == 100
    assert phones(0).isdisjoint(phones(1_000_000))
