"""After-sales tests: the payment simulator on a real port (refund, refund query, and its
notifications dropped unless a test wants them), ordertally configured with its keys."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from ordertally.core.settings import reset_settings
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator.app import create_sim_app


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def sim_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator's test key set, generated once per session."""
    directory = tmp_path_factory.mktemp("aftersales-paysim-keys")
    sim_keys.generate(directory, "http://127.0.0.1:9")
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def sim_server(sim_key_dir: Path) -> Iterator[tuple[str, sim_keys.SimKeys]]:
    """One payment simulator for the session (reset by each test)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    keys = dataclasses.replace(sim_keys.SimKeys.load(sim_key_dir), api_base=base)
    server = uvicorn.Server(
        uvicorn.Config(
            create_sim_app(keys, time_scale=1000.0),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.02)
    yield base, keys
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture
async def platform(
    sim_server: tuple[str, sim_keys.SimKeys], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's control client, reset; ordertally configured with its keys; refund
    notifications dropped (confirmation by query) unless a test turns them on."""
    base, keys = sim_server
    for name, value in keys.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORDERTALLY_AFTERSALES_REFUND_QUERY_AFTER_SECONDS", "0")
    reset_settings()
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as control:
        assert (await control.post("/sim/reset")).status_code == 200
        assert (await control.post("/sim/behaviour", json={"drop_rate": 1.0})).status_code == 200
        yield control
    reset_settings()
