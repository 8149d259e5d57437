"""What the workbench selects: a case filter (the list, batches over cases) and an order filter
(batches over orders). Plain values; the repository turns them into SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """What a case list (or a batch over cases) selects; None = any."""

    type: str | None = None
    category: str | None = None
    state: str | None = None
    role: str | None = None
    assignee: str | None = None
    breached: bool | None = None
    due_before: datetime | None = None
    now: datetime | None = None
    order_no: str | None = None
    sku: str | None = None
    warehouse: str | None = None
    channel: str | None = None
    tag: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # A channel-scoped caller's accounts: only their orders' cases (None: any).
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """What a batch over orders selects; None = any."""

    status: str | None = None
    sku: str | None = None
    warehouse: str | None = None
    channel: str | None = None
    tag: str | None = None
    case_type: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Orders picked one by one (their numbers), e.g. ticked in the orders screen.
    order_nos: list[str] | None = None
    # A channel-scoped caller's accounts: only their orders (None: any).
    channels: list[str] | None = None
