"""Lanes: per-process loops beside the outbox dispatcher, for work with a queue of its own
that must not wait in the consumer chain (the search index: ADR 0032, addendum of session 14).

A domain registers its lane's loop from its wiring (the decorator runs when the module is
imported there). `ordertally worker` runs the dispatcher, the periodic jobs and every lane,
each lane a task of the worker's event loop, stopped with it; `--lane NAME` runs only lanes
(a process of their own), `--no-lanes` none. A lane's loop returns once `stop` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ordertally.core.db import Database
from ordertally.core.settings import Settings

LaneLoop = Callable[[Database, Settings, asyncio.Event], Coroutine[Any, Any, None]]

LANES: dict[str, LaneLoop] = {}


def lane(name: str) -> Callable[[LaneLoop], LaneLoop]:
    """Register a lane's loop under `name` (what `ordertally worker --lane` selects)."""

    def register(loop: LaneLoop) -> LaneLoop:
        if name in LANES and LANES[name] is not loop:
            raise ValueError(f"lane {name!r} registered twice")
        LANES[name] = loop
        return loop

    return register
