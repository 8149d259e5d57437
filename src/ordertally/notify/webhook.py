"""Apprise JSON webhooks (`json://`, `jsons://`) sent on the process's pooled async HTTP client.

Apprise sends through `requests` in a worker thread with a new connection per message: a few
milliseconds of CPU and a TCP handshake each, and no more sends at once than the thread pool
has threads. The URL is still Apprise's: it is parsed once per target by Apprise's own JSON
plugin (host, port, path, user and password, `method=`, `+Header=`, `:payload` extras, `-param`
GET parameters, `cto`/`rto` timeouts, `verify`, `redirect`), and the request sent is the one the
plugin would send: the same method, URL, parameters, headers and JSON document (checked against
Apprise itself by tests/notify/test_webhook.py). A `jsons://` URL with `verify=no` keeps going
through Apprise (the shared client always verifies certificates).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import apprise
import httpx
import orjson
from apprise.plugins.custom_json import NotifyJSON

from ordertally.core import outbound

CLIENT = "notify-webhook"
# Apprise's notification type for every message we send (its payload's "type").
MESSAGE_TYPE = "info"


@dataclass(frozen=True, slots=True)
class JsonHook:
    """What Apprise's JSON plugin made of one URL: everything a send needs."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    payload_extras: dict[str, str]
    follow_redirects: bool
    connect_timeout: float
    read_timeout: float

    def document(self, title: str, body: str) -> dict[str, Any]:
        """The JSON document Apprise's plugin posts, its `:key=value` extras applied."""
        payload: dict[str, Any] = {
            "version": NotifyJSON.json_version,
            "title": title,
            "message": body,
            "attachments": [],
            "type": MESSAGE_TYPE,
        }
        for key, value in self.payload_extras.items():
            if key in payload:
                moved = payload.pop(key)
                if value:
                    payload[value] = moved
            else:
                payload[key] = value
        return payload


@functools.lru_cache(maxsize=256)
def parse(url: str) -> JsonHook | None:
    """The hook of a `json://`/`jsons://` Apprise URL, or None when Apprise itself must send it
    (another scheme, a URL Apprise refuses, certificate checks turned off)."""
    if url.partition("://")[0].lower() not in ("json", "jsons"):
        return None
    plugin = apprise.Apprise.instantiate(url)
    if not isinstance(plugin, NotifyJSON) or not plugin.verify_certificate:
        return None
    base = f"{'https' if plugin.secure else 'http'}://{plugin.host}"
    if isinstance(plugin.port, int):
        base += f":{plugin.port}"
    return JsonHook(
        method=str(plugin.method),
        url=base + plugin.fullpath,
        params={str(k): str(v) for k, v in plugin.params.items()},
        headers={
            "User-Agent": plugin.app_id,
            "Content-Type": "application/json",
            **{str(k): str(v) for k, v in plugin.headers.items()},
        },
        auth=(str(plugin.user), str(plugin.password or "")) if plugin.user else None,
        payload_extras={str(k): str(v) for k, v in plugin.payload_extras.items()},
        follow_redirects=bool(plugin.redirects),
        connect_timeout=float(plugin.socket_connect_timeout),
        read_timeout=float(plugin.socket_read_timeout),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one request: taken (2xx), refused (an HTTP status) or not reached. Every
    failure is worth a retry, as through Apprise."""

    ok: bool
    error: str | None = None
    # The receiver was not reached in time (connect or read timeout, refused connection).
    unreachable: bool = False


async def send(
    hook: JsonHook, title: str, body: str, extra_headers: dict[str, str], limit_seconds: float
) -> Answer:
    """Send one message; the plugin's connect/read timeouts apply, never above the limit."""
    timeout = httpx.Timeout(
        limit_seconds,
        connect=min(limit_seconds, hook.connect_timeout),
        read=min(limit_seconds, hook.read_timeout),
    )
    try:
        response = await outbound.client(CLIENT).request(
            hook.method,
            hook.url,
            params=hook.params or None,
            content=orjson.dumps(hook.document(title, body)),
            headers=hook.headers | extra_headers,
            auth=hook.auth,
            follow_redirects=hook.follow_redirects,
            timeout=timeout,
        )
    except (httpx.TimeoutException, httpx.ConnectError) as exc:
        return Answer(False, error=f"json: {type(exc).__name__}", unreachable=True)
    except httpx.HTTPError as exc:
        return Answer(False, error=f"json: {type(exc).__name__}")
    if 200 <= response.status_code < 300:
        return Answer(True)
    return Answer(False, error=f"json: HTTP {response.status_code}")
