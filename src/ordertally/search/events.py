"""Event schemas the search domain publishes: its own queue of re-index work."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ordertally.events.registry import event_schema


@event_schema("SearchReindexRequested", 1)
class SearchReindexRequested(BaseModel):
    """Re-index the orders with a line of one of these SKUs, above order id `after_order_id`
    (a chunk at a time: each chunk publishes the next)."""

    skus: list[str] = Field(min_length=1, max_length=500)
    after_order_id: int = 0
    reason: str = Field(max_length=32)
