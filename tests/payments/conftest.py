"""Payments tests watch orders reach `paid`: fulfillment's automatic allocation (which would move
them on to `allocated` as soon as the OrderPaid event is dispatched) is off here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ordertally.core.settings import reset_settings


@pytest.fixture(autouse=True)
def _no_auto_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    reset_settings()
    yield
    reset_settings()
