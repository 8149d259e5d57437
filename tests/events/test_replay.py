"""Dead letters can be replayed once the cause is fixed; consumers that had applied the event
do not apply it again."""

import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import dispatcher, outbox, registry
from ordertally.events import service as events_service
from ordertally.events.models import DeadLetter, OutboxEvent
from ordertally.orders.events import OrderCreated

pytestmark = pytest.mark.anyio


async def test_replay_after_fix(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERTALLY_OUTBOX_MAX_ATTEMPTS", "1")
    reset_settings()
    calls: dict[str, int] = {"flaky": 0, "steady": 0}
    broken = True

    async def flaky(session, event) -> None:  # type: ignore[no-untyped-def]
        calls["flaky"] += 1
        if broken:
            raise RuntimeError("downstream is down")

    async def steady(session, event) -> None:  # type: ignore[no-untyped-def]
        calls["steady"] += 1

    registry.consumer("test.flaky", "ReplayProbe")(flaky)
    registry.consumer("test.steady", "ReplayProbe")(steady)
    registry.event_schema("ReplayProbe", 1)(OrderCreated)
    try:
        payload = {
            "order_id": 1,
            "order_no": "OT1",
            "channel": "c",
            "external_id": None,
            "status": "pending_payment",
            "currency": "CNY",
            "total_minor": 1,
            "base_currency": "CNY",
            "fx_rate": "1",
            "line_count": 1,
            "created_at": "2026-11-23T00:00:00Z",
        }
        async with db.transaction() as session:
            event_id = await outbox.publish(
                session, "ReplayProbe", payload, aggregate_type="order", aggregate_id="OT1"
            )
        await dispatcher.drain(db, get_settings())
        async with db.transaction(write=False) as session:
            assert await session.scalar(select(OutboxEvent.status)) == "dead"
            assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 1
        assert calls == {"flaky": 1, "steady": 1}

        broken = False
        async with db.transaction() as session:
            assert await events_service.replay_dead(session) == [event_id]
        await dispatcher.drain(db, get_settings())
        async with db.transaction(write=False) as session:
            assert await session.scalar(select(OutboxEvent.status)) == "done"
            assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 0
        # the steady consumer is not run twice
        assert calls == {"flaky": 2, "steady": 1}
        async with db.transaction() as session:
            assert await events_service.replay_dead(session) == []
    finally:
        registry.CONSUMERS.pop("test.flaky", None)
        registry.CONSUMERS.pop("test.steady", None)
        registry.SCHEMAS.pop(("ReplayProbe", 1), None)
