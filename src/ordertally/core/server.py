"""The uvicorn protocols ordertally serves with: httptools or h11, each with read deadlines.

uvicorn's `timeout_keep_alive` only covers an idle connection between requests; once a client
has sent one byte of a request, nothing bounds how long it may take to send the rest, so a
client dribbling header or body bytes (slowloris) holds a connection and its task for ever.
These protocols close a connection whose request line and headers are not complete within the
header timeout (counted from the connection, or from the first byte of the next request on a
kept-alive one), or whose body is not complete within the body timeout after its headers.

`ordertally serve` runs httptools where it is installed (uvicorn[standard] brings it) and h11,
uvicorn's pure-Python parser, where it is not, or when `http_implementation` says so; both
paths carry the same deadlines (tests/security/test_floods_and_slow_clients.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from ordertally.core.settings import Settings, get_settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools on this platform: h11 serves
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class _ReadDeadline:
    """One timer per connection, armed and cancelled as the request is read: no cost per
    byte. Mixed into a uvicorn HTTP protocol (which owns `loop` and `transport`)."""

    # Unset: read from the process's settings (`--workers` imports the class by name).
    header_timeout: float | None = None
    body_timeout: float | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _init_deadline(self) -> None:
        self._read_deadline: asyncio.TimerHandle | None = None
        settings = get_settings()
        self._header_seconds = self.header_timeout or settings.header_timeout_seconds
        self._body_seconds = self.body_timeout or settings.body_timeout_seconds

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._read_expired)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_expired(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


if HttpToolsProtocol is not None:

    class DeadlineHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):
        """HttpToolsProtocol that closes connections too slow to send a request."""

        def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self._init_deadline()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(self._header_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_deadline is None:  # the next request on a kept-alive connection
                self._arm(self._header_seconds)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(self._body_seconds)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()


class DeadlineH11Protocol(_ReadDeadline, H11Protocol):
    """H11Protocol that closes connections too slow to send a request.

    h11 has no parser callbacks: the deadline follows the connection's state after each read.
    The client's side is IDLE until the request line and headers are parsed (header timer),
    SEND_BODY while a body is due (body timer), DONE once the request is read (no timer)."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._init_deadline()
        self._reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm(self._header_seconds)  # the first byte of the next request
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        # A pipelined request already buffered starts its header clock now.
        idle = self.conn.their_state is h11.IDLE and self._read_deadline is None
        if idle and self.conn.trailing_data[0]:
            self._arm(self._header_seconds)
        self._follow_state()

    def _follow_state(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if not self._reading_body:
                self._reading_body = True
                self._arm(self._body_seconds)
        elif state is not h11.IDLE:  # read (DONE), closing, or an error answered with 400
            self._reading_body = False
            self._disarm()


def http_class(settings: Settings) -> type[Any]:
    """The protocol base `http_implementation` names ("auto": httptools when installed)."""
    choice = settings.http_implementation
    if choice == "h11" or (choice == "auto" and HttpToolsProtocol is None):
        return DeadlineH11Protocol
    if HttpToolsProtocol is None:
        raise RuntimeError("http_implementation is httptools, but httptools is not installed")
    return DeadlineHttpToolsProtocol


def protocol_for(settings: Settings) -> type[Any]:
    """The protocol class with this configuration's read timeouts."""
    base = http_class(settings)
    return type(
        f"Configured{base.__name__}",
        (base,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


def protocol_path(settings: Settings) -> str:
    """The protocol by import path, for `--workers` (each process reads its own settings)."""
    return f"ordertally.core.server:{http_class(settings).__name__}"
