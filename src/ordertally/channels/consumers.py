"""What the worker loads for this domain: its event schemas, consumers and periodic jobs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

import ordertally.channels.events  # noqa: F401
from ordertally.channels import callbacks, jobs
from ordertally.events.registry import Envelope, consumer

__all__ = ["jobs"]


@consumer("channels.apply_webhook", "ChannelWebhookReceived", stock=True)
async def apply_webhook(session: AsyncSession, envelope: Envelope) -> None:
    """Map and ingest the webhook the inbox write announced (a no-op once applied)."""
    await callbacks.apply_receipt(session, int(envelope.payload["receipt_id"]))
