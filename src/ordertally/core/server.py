"""The uvicorn protocol ordertally serves with: httptools plus read deadlines.

uvicorn's `timeout_keep_alive` only covers an idle connection between requests; once a client
has sent one byte of a request, nothing bounds how long it may take to send the rest, so a
client dribbling header or body bytes (slowloris) holds a connection and its task for ever.
This protocol closes a connection whose request line and headers are not complete within the
header timeout (counted from the connection, or from the first byte of the next request on a
kept-alive one), or whose body is not complete within the body timeout after its headers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ordertally.core.settings import Settings, get_settings


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections too slow to send a request."""

    # Unset: read from the process's settings (`--workers` imports this class by name).
    header_timeout: float | None = None
    body_timeout: float | None = None

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
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


def protocol_for(settings: Settings) -> type[DeadlineHttpToolsProtocol]:
    """The protocol class with this configuration's read timeouts."""
    return type(
        "ConfiguredDeadlineHttpToolsProtocol",
        (DeadlineHttpToolsProtocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


PROTOCOL = "ordertally.core.server:DeadlineHttpToolsProtocol"
