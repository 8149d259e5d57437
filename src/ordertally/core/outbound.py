"""One long-lived outbound HTTP client per provider and process, closed at shutdown.

Building an `httpx.AsyncClient` loads the CA bundle into a new SSL context: ~50 ms of CPU on
the development machine, paid on every payment opened and every SMS when each call made its
own client (issue 21's drill). A provider asks `client(name)` instead and gets the process's
client for that name, with its connection pool kept alive between calls; a timeout is given per
request.

A client's connections belong to the event loop that opened them, so clients are kept per
running loop: a process has one, while tests and `asyncio.run` calls of the CLI start loops of
their own and get fresh clients (the old loop's are dropped with it). `close_all()` closes the
running loop's clients: the app's lifespan and the worker call it when they stop.

A client's connection pool is aiohttp's (`AiohttpTransport`) unless
`ORDERTALLY_OUTBOUND_HTTP_POOL=httpcore` asks for httpx's own: callers speak httpx either way
(ADR 0054).
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from typing import Any

import aiohttp
import httpx
import yarl

from ordertally.core.settings import get_settings

# Connections kept per provider: a process talks to a handful of hosts. An idle connection is
# dropped after 4 s, before the other side's own idle timeout (uvicorn 5 s, which our simulators
# run; nginx 75 s): reusing one the server has just closed fails the request with a ReadError
# (issue 21's drill: two payments could not be opened, their orders closed unpaid).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)
DEFAULT_TIMEOUT = 10.0


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's requests sent over an aiohttp connection pool (issue 21, ADR 0054).

    httpx stays the interface every provider speaks (its `Request`, `Response`, timeouts and
    errors, its redirects, auth and environment proxies); only the pooled connections and the
    HTTP/1.1 reading and writing are aiohttp's (its C parser), where httpcore's pool and h11
    spent most of an outbound call's CPU. aiohttp adds nothing of its own: no cookie jar, no
    automatic headers or decompression (httpx decodes the body as before), no redirects, no
    proxies (httpx mounts its own for the environment's). Its errors become httpx's: a refused
    or failed connection `ConnectError`, a connect timeout `ConnectTimeout`, a read timeout
    `ReadTimeout`, a connection closed mid-answer `RemoteProtocolError`, a reset `ReadError`.
    Certificates are checked against the same bundle as httpx's own (`create_ssl_context`).
    """

    def __init__(self, limits: httpx.Limits = LIMITS) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 0,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        connect, pool = timeouts.get("connect"), timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            async with self._open().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                content = await answer.read()
                version = answer.version or aiohttp.HttpVersion11
                return httpx.Response(
                    answer.status,
                    headers=[(k, v) for k, v in answer.raw_headers],
                    stream=httpx.ByteStream(content),
                    extensions={
                        "http_version": f"HTTP/{version.major}.{version.minor}".encode(),
                        "reason_phrase": (answer.reason or "").encode("latin-1", "replace"),
                    },
                    request=request,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
        ) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __del__(self) -> None:
        # A client dropped with its event loop (a finished `asyncio.run`, a test's loop) was
        # never closed: close its pool's sockets now, with no loop left to await on, and quietly
        # (aiohttp would log "Unclosed client session" and "Unclosed connector" for each).
        session, self._session = self._session, None
        if session is not None and not session.closed:
            connector = session.connector
            session.detach()
            if connector is not None:
                connector._close()


_Key = tuple[str, float, bool]
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def client(
    name: str, *, timeout: float = DEFAULT_TIMEOUT, trust_env: bool = False
) -> httpx.AsyncClient:
    """The running loop's client for provider `name` (made on first use, and again if it was
    closed). `timeout` is its default (a request may give its own); `trust_env=True` lets the
    environment's proxy variables apply."""
    loop = asyncio.get_running_loop()
    per_loop = _CLIENTS.setdefault(loop, {})
    key = (name, timeout, trust_env)
    found = per_loop.get(key)
    if found is None or found.is_closed:
        pool = AiohttpTransport() if get_settings().outbound_http_pool == "aiohttp" else None
        found = per_loop[key] = httpx.AsyncClient(
            timeout=timeout, limits=LIMITS, trust_env=trust_env, transport=pool
        )
    return found


async def close_all() -> None:
    """Close every client of the running loop (shutdown); later calls make new ones."""
    clients = _CLIENTS.pop(asyncio.get_running_loop(), {})
    for each in clients.values():
        await each.aclose()


def open_count() -> int:
    """How many clients the running loop holds (for tests)."""
    return len(_CLIENTS.get(asyncio.get_running_loop(), {}))
