"""The notification inbox: `store_notice` writes one notification (and the event that gets it
applied) in the caller's transaction; `InboxWriter` group-commits the callbacks.

Group commit: callbacks arriving together share one transaction.

Each callback still gets its answer only after its own row is committed ("stored before
acknowledged"). One flusher per process writes a batch; callbacks arriving meanwhile queue and
the next batch takes them all, as soon as the previous one returns. At low load a batch is one
callback (no added delay, no timer); under load one commit (and one fsync) carries dozens. On
PostgreSQL through asyncpg a batch is one autocommitted statement (`repository.store_callbacks`):
one round trip, nothing between the commit and the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ordertally.core.crypto import body_context, open_body, seal_body
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.payments import repository
from ordertally.payments.events import PaymentNotificationReceived
from ordertally.payments.metrics import INBOX_BATCH_CALLBACKS, INBOX_COMMIT_SECONDS
from ordertally.payments.models import PaymentNotification
from ordertally.payments.providers import Notice, Rejected

Stored = Literal["accepted", "duplicate", "replay"]
MAX_BATCH = 256
EVENT = "PaymentNotificationReceived"
EVENT_VERSION = 1
AGGREGATE = "payment"


async def store_notice(
    session: AsyncSession,
    notice: Notice,
    *,
    source: str,
    received_at: datetime,
    source_ip: str | None = None,
    rejected: Rejected | None = None,
    publish: bool = True,
) -> int | None:
    """Write a notification to the inbox (and the event that gets it applied); None when the
    provider already sent it (a duplicate)."""
    values: dict[str, Any] = {
        "provider": notice.provider,
        "source": source,
        "dedupe_key": notice.dedupe_key[:160],
        "event_type": notice.event_type[:40],
        "out_trade_no": (notice.out_trade_no or "")[:64] or None,
        "provider_txn_id": (notice.provider_txn_id or "")[:64] or None,
        "trade_state": notice.trade_state,
        "headers": notice.headers,
        "body": sealed_body(notice),
        "facts": {**notice.facts, "kind": notice.kind},
        "verification": "rejected" if rejected else "verified",
        "rejection_reason": rejected.detail[:200] if rejected else None,
        "source_ip": source_ip,
        "received_at": received_at,
        "applied_at": received_at if rejected else None,
        "outcome": "rejected" if rejected else "pending",
        "payment_id": None,
    }
    notification_id = await repository.insert_notification(session, values)
    if notification_id is not None and rejected is None and publish:
        await outbox.publish(
            session,
            "PaymentNotificationReceived",
            PaymentNotificationReceived(
                notification_id=notification_id,
                provider=notice.provider,
                out_trade_no=values["out_trade_no"],
                kind=notice.kind,
            ),
            aggregate_type="payment",
            aggregate_id=(values["out_trade_no"] or notice.dedupe_key)[:64],
        )
    return notification_id


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
    flusher: asyncio.Task[None] | None = None

    async def store(
        self, notice: Notice, *, received_at: datetime, source_ip: str | None
    ) -> Stored:
        """Claim the nonce and write the notification (and its event); returns once committed."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.pending.append(_Item(notice, received_at, source_ip, future))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        connection: AsyncConnection | None = None
        driver: Any = None
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                started = time.perf_counter()
                try:
                    if self.db.write_engine.dialect.driver != "asyncpg":  # SQLite, psycopg
                        async with self.db.transaction() as session:
                            results = await write_batch(session, batch)
                    else:
                        # Kept for the whole busy period: one checkout however many batches.
                        if connection is None:
                            connection = await self.db.write_engine.connect()
                            driver = (await connection.get_raw_connection()).driver_connection
                        results = await _write_pg(driver, batch)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        for item in batch:
                            if not item.future.done():
                                item.future.set_exception(exc)
                    else:  # cancelled (shutdown): nobody is answered
                        for item in batch + self.pending:
                            item.future.cancel()
                        self.pending = []
                    if connection is not None:
                        # Whatever state the statement left it in, it never goes back to the
                        # pool; the next batch checks out a fresh one.
                        with contextlib.suppress(Exception):
                            await connection.invalidate()
                        with contextlib.suppress(Exception):
                            await connection.close()
                        connection = None
                    if not isinstance(exc, Exception):
                        raise
                    continue
                INBOX_COMMIT_SECONDS.observe(time.perf_counter() - started)
                INBOX_BATCH_CALLBACKS.observe(len(batch))
                for item, result in zip(batch, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
        finally:
            # No await between finding the queue empty and this: a newcomer either joined a
            # batch or finds no flusher and starts one.
            self.flusher = None
            if connection is not None:
                await connection.close()


async def _write_pg(driver: Any, batch: list[_Item]) -> list[Stored]:
    """One statement on an asyncpg connection (PostgreSQL); in-batch replays never reach it."""
    window = timedelta(seconds=get_settings().payment_signature_window_seconds)
    results: list[Stored | None] = [None] * len(batch)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for n, item in enumerate(batch):
        notice = item.notice
        nonce = notice.nonce[:64] if notice.nonce else None
        if nonce is not None:
            if (notice.provider, nonce) in seen:
                results[n] = "replay"  # a second copy within the batch
                continue
            seen.add((notice.provider, nonce))
        row = _row(item)
        event = outbox.build_row(
            EVENT,
            PaymentNotificationReceived(
                notification_id=0,  # the statement sets the stored row's id
                provider=row["provider"],
                out_trade_no=row["out_trade_no"],
                kind=notice.kind,
            ),
            aggregate_type=AGGREGATE,
            aggregate_id=(row["out_trade_no"] or row["dedupe_key"])[:64],
            version=EVENT_VERSION,
        )
        rows.append(
            {
                **row,
                "ord": n,
                "nonce": nonce,
                "nonce_expires_at": item.received_at + window if nonce is not None else None,
                "headers": orjson.dumps(row["headers"]).decode(),
                "facts": orjson.dumps(row["facts"]).decode(),
                "event_id": event["event_id"],
                "aggregate_id": event["aggregate_id"],
                "payload": orjson.dumps(event["payload"]).decode(),
                "occurred_at": event["occurred_at"],
            }
        )
    if rows:
        found = await repository.store_callbacks(driver, rows, (EVENT, EVENT_VERSION, AGGREGATE))
        for n, (fresh, notification_id) in found.items():
            if not fresh:
                results[n] = "replay"
            else:
                results[n] = "accepted" if notification_id is not None else "duplicate"
    return [r or "duplicate" for r in results]


async def write_batch(session: AsyncSession, batch: list[_Item]) -> list[Stored]:
    """The same in three statements of a session (SQLite): nonces first (a replay is refused),
    then the notifications, then one event per new row."""
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
    ordered = [rows[key] for key in sorted(rows)]  # key order: no deadlock between processes
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
                EVENT,
                PaymentNotificationReceived(
                    notification_id=notification_id,
                    provider=row["provider"],
                    out_trade_no=row["out_trade_no"],
                    kind=row["facts"]["kind"],
                ),
                aggregate_type=AGGREGATE,
                aggregate_id=(row["out_trade_no"] or row["dedupe_key"])[:64],
                version=EVENT_VERSION,
            )
        )
    if events:
        # outbox.publish for a whole batch: the same validated rows, one INSERT.
        await outbox.publish_rows(session, events)
    return [r or "duplicate" for r in results]


def body_key(provider: str, dedupe_key: str) -> str:
    """The associated data of a notification's body: its table.column and dedupe key."""
    return body_context("payment_notification", provider, dedupe_key[:160])


def sealed_body(notice: Notice) -> str:
    """The raw body encrypted for the inbox (in Python, before the one INSERT: no round trip)."""
    return seal_body(notice.body, body_key(notice.provider, notice.dedupe_key))


def read_body(row: PaymentNotification) -> str:
    """A stored notification's raw body in clear (empty once purged)."""
    return open_body(row.body, body_key(row.provider, row.dedupe_key))


async def purge_bodies(session: AsyncSession, now: datetime) -> int:
    """Empty the bodies of notifications finished more than the retention period ago (dedupe
    key, facts and outcome stay); returns how many."""
    cutoff = now - timedelta(days=get_settings().inbox_retention_days)
    return await repository.purge_notification_bodies(session, cutoff)


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
        "body": sealed_body(notice),
        "facts": {**notice.facts, "kind": notice.kind},
        "verification": "verified",
        "rejection_reason": None,
        "source_ip": item.source_ip,
        "received_at": item.received_at,
        "applied_at": None,
        "outcome": "pending",
        "payment_id": None,
    }
