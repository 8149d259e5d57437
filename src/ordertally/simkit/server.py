"""Serving a simulator: on a real port in a background thread for tests and benches
(`BackgroundServer`, `serve`), or in the foreground for the `ordertally ...sim` commands (`run`).
The tests also serve the real app this way (tests/live.py): the loop, the HTTP protocol and the
keep-alive are options, as `ordertally serve` sets them.

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
STOP_TIMEOUT_SECONDS = 15.0


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(app: Any, host: str, port: int) -> None:
    """Serve `app` in the foreground until interrupted (the simulators' commands)."""
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def new_event_loop(kind: Literal["asyncio", "uvloop", "auto"]) -> asyncio.AbstractEventLoop:
    """A new event loop of uvicorn's `--loop` kind ("auto": uvloop where it is installed), as
    uvicorn itself would make it (the app is not loaded here)."""
    factory = uvicorn.Config("unused:app", loop=kind).get_loop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()


class BackgroundServer:
    """An ASGI app served by uvicorn on its own thread and event loop; `start()` / `stop()` or
    `with`. `app` is called for each (re)start; `on_close` runs on the loop before it ends.

    `loop`, `http` and `timeout_keep_alive` are uvicorn's options of those names. Starting waits
    at most `start_timeout_seconds` for the app's startup; stopping lets requests in flight run
    for `graceful_shutdown_seconds` (None: until they end), then cancels what is left on the
    loop, and raises TimeoutError if the server is not stopped after `stop_timeout_seconds`."""

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
        loop: Literal["asyncio", "uvloop", "auto"] = "asyncio",
        http: type[asyncio.Protocol] | Literal["auto", "h11", "httptools"] = "auto",
        timeout_keep_alive: int = 5,
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
        stop_timeout_seconds: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.name = name
        self._app = app
        self._lifespan: Literal["on", "off"] = lifespan
        self._graceful = graceful_shutdown_seconds
        self._on_close = on_close
        self._loop_kind: Literal["asyncio", "uvloop", "auto"] = loop
        self._http = http
        self._keep_alive = timeout_keep_alive
        self._start_timeout = start_timeout_seconds
        self._stop_timeout = stop_timeout_seconds
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
        loop = new_event_loop(self._loop_kind)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True, name=self.name)
        self._thread.start()
        try:
            self.accept_connections()
        except BaseException:
            self.stop()
            raise
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
            http=self._http,
            timeout_keep_alive=self._keep_alive,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._serving = serving = asyncio.run_coroutine_threadsafe(
            server.serve(), self._running_loop()
        )
        deadline = time.monotonic() + self._start_timeout
        while not server.started:
            if serving.done() or time.monotonic() > deadline:
                server.should_exit = True
                self._server = self._serving = None
                raise RuntimeError(f"{self.name} did not start in {self._start_timeout:g} s")
            time.sleep(0.005)

    def refuse_connections(self) -> None:
        """Stop listening: connections are refused until `accept_connections` (state is kept)."""
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        server.should_exit = True
        self._server = self._serving = None
        serving.result(timeout=self._stop_timeout)

    def stop(self) -> None:
        """Stop the server, run `on_close`, then end the loop as `asyncio.run` ends one (what
        is left on it cancelled, its async generators and default executor shut down) and its
        thread. Raises TimeoutError if that takes longer than `stop_timeout_seconds` each."""
        loop = self._loop
        if loop is None:
            return
        on_close = self._on_close
        try:
            self.refuse_connections()
        finally:

            async def close() -> None:
                try:
                    if on_close is not None:
                        await on_close()
                finally:
                    await _cancel_the_rest()
                    await loop.shutdown_asyncgens()
                    await loop.shutdown_default_executor()

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=self._stop_timeout)
            finally:
                self._loop = None
                loop.call_soon_threadsafe(loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=self._stop_timeout)
                    if not self._thread.is_alive():
                        loop.close()

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


async def _cancel_the_rest() -> None:
    """Cancel every other task on the running loop and wait for them to end."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Yield the base URL of `app` served in a background thread until the block ends."""
    with BackgroundServer(lambda: app, port=port or 0, graceful_shutdown_seconds=1) as server:
        yield server.url
