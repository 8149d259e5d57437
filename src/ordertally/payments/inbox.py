"""Group commit for the callback inbox: callbacks arriving together share one transaction.

Each callback still gets its answer only after its own row is committed ("stored before
acknowledged"). While one batch is being written, newcomers queue; the next batch takes them
all. At low load a batch is one callback (no added delay); under load one commit (and one
fsync) carries dozens, which is what lets one process acknowledge thousands per second.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.events import repository as events_repository
from ordertally.payments import repository
from ordertally.payments.events import PaymentNotificationReceived
from ordertally.payments.providers import Notice

Stored = Literal["accepted", "duplicate", "replay"]
MAX_BATCH = 256
# Batches written at once on PostgreSQL: a newcomer waits for a free writer, not for the batch
# in flight to commit. Rows are written in key order, so concurrent batches never deadlock.
MAX_FLUSHES = 2


@dataclass(slots=True)
class _Item:
    notice: Notice
    received_at: datetime
    source_ip: str | None
    future: asyncio.Future[Stored]


@dataclass(slots=True)
class InboxWriter:
    """One per process and event loop; `store` is safe to call from any request."""

    db: Database
    pending: list[_Item] = field(default_factory=list)
    flushing: set[asyncio.Task[None]] = field(default_factory=set)

    async def store(
        self, notice: Notice, *, received_at: datetime, source_ip: str | None
    ) -> Stored:
        """Claim the nonce and write the notification (and its event); returns once committed."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.pending.append(_Item(notice, received_at, source_ip, future))
        limit = 1 if self.db.is_sqlite else MAX_FLUSHES
        if len(self.flushing) < limit:
            task = asyncio.create_task(self._flush())
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)
        return await future

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            try:
                async with self.db.transaction() as session:
                    results = await write_batch(session, batch)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            else:
                for item, result in zip(batch, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)


async def write_batch(session: AsyncSession, batch: list[_Item]) -> list[Stored]:
    """Nonces first (a replay is refused), then the notifications, then one event per new row."""
    window = timedelta(seconds=get_settings().payment_signature_window_seconds)
    wanted = dict(
        sorted(
            ((i.notice.provider, i.notice.nonce[:64]), i.received_at + window)
            for i in batch
            if i.notice.nonce
        )
    )
    fresh = await repository.claim_nonces(session, wanted) if wanted else set()
    results: list[Stored | None] = [None] * len(batch)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    first_of: dict[tuple[str, str], int] = {}
    for n, item in enumerate(batch):
        notice = item.notice
        if notice.nonce:
            key = (notice.provider, notice.nonce[:64])
            if key not in fresh:
                results[n] = "replay"
                continue
            fresh.discard(key)  # a second copy within the batch is a replay too
        dedupe = (notice.provider, notice.dedupe_key[:160])
        if dedupe in rows:
            results[n] = "duplicate"
            continue
        first_of[dedupe] = n
        rows[dedupe] = _row(item)
    ordered = [rows[key] for key in sorted(rows)]  # key order: see MAX_FLUSHES
    inserted = await repository.insert_notifications(session, ordered) if rows else {}
    events: list[dict[str, Any]] = []
    for dedupe, n in first_of.items():
        notification_id = inserted.get(dedupe)
        if notification_id is None:
            results[n] = "duplicate"
            continue
        results[n] = "accepted"
        row = rows[dedupe]
        events.append(
            outbox.build_row(
                "PaymentNotificationReceived",
                PaymentNotificationReceived(
                    notification_id=notification_id,
                    provider=row["provider"],
                    out_trade_no=row["out_trade_no"],
                    kind=row["facts"]["kind"],
                ),
                aggregate_type="payment",
                aggregate_id=(row["out_trade_no"] or row["dedupe_key"])[:64],
            )
        )
    if events:
        # outbox.publish for a whole batch: the same validated rows, one INSERT.
        await events_repository.add_events(session, events)
    return [r or "duplicate" for r in results]


def _row(item: _Item) -> dict[str, Any]:
    notice = item.notice
    return {
        "provider": notice.provider,
        "source": "callback",
        "dedupe_key": notice.dedupe_key[:160],
        "event_type": notice.event_type[:40],
        "out_trade_no": (notice.out_trade_no or "")[:64] or None,
        "provider_txn_id": (notice.provider_txn_id or "")[:64] or None,
        "trade_state": notice.trade_state,
        "headers": notice.headers,
        "body": notice.body,
        "facts": {**notice.facts, "kind": notice.kind},
        "verification": "verified",
        "rejection_reason": None,
        "source_ip": item.source_ip,
        "received_at": item.received_at,
        "applied_at": None,
        "outcome": "pending",
        "payment_id": None,
    }
