"""After-sales tests: the payment simulator on a real port (refund, refund query, and its
notifications dropped unless a test wants them), ordertally configured with its keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.settings import reset_settings
from ordertally.payments.simulator import keys as sim_keys
from ordertally.simkit.server import serve
from tests.payments.helpers import serve_payment_simulator


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def sim_server(sim_key_dir: Path) -> Iterator[tuple[str, sim_keys.SimKeys]]:
    """One payment simulator for the session (reset by each test)."""
    with serve_payment_simulator(sim_key_dir) as simulator:
        yield simulator


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


# The channel simulators' clock in the after-sales tests that play platforms (01:00 on the 21st
# in Asia/Shanghai).
CHANNEL_NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def channel_sim_server() -> Iterator[tuple[str, ChannelSim]]:
    """One channel simulator (Amazon, Pinduoduo, Taobao, JD, Douyin) per test module."""
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@pytest.fixture
def channel_sim(channel_sim_server: tuple[str, ChannelSim]) -> Iterator[tuple[str, ChannelSim]]:
    """The channel simulator, reset, with both sides' clock frozen at CHANNEL_NOW."""
    url, state = channel_sim_server
    state.reset()
    with clock.frozen(CHANNEL_NOW):
        yield url, state
    state.reset()
