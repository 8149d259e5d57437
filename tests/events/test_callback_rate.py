"""Issue 14: callbacks are stored and acknowledged at once and their apply rate is limited
instead (`callback_apply_per_second`, per worker process): the dispatcher applies at most the
budget of stored-callback events per second and leaves the rest pending, while other events
flow as usual."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from ordertally.channels import consumers  # noqa: F401  (registers the webhook consumer)
from ordertally.channels.events import ChannelWebhookReceived
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import outbox
from ordertally.events.dispatcher import dispatch_batch, drain, reset_callback_budget
from ordertally.events.models import OutboxEvent
from tests.factories import make_order

pytestmark = pytest.mark.anyio


async def _pending(db: Database, event_type: str) -> int:
    async with db.transaction(write=False) as session:
        return int(
            await session.scalar(
                select(func.count()).where(
                    OutboxEvent.status == "pending", OutboxEvent.event_type == event_type
                )
            )
            or 0
        )


async def test_stored_callbacks_are_applied_at_the_configured_rate(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a limit of one callback applied every 2 seconds, and 10 stored webhooks announced
    # (receipts the consumer no longer finds: applying one is a no-op) behind an order's events
    await make_order(db, status="paid")
    await drain(db, get_settings())
    monkeypatch.setenv("ORDERTALLY_CALLBACK_APPLY_PER_SECOND", "0.5")
    reset_settings()
    reset_callback_budget()
    async with db.transaction() as session:
        for n in range(10):
            await outbox.publish(
                session,
                "ChannelWebhookReceived",
                ChannelWebhookReceived(receipt_id=10_000 + n, account="shop_a", topic="t"),
                aggregate_type="channel_webhook",
                aggregate_id=f"shop_a:{n}",
            )
    await make_order(db)  # an OrderCreated after them: not a callback, never held back
    settings = get_settings()
    # When a worker runs a batch
    first = await dispatch_batch(db, settings)
    # Then one callback was applied (the bucket starts full: one token), 9 wait, and the
    # order's event went through
    assert (first.deferred, await _pending(db, "ChannelWebhookReceived")) == (9, 9)
    assert await _pending(db, "OrderCreated") == 0
    # And at once again: no budget left, nothing of them is claimed
    again = await dispatch_batch(db, settings)
    assert await _pending(db, "ChannelWebhookReceived") == 9, again
    # When two seconds have passed, one more goes
    await asyncio.sleep(2.05)
    await dispatch_batch(db, settings)
    assert await _pending(db, "ChannelWebhookReceived") == 8
    reset_callback_budget()
