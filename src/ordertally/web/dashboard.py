"""The operations dashboard's figures, read through the domains' public services: throughput,
paid rate, queue depths, orders stuck per stage against its deadline, open cases by type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.events import service as events_service
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.payments import service as payments_service

# How long an order may sit in a stage before the dashboard counts it as stuck (the payment
# deadline for unpaid orders comes from the settings).
STAGE_DEADLINES: dict[str, timedelta] = {
    "paid": timedelta(minutes=30),
    "allocated": timedelta(hours=4),
    "fulfilling": timedelta(hours=24),
    "shipped": timedelta(days=7),
}
PAID_OR_LATER = frozenset(
    {"paid", "allocated", "fulfilling", "shipped", "delivered", "completed", "refunded"}
)
THROUGHPUT_MINUTES = 60
PAID_RATE_WINDOW = timedelta(hours=24)


@dataclass(slots=True)
class Figures:
    """What the dashboard shows at one moment."""

    now: datetime
    per_minute: list[tuple[datetime, int]]
    last_hour: int
    created_24h: int
    paid_24h: int
    outbox_backlog: int
    outbox_oldest: datetime | None
    inbox_backlog: int
    inbox_oldest: datetime | None
    stuck: dict[str, int]
    cutoffs: dict[str, datetime]
    open_cases: dict[str, int] = field(default_factory=dict)

    @property
    def orders_per_minute(self) -> float:
        """Average orders per minute over the last hour."""
        return self.last_hour / THROUGHPUT_MINUTES

    @property
    def paid_rate(self) -> float | None:
        """Share of the last 24 hours' orders that were paid (None without orders)."""
        return self.paid_24h / self.created_24h if self.created_24h else None

    def chart(self, labels: dict[str, str]) -> dict[str, Any]:
        """The ECharts data: orders per minute, and stuck orders per stage."""
        zone = ZoneInfo(get_settings().timezone)
        return {
            "minutes": [
                clock.as_utc(m).astimezone(zone).strftime("%H:%M") for m, _ in self.per_minute
            ],
            "counts": [n for _, n in self.per_minute],
            "stages": [labels[s] for s in self.stuck],
            "stuck": list(self.stuck.values()),
        }


async def figures(session: AsyncSession) -> Figures:
    """Read every figure of the dashboard."""
    now = clock.now()
    start = (now - timedelta(minutes=THROUGHPUT_MINUTES - 1)).replace(second=0, microsecond=0)
    counts = await orders_service.created_per_minute(session, start)
    per_minute = [
        (start + timedelta(minutes=i), counts.get(start + timedelta(minutes=i), 0))
        for i in range(THROUGHPUT_MINUTES)
    ]
    by_status = await orders_service.status_counts_since(session, now - PAID_RATE_WINDOW)
    cutoffs = {
        "pending_payment": now - timedelta(seconds=get_settings().payment_timeout_seconds),
        **{status: now - age for status, age in STAGE_DEADLINES.items()},
    }
    outbox, outbox_oldest = await events_service.outbox_backlog(session)
    inbox, inbox_oldest = await payments_service.inbox_backlog(session)
    return Figures(
        now=now,
        per_minute=per_minute,
        last_hour=sum(n for _, n in per_minute),
        created_24h=sum(by_status.values()),
        paid_24h=sum(n for s, n in by_status.items() if s in PAID_OR_LATER),
        outbox_backlog=outbox,
        outbox_oldest=outbox_oldest,
        inbox_backlog=inbox,
        inbox_oldest=inbox_oldest,
        stuck=await orders_service.stuck_counts(session, cutoffs),
        cutoffs=cutoffs,
        open_cases=await exceptions_service.open_counts_by_type(session),
    )
