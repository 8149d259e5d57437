"""Consumers of the payments domain: apply each stored notification once."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.payments import (
    apply,
    events,  # noqa: F401  (registers the event schema)
)


@consumer("payments.apply_notification", "PaymentNotificationReceived", stock=True)
async def apply_notification(session: AsyncSession, envelope: Envelope) -> None:
    """Apply the notification the inbox write announced (a no-op once applied)."""
    await apply.apply_notification(session, int(envelope.payload["notification_id"]))


@batch_consumer("payments.apply_notification")
async def apply_notifications(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """The same for a whole batch of notifications, in a few statements (see `payments.apply`)."""
    await apply.apply_notifications(
        session, [int(envelope.payload["notification_id"]) for envelope in envelopes]
    )
