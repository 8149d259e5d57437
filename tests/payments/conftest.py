"""Payments tests watch orders reach `paid`: fulfillment's automatic allocation (which would move
them on to `allocated` as soon as the OrderPaid event is dispatched) is off here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ordertally.core.settings import reset_settings
from ordertally.payments.simulator import keys as sim_keys


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def sim(sim_key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[sim_keys.SimKeys]:
    """Both providers configured with the simulator's test keys."""
    loaded = sim_keys.SimKeys.load(sim_key_dir)
    for name, value in loaded.settings_env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield loaded
    reset_settings()
