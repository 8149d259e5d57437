"""Event schemas the exceptions domain publishes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ordertally.events.registry import event_schema


@event_schema("ExceptionCaseOpened", 1)
class ExceptionCaseOpened(BaseModel):
    """A case was opened on an order: what the delay causes of the stage table fold in (ADR
    0043). Cases on no order publish nothing."""

    case_id: int
    order_id: int
    category: str
    type: str
    blocking: bool
    occurred_at: datetime


@event_schema("ExceptionCaseClosed", 1)
class ExceptionCaseClosed(BaseModel):
    """A case on an order was resolved or cancelled: the search index's "open exception" flag
    is read again, and a blocking case's hold is lifted, so the order may be ready for the step
    it waited for (allocation takes it at once instead of leaving it to the minutely sweep).
    Cases on no order publish nothing."""

    case_id: int
    order_id: int
    type: str
    blocking: bool
    status: str
    occurred_at: datetime
