"""Serving a simulator: on a real port in a background thread for tests and benches
(`BackgroundServer`, `serve`), or in the foreground for the `ordertally ...sim` commands (`run`).

The server's event loop lives on its own thread for the server's whole life, so a simulator can
stop listening and listen again on the same port (an outage with refused connections) while its
state, and the HTTP clients it sends with, stay on the same loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import uvicorn

T = TypeVar("T")
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(app: Any, host: str, port: int) -> None:
    """Serve `app` in the foreground until interrupted (the simulators' commands)."""
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


class BackgroundServer:
    """An ASGI app served by uvicorn on its own thread and event loop; `start()` / `stop()` or
    `with`. `app` is called for each (re)start; `on_close` runs on the loop before it ends."""

    def __init__(
        self,
        app: Callable[[], Any],
        *,
        host: str = HOST,
        port: int = 0,
        name: str = "simulator",
        lifespan: Literal["on", "off"] = "on",
        graceful_shutdown_seconds: int | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.name = name
        self._app = app
        self._lifespan: Literal["on", "off"] = lifespan
        self._graceful = graceful_shutdown_seconds
        self._on_close = on_close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._serving: Future[None] | None = None

    @property
    def url(self) -> str:
        """The base URL it answers on."""
        return f"http://{self.host}:{self.port}"

    # --- lifecycle (blocking; call from fixtures) ---------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and the HTTP server; returns when it accepts connections."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True, name=self.name)
        self._thread.start()
        self.accept_connections()
        return self

    def accept_connections(self) -> None:
        """(Re)start the HTTP server on the same port (after `refuse_connections`)."""
        if self._server is not None:
            return
        config = uvicorn.Config(
            self._app(),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan=self._lifespan,
            timeout_graceful_shutdown=self._graceful,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._serving = asyncio.run_coroutine_threadsafe(server.serve(), self._running_loop())
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if self._serving.done() or time.monotonic() > deadline:
                self._server = None
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.005)

    def refuse_connections(self) -> None:
        """Stop listening: connections are refused until `accept_connections` (state is kept)."""
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        server.should_exit = True
        serving.result(timeout=15)
        self._server = self._serving = None

    def stop(self) -> None:
        """Stop the server, run `on_close` and end the loop thread."""
        if self._loop is None:
            return
        self.refuse_connections()
        if self._on_close is not None:
            on_close = self._on_close

            async def close() -> None:
                await on_close()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._loop

    # --- running code on the server's loop (await from any loop) -------------------------------

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `fn()` on the server's loop and await its result."""
        future = asyncio.run_coroutine_threadsafe(fn(), self._running_loop())
        return await asyncio.wrap_future(future)

    async def call_sync(self, fn: Callable[[], T]) -> T:
        """Run the plain function `fn` on the server's loop (between its requests)."""

        async def run_it() -> T:
            return fn()

        return await self.call(run_it)


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Yield the base URL of `app` served in a background thread until the block ends."""
    with BackgroundServer(lambda: app, port=port or 0, graceful_shutdown_seconds=1) as server:
        yield server.url
