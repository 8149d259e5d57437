"""Search test helpers: deliver the outbox and run the search lane, as a worker would."""

from __future__ import annotations

import ordertally.search.consumers  # noqa: F401  (registers the hook that queues orders)
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.search import lane


async def index(db: Database) -> int:
    """Deliver every pending event (the re-index requests queue their orders), then run the
    search lane until nothing is queued; returns the orders the lane indexed."""
    await drain(db, get_settings())
    return await lane.drain(db)
