"""Serving a simulator from a background thread: real HTTP on a free port, a refused action
answered as {"code", "message"}, and an outage with refused connections on the same port."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from ordertally.simkit.app import simulator_app
from ordertally.simkit.errors import SimError
from ordertally.simkit.server import BackgroundServer, serve

router = APIRouter()


@router.get("/thing/{name}")
async def thing(name: str) -> dict[str, str]:
    if name != "known":
        raise SimError(404, "NOT_FOUND", f"no thing {name}")
    return {"name": name}


def _app() -> object:
    return simulator_app({"state": 1}, [router], title="test simulator")


def test_a_refused_action_is_answered_with_its_status_code_and_message() -> None:
    with serve(_app()) as url:
        ok = httpx.get(f"{url}/thing/known", trust_env=False)
        refused = httpx.get(f"{url}/thing/other", trust_env=False)
    assert (ok.status_code, ok.json()) == (200, {"name": "known"})
    assert (refused.status_code, refused.json()) == (
        404,
        {"code": "NOT_FOUND", "message": "no thing other"},
    )


def test_refusing_connections_then_accepting_again_keeps_the_port() -> None:
    # Given a simulator served in the background
    with BackgroundServer(_app, name="testsim") as server:
        url = server.url
        assert httpx.get(f"{url}/thing/known", trust_env=False).status_code == 200
        # When it refuses connections, Then nobody answers on its port
        server.refuse_connections()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/thing/known", trust_env=False)
        # When it accepts them again, Then it answers on the same URL
        server.accept_connections()
        assert server.url == url
        assert httpx.get(f"{url}/thing/known", trust_env=False).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/thing/known", trust_env=False)
