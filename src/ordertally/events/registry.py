"""The event envelope, the schema registry and the consumer table.

Every event type has a versioned Pydantic schema; `publish()` validates the payload against it,
so nothing malformed enters the outbox. Consumers register here by event type and name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession


class Envelope(BaseModel):
    """What every consumer receives."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    version: int
    occurred_at: datetime
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]


Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[Envelope]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    event_types: frozenset[str]
    handler: Handler
    # Optional: the same work for many events at once (fewer round trips). The dispatcher uses
    # it when a batch runs without savepoints and falls back to `handler`, one event at a
    # time, when anything in the batch fails. Both must have the same effects.
    batch_handler: BatchHandler | None = None
    # A consumer that writes a row every worker shares (the daily tally: one row per day and
    # channel) runs after every other consumer of the batch, so the batch holds that row only
    # for the transaction's tail and never waits for an order or stock row while holding it.
    last: bool = False
    # A consumer that locks stock rows (allocation, a channel order's reservation, a payment's
    # re-reservation) runs after the other consumers and before the `last` ones: a batch then
    # holds a hot SKU's stock row only for its tail, not while the search index, the rules and
    # the customers do their work (issue 21's drill: API shipments and order creation queued
    # behind worker batches holding a stock row).
    stock: bool = False


PublishHandler = Callable[[AsyncSession, list[dict[str, Any]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PublishHook:
    """Work that must commit with the events it is about, in the publishing transaction (not
    a consumer: no dedupe row, no retry, no batch of its own). A higher domain registers it to
    keep its own queue (the search lane's dirty orders) without `events` importing it."""

    name: str
    event_types: frozenset[str]
    handler: PublishHandler


SCHEMAS: dict[tuple[str, int], type[BaseModel]] = {}
CONSUMERS: dict[str, Consumer] = {}
PUBLISH_HOOKS: dict[str, PublishHook] = {}

# Subscribe a consumer to every event type (e.g. the broker relay): `consumer(name, ALL_EVENTS)`.
ALL_EVENTS = "*"
# Event types announcing a stored platform callback: the dispatcher limits how fast they are
# applied (`callback_apply_per_second`), never how fast callbacks are accepted.
CALLBACK_EVENTS: set[str] = set()


def callback_event(event_type: str) -> None:
    """Mark an event type as announcing a stored callback (its apply rate may be limited)."""
    CALLBACK_EVENTS.add(event_type)


def event_schema(event_type: str, version: int = 1) -> Callable[[type[BaseModel]], type[BaseModel]]:
    """Register a payload schema for (type, version)."""

    def register(model: type[BaseModel]) -> type[BaseModel]:
        SCHEMAS[(event_type, version)] = model
        return model

    return register


def consumer(
    name: str, *event_types: str, last: bool = False, stock: bool = False
) -> Callable[[Handler], Handler]:
    """Register a consumer of some event types; the name is its dedupe identity. `stock`: it
    locks stock rows and runs after the other consumers of a dispatch batch; `last`: it runs
    after every other consumer (for rows every worker shares)."""

    def register(handler: Handler) -> Handler:
        if name in CONSUMERS and CONSUMERS[name].handler is not handler:
            raise ValueError(f"consumer {name!r} registered twice")
        CONSUMERS[name] = Consumer(
            name, frozenset(event_types), handler, last=last, stock=stock and not last
        )
        return handler

    return register


def on_publish(name: str, *event_types: str) -> Callable[[PublishHandler], PublishHandler]:
    """Register a hook called by `outbox.publish`/`publish_rows` with the outbox rows of these
    types (dicts of `build_row`) each call adds, inside the caller's transaction."""

    def register(handler: PublishHandler) -> PublishHandler:
        if name in PUBLISH_HOOKS and PUBLISH_HOOKS[name].handler is not handler:
            raise ValueError(f"publish hook {name!r} registered twice")
        PUBLISH_HOOKS[name] = PublishHook(name, frozenset(event_types), handler)
        return handler

    return register


def phase(consumer: Consumer) -> int:
    """When a consumer runs in a dispatch batch: 0 with the others, 1 the stock lockers, 2 the
    `last` ones (name order within a phase)."""
    return 2 if consumer.last else 1 if consumer.stock else 0


def batch_consumer(name: str) -> Callable[[BatchHandler], BatchHandler]:
    """Give an already registered consumer a handler for many events at once."""

    def register(handler: BatchHandler) -> BatchHandler:
        CONSUMERS[name] = dataclasses.replace(CONSUMERS[name], batch_handler=handler)
        return handler

    return register


def consumers_for(event_type: str) -> list[Consumer]:
    """Consumers interested in an event type (or in every type), in name order."""
    return sorted(
        (
            c
            for c in CONSUMERS.values()
            if event_type in c.event_types or ALL_EVENTS in c.event_types
        ),
        key=lambda c: c.name,
    )


def json_schemas() -> dict[str, Any]:
    """Every registered schema as JSON Schema, keyed "Type.vN"."""
    return {f"{t}.v{v}": model.model_json_schema() for (t, v), model in sorted(SCHEMAS.items())}
