"""The consumer that keeps the search index: every event that changes what an order is found
by re-indexes that order from what each domain says now (absolute values, so a replayed or
reordered event writes the same row). Never on the request path."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import events as catalog_events  # noqa: F401  (registers the schema)
from ordertally.channels import events as channel_events  # noqa: F401  (registers the schema)
from ordertally.core import clock
from ordertally.events.registry import Envelope, batch_consumer, consumer
from ordertally.fulfillment import events as fulfillment_events  # noqa: F401  (registers)
from ordertally.orders import events as order_events  # noqa: F401  (registers the schemas)
from ordertally.search import events as search_events  # noqa: F401  (registers the schema)
from ordertally.search import service

INDEXED_EVENTS = service.INDEXED_EVENTS


def _sources(envelopes: list[Envelope]) -> dict[str, datetime]:
    """order_no -> the oldest event time among these envelopes (the lag is counted from it)."""
    found: dict[str, datetime] = {}
    for e in envelopes:
        order_no = str(e.payload.get("order_no") or "")
        if not order_no:
            continue
        at = clock.as_utc(e.occurred_at)
        found[order_no] = min(found.get(order_no, at), at)
    return found


@consumer("search.index_order", *INDEXED_EVENTS)
async def index_order(session: AsyncSession, envelope: Envelope) -> None:
    """Re-index the order an event is about (an order deleted since is simply skipped)."""
    await service.index_order_nos(session, _sources([envelope]))


@batch_consumer("search.index_order")
async def index_orders(session: AsyncSession, envelopes: list[Envelope]) -> None:
    """Re-index each order of a batch once, with a few queries for the whole batch."""
    await service.index_order_nos(session, _sources(envelopes))


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
    """Re-index one chunk of the orders of some SKUs (and queue the next chunk)."""
    p = envelope.payload
    await service.reindex_skus(
        session, list(p["skus"]), int(p.get("after_order_id") or 0), str(p.get("reason") or "")
    )
