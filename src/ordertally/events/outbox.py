"""Publishing: validate an event against its schema and add it to the caller's transaction."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, ids
from ordertally.core.settings import get_settings
from ordertally.events import repository
from ordertally.events.errors import EventTooLarge, UnknownEventType
from ordertally.events.registry import PUBLISH_HOOKS, SCHEMAS


def build_row(
    event_type: str,
    payload: BaseModel | dict[str, Any],
    *,
    aggregate_type: str,
    aggregate_id: str,
    version: int = 1,
) -> dict[str, Any]:
    """Validate a payload and shape its outbox row; refuse unknown types and oversize events."""
    schema = SCHEMAS.get((event_type, version))
    if schema is None:
        raise UnknownEventType(f"no schema registered for {event_type} v{version}")
    model = payload if isinstance(payload, schema) else schema.model_validate(payload)
    data = model.model_dump(mode="json")
    size = len(orjson.dumps(data))
    limit = get_settings().max_event_bytes
    if size > limit:
        raise EventTooLarge(f"{event_type} is {size} bytes; the limit is {limit}", size=size)
    now = clock.now()
    return {
        "event_id": ids.event_id(),
        "event_type": event_type,
        "event_version": version,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "payload": data,
        "occurred_at": now,
        "status": "pending",
        "attempts": 0,
        "available_at": now,
    }


async def publish(
    session: AsyncSession,
    event_type: str,
    payload: BaseModel | dict[str, Any],
    *,
    aggregate_type: str,
    aggregate_id: str,
    version: int = 1,
) -> str:
    """Add one event to the outbox inside the caller's transaction; returns its id."""
    row = build_row(
        event_type,
        payload,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=version,
    )
    await repository.add_events(session, [row])
    await _hooks(session, [row])
    return str(row["event_id"])


async def publish_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add many events built with `build_row` in one statement, inside the caller's transaction."""
    if rows:
        await repository.add_events(session, rows)
        await _hooks(session, rows)


async def _hooks(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Each publish hook with the rows of its event types (same transaction)."""
    for hook in PUBLISH_HOOKS.values():
        mine = [r for r in rows if r["event_type"] in hook.event_types]
        if mine:
            await hook.handler(session, mine)
