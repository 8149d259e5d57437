"""One outbound HTTP client per provider and process: calls reuse its pool (one TCP
connection for sequential calls, counted by a real server on 127.0.0.1), `close_all` closes it,
and another event loop gets a client of its own."""

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from ordertally.core import outbound
from ordertally.core.settings import reset_settings
from ordertally.simkit.server import free_port

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Server:
    """A keep-alive HTTP/1.1 responder that counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _calls(count: int) -> tuple[_Server, list[httpx.AsyncClient]]:
    server = _Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"
    used = []
    try:
        for _ in range(count):
            client = outbound.client("test-provider")
            used.append(client)
            assert (await client.get(url)).text == "ok"
        assert outbound.open_count() == 1
        await outbound.close_all()
        assert outbound.open_count() == 0
        assert used[-1].is_closed
    finally:
        await outbound.close_all()
        await asyncio.sleep(0.05)
        listener.close()
        await listener.wait_closed()
    return server, used


def test_sequential_calls_share_one_client_and_connection() -> None:
    # When a provider makes five calls in one process
    server, used = asyncio.run(_calls(5))
    # Then they went through one client over one kept-alive connection
    assert len({id(c) for c in used}) == 1
    assert (server.requests, server.connections) == (5, 1)


def test_each_event_loop_gets_its_own_client() -> None:
    # Given a client made (and closed) under one event loop
    _, first = asyncio.run(_calls(1))
    # When another loop (another test, another asyncio.run) calls the same provider
    _, second = asyncio.run(_calls(1))
    # Then it got a new client, not the closed one bound to the finished loop
    assert first[0] is not second[0]


def test_clients_differ_by_provider_and_options() -> None:
    async def clients() -> list[httpx.AsyncClient]:
        try:
            return [
                outbound.client("wechatpay"),
                outbound.client("wechatpay"),
                outbound.client("alipay"),
                outbound.client("wechatpay", timeout=3.0),
            ]
        finally:
            await outbound.close_all()

    a, b, c, d = asyncio.run(clients())
    assert a is b
    assert len({id(a), id(c), id(d)}) == 3


# --- the aiohttp pool under httpx (issue 21, ADR 0054) -----------------------------------------
# Each check runs the same call through httpx's own pool (httpcore) and through the process's
# client (`outbound.client`, aiohttp's pool): what reaches the server and what the caller gets
# back, answers and errors, must not differ.

GZIPPED = gzip.compress('{"ok":"好"}'.encode())


class _Recorder:
    """Records each request (head lines and body) and answers as scripted: "ok" (a gzipped
    JSON with a repeated header), "hang" (never answers) or "close" (drops the connection)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.heads: list[list[str]] = []
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")[:-2]
                length = next(
                    (
                        int(x.split(":", 1)[1])
                        for x in lines
                        if x.lower().startswith("content-length:")
                    ),
                    0,
                )
                self.heads.append(lines)
                self.bodies.append(await reader.readexactly(length) if length else b"")
                if self.mode == "hang":
                    await asyncio.sleep(5)
                if self.mode == "close":
                    return
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Encoding: gzip\r\nX-Twice: a\r\nX-Twice: b\r\n"
                    + f"Content-Length: {len(GZIPPED)}\r\n\r\n".encode()
                    + GZIPPED
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test ended while this one hung
        finally:
            writer.close()


async def _through(
    engine: str, mode: str, call: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]
) -> tuple[_Recorder, httpx.Response | Exception]:
    recorder = _Recorder(mode)
    listener = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    own = httpx.AsyncClient(timeout=0.3, limits=outbound.LIMITS, trust_env=False)
    client = own if engine == "httpcore" else outbound.client("test-engines", timeout=0.3)
    try:
        try:
            result: httpx.Response | Exception = await call(client, url)
        except httpx.HTTPError as exc:
            result = exc
    finally:
        await own.aclose()
        await outbound.close_all()
        await asyncio.sleep(0.05)  # the server sees its connections closed
        listener.close()
        await listener.wait_closed()
    return recorder, result


async def _post_form(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post(
        url + "/poll?x=1&y=%E5%A5%BD",
        data={"param": '{"com":"shunfeng"}', "sign": "ABC"},
        headers={"X-Ordertally-Notification-Id": "7"},
        auth=("user", "pass"),
    )


def test_a_call_reaches_the_server_and_comes_back_the_same_through_both_pools() -> None:
    seen = {}
    for engine in ("httpcore", "outbound"):
        recorder, answer = asyncio.run(_through(engine, "ok", _post_form))
        assert isinstance(answer, httpx.Response)
        seen[engine] = (
            [[x for x in head if not x.startswith("Host: 127.0.0.1:")] for head in recorder.heads],
            recorder.bodies,
            answer.status_code,
            answer.reason_phrase,
            answer.http_version,
            answer.headers.get_list("x-twice"),
            answer.json(),
        )
    # Then the request line, headers, body and the decoded answer are the same
    assert seen["outbound"] == seen["httpcore"]
    heads, bodies, status, reason, version, twice, doc = seen["outbound"]
    assert heads[0][0] == "POST /poll?x=1&y=%E5%A5%BD HTTP/1.1"
    assert "X-Ordertally-Notification-Id: 7" in heads[0]
    assert bodies == [b"param=%7B%22com%22%3A%22shunfeng%22%7D&sign=ABC"]
    assert (status, reason, version, twice, doc) == (
        201,
        "Created",
        "HTTP/1.1",
        ["a", "b"],
        {"ok": "好"},
    )


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(url + "/t")


@pytest.mark.parametrize(
    ("mode", "error"),
    [("hang", httpx.ReadTimeout), ("close", httpx.RemoteProtocolError)],
)
def test_a_server_that_hangs_or_hangs_up_is_the_same_httpx_error_through_both_pools(
    mode: str, error: type[Exception]
) -> None:
    for engine in ("httpcore", "outbound"):
        _, answer = asyncio.run(_through(engine, mode, _get))
        assert isinstance(answer, error), (engine, answer)


def test_a_refused_connection_is_a_connect_error_through_both_pools() -> None:
    async def refused(client: httpx.AsyncClient, _: str) -> httpx.Response:
        return await client.get(f"http://127.0.0.1:{free_port()}/")

    for engine in ("httpcore", "outbound"):
        _, answer = asyncio.run(_through(engine, "ok", refused))
        assert isinstance(answer, httpx.ConnectError), (engine, answer)


def test_the_process_client_sends_through_aiohttps_pool() -> None:
    async def transport() -> httpx.AsyncBaseTransport:
        try:
            return outbound.client("test-engines")._transport
        finally:
            await outbound.close_all()

    assert isinstance(asyncio.run(transport()), outbound.AiohttpTransport)


def test_the_httpcore_pool_is_there_when_the_settings_ask_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the setting that turns aiohttp's pool off
    monkeypatch.setenv("ORDERTALLY_OUTBOUND_HTTP_POOL", "httpcore")
    reset_settings()

    async def call() -> tuple[httpx.AsyncBaseTransport, httpx.Response | Exception]:
        client = outbound.client("test-engines")
        transport = client._transport
        await outbound.close_all()
        _, answer = await _through("outbound", "ok", _get)  # outbound.client again: httpcore
        return transport, answer

    try:
        transport, answer = asyncio.run(call())
    finally:
        monkeypatch.delenv("ORDERTALLY_OUTBOUND_HTTP_POOL")
        reset_settings()
    # Then the client sends through httpx's own pool, and the call works the same
    assert not isinstance(transport, outbound.AiohttpTransport)
    assert isinstance(answer, httpx.Response) and answer.json() == {"ok": "好"}
