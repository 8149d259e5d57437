"""A carrier adapter outlives event loops (each `asyncio.run`, each test): its connection pool
belongs to the loop that opened it and is never reused under another one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from ordertally.fulfillment.carriers.kuaidi100 import Kuaidi100Adapter


class _KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections stay open in the client's pool

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"result": true, "returnCode": "200", "message": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_one_adapter_posts_from_successive_event_loops(server: str) -> None:
    adapter = Kuaidi100Adapter(api_base=server, customer="c", key="k", salt="s", secret="x")

    async def post() -> tuple[httpx.AsyncClient, int]:
        client = adapter._http()
        response = await client.post(server + "/label/order", data={"a": "1"})
        return client, response.status_code

    # Each run leaves a kept-alive connection behind in the pool of its (then closed) loop
    first, status_1 = asyncio.run(post())
    second, status_2 = asyncio.run(post())
    third, status_3 = asyncio.run(post())
    assert (status_1, status_2, status_3) == (200, 200, 200)
    assert len({id(first), id(second), id(third)}) == 3  # a fresh pool per loop, none reused
