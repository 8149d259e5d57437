"""How events reach the search index. The events that change what an order is found by queue
the order for the search lane (search/lane.py) in the transaction that publishes them (a
publish hook, not a consumer: the indexer is not in the outbox chain, ADR 0032 addendum,
session 14). The catalogue's changes and the re-index requests are consumers that queue the
orders of the SKUs concerned, a chunk at a time. Never on the request path."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import events as catalog_events  # noqa: F401  (registers the schema)
from ordertally.channels import events as channel_events  # noqa: F401  (registers the schema)
from ordertally.events.registry import Envelope, consumer, on_publish
from ordertally.fulfillment import events as fulfillment_events  # noqa: F401  (registers)
from ordertally.orders import events as order_events  # noqa: F401  (registers the schemas)
from ordertally.search import events as search_events  # noqa: F401  (registers the schema)
from ordertally.search import service

INDEXED_EVENTS = service.INDEXED_EVENTS


@on_publish("search.dirty", *INDEXED_EVENTS)
async def mark_dirty(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Queue the orders these events are about for the search lane (same transaction)."""
    await service.mark_dirty(session, rows)


@consumer("search.catalog_changed", "CatalogChanged")
async def catalog_changed(session: AsyncSession, envelope: Envelope) -> None:
    """A SKU's brand, category or words changed, or a category was renamed or moved: queue the
    re-indexing of the orders that have it."""
    await service.catalog_changed(
        session,
        list(envelope.payload.get("skus") or []),
        list(envelope.payload.get("categories") or []),
    )


@consumer("search.reindex", "SearchReindexRequested")
async def reindex(session: AsyncSession, envelope: Envelope) -> None:
    """Queue one chunk of the orders of some SKUs for the lane (and request the next chunk)."""
    p = envelope.payload
    await service.reindex_skus(
        session, list(p["skus"]), int(p.get("after_order_id") or 0), str(p.get("reason") or "")
    )
