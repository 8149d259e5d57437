"""A tiny push receiver for carrier tests: a Starlette app under uvicorn on 127.0.0.1 that parses
each push with the Kuaidi100 adapter and answers as the adapter says (or fails on purpose)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ordertally.fulfillment.carriers.base import PushRejected, TrackingUpdate
from ordertally.fulfillment.carriers.kuaidi100 import Kuaidi100Adapter
from ordertally.simkit.server import BackgroundServer


@dataclass
class Receiver:
    adapter: Kuaidi100Adapter
    url: str = ""
    updates: list[TrackingUpdate] = field(default_factory=list)
    raw: list[dict[str, str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    fail_next: int = 0  # answer the next N pushes with HTTP 500 (the carrier must retry)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_receiver(adapter: Kuaidi100Adapter) -> Iterator[Receiver]:
    """Run the receiver; its `url` is the callback URL to subscribe with."""
    receiver = Receiver(adapter)

    async def push(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        with receiver.lock:
            receiver.raw.append(form)
            if receiver.fail_next > 0:
                receiver.fail_next -= 1
                return Response("boom", status_code=500)
            try:
                update = adapter.parse_push(form)
            except PushRejected as exc:
                receiver.rejected.append(exc.code)
                status, media, body = adapter.reject_body(str(exc))
                return Response(body, status_code=status, media_type=media)
            receiver.updates.append(update)
        status, media, body = adapter.accept_body()
        return Response(body, status_code=status, media_type=media)

    app = Starlette(routes=[Route("/callbacks/carriers/kuaidi100", push, methods=["POST"])])
    with BackgroundServer(lambda: app, name="carrier-receiver", lifespan="off") as server:
        receiver.url = f"{server.url}/callbacks/carriers/kuaidi100"
        yield receiver
