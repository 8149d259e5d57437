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
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

# Connections kept per provider: a process talks to a handful of hosts. An idle connection is
# dropped after 4 s, before the other side's own idle timeout (uvicorn 5 s, which our simulators
# run; nginx 75 s): reusing one the server has just closed fails the request with a ReadError
# (issue 21's drill: two payments could not be opened, their orders closed unpaid).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)
DEFAULT_TIMEOUT = 10.0

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
        found = per_loop[key] = httpx.AsyncClient(
            timeout=timeout, limits=LIMITS, trust_env=trust_env
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
