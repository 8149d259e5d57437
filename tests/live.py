"""Real servers on real ports for the tests, for the length of a `with` block (a fixture's, or a
test's): an ASGI app under uvicorn on 127.0.0.1, on a thread and event loop of its own
(`ordertally.simkit.server.BackgroundServer`, `serve_live`), or real `ordertally serve` and
`ordertally worker` processes (`ordertally_processes`).

The defaults are those of `ordertally serve`: uvicorn's "auto" loop (uvloop where it is
installed), its "auto" HTTP parser, lifespan on. The block starts once the app's startup has run
(at most START_SECONDS, CI's load included); at its end, requests still in flight get
GRACE_SECONDS, what is left on the server's loop is cancelled, and the block raises if the
server is not down within STOP_SECONDS: no thread goes on serving into the next test.
Processes: the block starts once every API answers /healthz (at most PROCESS_START_SECONDS);
at its end each is terminated, and killed if it has not exited within STOP_SECONDS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, Literal

import httpx

from ordertally.core.settings import get_settings
from ordertally.simkit.server import BackgroundServer, free_port

# A server the tests started; `url` is its base URL, `port` its port.
LiveServer = BackgroundServer

__all__ = ["LiveServer", "free_port", "ordertally_app", "ordertally_processes", "serve_live"]

START_SECONDS = 15.0
GRACE_SECONDS = 5
STOP_SECONDS = 15.0
PROCESS_START_SECONDS = 90.0  # processes importing the app at once on a busy machine
CLI = (sys.executable, "-m", "ordertally")


@contextmanager
def serve_live(
    app: Callable[[], Any],
    *,
    name: str = "live-server",
    loop: Literal["asyncio", "uvloop", "auto"] = "auto",
    http: type[asyncio.Protocol] | Literal["auto", "h11", "httptools"] = "auto",
    timeout_keep_alive: int = 5,
    lifespan: Literal["on", "off"] = "on",
    port: int = 0,
) -> Iterator[LiveServer]:
    """Serve the app `app()` builds until the block ends (see the module), on `port` (0: a
    free one; an app that must know its own URL first takes `free_port()`'s)."""
    with BackgroundServer(
        app,
        port=port,
        name=name,
        loop=loop,
        http=http,
        timeout_keep_alive=timeout_keep_alive,
        lifespan=lifespan,
        graceful_shutdown_seconds=GRACE_SECONDS,
        start_timeout_seconds=START_SECONDS,
        stop_timeout_seconds=STOP_SECONDS,
    ) as server:
        yield server


def ordertally_app(**overrides: Any) -> Callable[[], Any]:
    """A factory of the real app on the settings of the moment, with `overrides` (Settings
    fields) applied; the app opens its own engine (the `db` fixture's database)."""
    from ordertally.app import create_app

    return lambda: create_app(get_settings().model_copy(update=overrides))


@contextmanager
def ordertally_processes(
    env: Mapping[str, str], *, apis: int, worker: bool = False
) -> Iterator[list[str]]:
    """`apis` real `ordertally serve --no-worker` processes (and one `ordertally worker` if
    `worker`) with the environment `env`; yields the APIs' base URLs once each answers /healthz.
    Their output goes to one temporary log, quoted if one does not start."""
    ports = [free_port() for _ in range(apis)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    commands = [[*CLI, "serve", "--no-worker", "--port", str(port)] for port in ports]
    if worker:
        commands.append([*CLI, "worker"])
    with tempfile.TemporaryFile() as log:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for command in commands:
                procs.append(subprocess.Popen(command, env=dict(env), stdout=log, stderr=log))
            _wait_until_up(urls, procs, log)
            yield urls
        finally:
            stop_processes(procs)


def _wait_until_up(urls: list[str], procs: list[subprocess.Popen[bytes]], log: IO[bytes]) -> None:
    deadline = time.monotonic() + PROCESS_START_SECONDS
    for url in urls:
        while True:
            if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"ordertally did not start: {log.read()[-2000:]!r}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop processes with SIGTERM; one not stopped within STOP_SECONDS is killed and fails."""
    for proc in procs:
        proc.terminate()
    stuck = []
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stuck.append(proc.args)
    if stuck:
        raise RuntimeError(f"killed, not stopped within {STOP_SECONDS:g} s: {stuck}")
