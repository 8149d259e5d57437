"""Pydantic input of the analytics API."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class BusinessEventIn(BaseModel):
    """One business event fulfilment may wait for."""

    model_config = ConfigDict(extra="forbid")

    order_no: str = Field(min_length=1, max_length=32)
    type: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")
    occurred_at: AwareDatetime


class BusinessEventsIn(BaseModel):
    """A batch of business events."""

    model_config = ConfigDict(extra="forbid")

    events: list[BusinessEventIn] = Field(min_length=1, max_length=1000)


class RequirementIn(BaseModel):
    """What an order's fulfilment waits for: an industry template and/or listed event types,
    and the platform's ship-by deadline."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(default="standard", max_length=40)
    extra_events: list[str] = Field(default_factory=list, max_length=10)
    ship_by_at: AwareDatetime | None = None


def as_datetime(value: datetime) -> datetime:
    """Identity; keeps AwareDatetime values typed as datetime for callers."""
    return value
