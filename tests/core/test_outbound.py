"""One outbound HTTP client per provider and process: calls reuse its pool (one TCP
connection for sequential calls, counted by a real server on 127.0.0.1), `close_all` closes it,
and another event loop gets a client of its own."""

import asyncio

import httpx

from ordertally.core import outbound

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
