"""Carrier callbacks: the tracking pushes a carrier sends to `/callbacks/carriers/{carrier}` (the
URL the carrier loop subscribes with). No API key: the adapter verifies the carrier's signature."""

from __future__ import annotations

import logging
import weakref
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram

from ordertally.core.batching import GroupCommit
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.carriers.base import PushRejected, TrackingUpdate
from ordertally.fulfillment.metrics import TRACKING_PUSHES
from ordertally.fulfillment.tracking_updates import (
    TrackingOutcome,
    apply_tracking,
    apply_tracking_many,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["callbacks"])

MAX_PUSH_BYTES = 1_000_000

PUSH_BATCH_SIZE = Histogram(
    "ordertally_tracking_push_batch_size",
    "Carrier pushes per tracking batch (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
PUSH_BATCH_ALONE = Counter(
    "ordertally_tracking_push_batch_alone_total",
    "Carrier pushes of a batch that ran alone after the batch failed, by why",
    ["reason"],
)
_BATCHERS: weakref.WeakKeyDictionary[Database, GroupCommit[TrackingUpdate, TrackingOutcome]] = (
    weakref.WeakKeyDictionary()
)


def _batcher(db: Database) -> GroupCommit[TrackingUpdate, TrackingOutcome] | None:
    """Group commit for pushes (ADR 0049): a carrier that pushes many parcels at once has them
    stored in a few transactions of set-based statements; a lone push waits for nothing."""
    size = get_settings().tracking_push_batch_max
    if size <= 0:
        return None
    batcher = _BATCHERS.get(db)
    if batcher is None:

        async def run(updates: list[TrackingUpdate]) -> list[TrackingOutcome | None]:
            async with db.transaction() as session:
                return list(await apply_tracking_many(session, updates, source="push"))

        batcher = _BATCHERS[db] = GroupCommit(
            run,
            size,
            on_batch=PUSH_BATCH_SIZE.observe,
            on_alone=lambda reason, count: PUSH_BATCH_ALONE.labels(reason).inc(count),
        )
    return batcher


@router.post("/callbacks/carriers/{carrier}", include_in_schema=False)
async def carrier_push(request: Request, carrier: str) -> Response:
    """A carrier's tracking push: verified, stored once per event, answered in the carrier's
    own words. Nothing is acknowledged before it is committed."""
    adapter = registry.current()
    if adapter is None or adapter.code != carrier:
        return Response(status_code=404)
    body = await request.body()
    if len(body) > MAX_PUSH_BYTES:
        status, media, text = adapter.reject_body("body too large")
        TRACKING_PUSHES.labels(carrier, "rejected").inc()
        return Response(text, status_code=status, media_type=media)
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        update = adapter.parse_push(form)
    except (PushRejected, UnicodeDecodeError, ValueError) as exc:
        log.warning("carrier push refused: %s", exc)
        TRACKING_PUSHES.labels(carrier, "rejected").inc()
        status, media, text = adapter.reject_body(str(exc))
        return Response(text, status_code=status, media_type=media)
    db: Database = request.app.state.db
    batcher = _batcher(db)
    outcome = await batcher.submit(update) if batcher is not None else None
    if outcome is None:
        async with db.transaction() as session:
            outcome = await apply_tracking(session, update, source="push")
    if not outcome.known:
        # Acknowledged so the carrier stops: a waybill we never issued (or a test push).
        log.warning("push for unknown waybill %s %s", update.company, update.waybill_no)
        TRACKING_PUSHES.labels(carrier, "unknown_waybill").inc()
    else:
        TRACKING_PUSHES.labels(carrier, "stored" if outcome.stored else "duplicate").inc()
    status, media, text = adapter.accept_body()
    return Response(text, status_code=status, media_type=media)
