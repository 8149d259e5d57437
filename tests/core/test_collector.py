"""The API process's garbage collector after the warm-up (ADR 0058)."""

import gc
from collections.abc import Iterator

import pytest

from ordertally.app import GC_THRESHOLDS, warm_up
from ordertally.core.db import Database
from ordertally.core.settings import get_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def _thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


@pytest.mark.usefixtures("_thresholds")
async def test_the_warm_up_leaves_the_young_generation_collected_every_20000(db: Database) -> None:
    # Given a process with CPython's default thresholds
    gc.set_threshold(700, 10, 10)
    # When the lifespan warms it up
    await warm_up(db, get_settings())
    # Then the youngest generation waits for 20,000 new objects, the others as before
    assert gc.get_threshold() == GC_THRESHOLDS == (20_000, 10, 10)
    # and what the warm-up loaded sits in the permanent generation, out of every pass
    assert gc.get_freeze_count() > 0
