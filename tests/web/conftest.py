"""Back-office fixtures: an HTTPS client over ASGI (the session cookie is Secure outside
localhost), a signed-in client per role on demand, and Debian's Chromium for the browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from ordertally.core.db import Database
from tests.web import browser
from tests.web.helpers import make_user, sign_in

SignedInClient = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def web(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (no session yet) on https://ordertally.test."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="https://ordertally.test") as c:
        yield c


@pytest.fixture
async def signed_in(app: Any, db: Database) -> AsyncIterator[SignedInClient]:
    """A factory: a new user of a role, signed in on its own client."""
    clients: list[httpx.AsyncClient] = []

    async def factory(role: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.8", 4000))
        client = httpx.AsyncClient(transport=transport, base_url="https://ordertally.test")
        clients.append(client)
        username = f"{role}-{len(clients)}"
        await make_user(db, username, role)
        response = await sign_in(client, username)
        assert response.status_code == 303
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright (skipped, or failed in CI, where it is missing)."""
    browser.require_browser()
    playwright, chrome = await browser.launch()
    try:
        yield chrome
    finally:
        await chrome.close()
        await playwright.stop()
