"""Order use cases: reads, the timeout, idempotency keys. Creation lives in
`orders.creation`, status changes in `orders.transitions`, personal data in `orders.contact`.

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.purge import in_chunks
from ordertally.core.settings import Settings
from ordertally.orders import repository
from ordertally.orders.errors import OrderNotFound, OrderOutOfScope
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder

# isort: split
# moved; re-exported for callers outside orders until the lead's sweep
from ordertally.orders.contact import PII_ADDRESS as PII_ADDRESS
from ordertally.orders.contact import PII_NAME as PII_NAME
from ordertally.orders.contact import PII_PHONE as PII_PHONE
from ordertally.orders.contact import mask_name as mask_name
from ordertally.orders.contact import reveal_contact as reveal_contact
from ordertally.orders.creation import ORDERS_CREATED as ORDERS_CREATED
from ordertally.orders.creation import create_order as create_order
from ordertally.orders.snapshot import OrderSnapshot as OrderSnapshot
from ordertally.orders.snapshot import load_snapshot as load_snapshot
from ordertally.orders.snapshot import register_snapshot_part as register_snapshot_part
from ordertally.orders.state_machine import Actor as Actor
from ordertally.orders.transitions import TransitionResult as TransitionResult
from ordertally.orders.transitions import lock_orders_and_stock as lock_orders_and_stock
from ordertally.orders.transitions import transition as transition
from ordertally.orders.transitions import transition_many as transition_many


async def get_order(session: AsyncSession, order_no: str) -> SalesOrder:
    """An order by number, or OrderNotFound."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    return order


def check_scope(order: SalesOrder, channels: tuple[str, ...] | None) -> SalesOrder:
    """Refuse a channel-scoped caller (None: not scoped) an order of another channel account;
    returns the order."""
    if channels is not None and order.channel not in channels:
        raise OrderOutOfScope(f"order {order.order_no} does not come from your channel accounts")
    return order


async def get_order_in_scope(
    session: AsyncSession, order_no: str, channels: tuple[str, ...] | None
) -> SalesOrder:
    """An order by number that a channel-scoped caller may see: OrderNotFound, OrderOutOfScope."""
    return check_scope(await get_order(session, order_no), channels)


async def check_order_id_in_scope(
    session: AsyncSession, order_id: int | None, channels: tuple[str, ...] | None
) -> None:
    """Refuse a channel-scoped caller what belongs to another account's order (or to none)."""
    if channels is None:
        return
    order = await repository.get_by_id(session, order_id) if order_id is not None else None
    if order is None or order.channel not in channels:
        raise OrderOutOfScope("this belongs to an order outside your channel accounts")


async def lines_of(session: AsyncSession, order: SalesOrder) -> list[OrderLine]:
    """An order's lines."""
    return await repository.lines_of(session, order.id)


async def events_of(session: AsyncSession, order_no: str) -> list[OrderEvent]:
    """An order's audit trail, oldest first."""
    order = await get_order(session, order_no)
    return await repository.events_of(session, order.id)


async def by_external_ids(
    session: AsyncSession, channel: str, external_ids: list[str]
) -> dict[str, tuple[int, str]]:
    """external id -> (order id, order number) of a channel's orders with these external ids."""
    rows = await repository.by_external(session, channel, external_ids)
    return {external_id: (order_id, order_no) for external_id, order_id, order_no in rows}


async def list_orders(
    session: AsyncSession,
    *,
    status: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
    order_ids: list[int] | None = None,
    channels: tuple[str, ...] | None = None,
) -> list[SalesOrder]:
    """A page of orders, newest first (optionally only among `order_ids`, and only of the
    channel accounts of a channel-scoped caller)."""
    return await repository.list_page(
        session,
        status=status,
        channel=channel,
        created_from=created_from,
        created_to=created_to,
        after=after,
        limit=limit,
        order_ids=order_ids,
        channels=channels,
    )


async def created_per_minute(session: AsyncSession, since: datetime) -> dict[datetime, int]:
    """Orders created per UTC minute since a moment (minutes without orders are absent)."""
    return await repository.created_per_minute(session, since)


async def status_counts_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    """Orders created since a moment, per status."""
    return await repository.status_counts_since(session, since)


async def stuck_counts(session: AsyncSession, cutoffs: dict[str, datetime]) -> dict[str, int]:
    """Per status, the orders in it created before that status's cutoff (older than its
    deadline): the same orders the list shows for `status` and `created_to=cutoff`."""
    return {
        status: await repository.count_in_status_before(session, status, before)
        for status, before in cutoffs.items()
    }


async def set_sub_status(
    session: AsyncSession,
    order_id: int,
    value: str | None,
    by: str,
    source_ip: str | None = None,
) -> bool:
    """Set (or clear, with None) the sub-status the buyer sees on the tracking page, with an
    audit row (event `set_sub_status`, the status unchanged); a repeat with the same value
    changes and records nothing and returns False."""
    return bool(await set_sub_status_many(session, [order_id], value, by, source_ip))


async def set_sub_status_many(
    session: AsyncSession,
    order_ids: list[int],
    value: str | None,
    by: str,
    source_ip: str | None = None,
) -> set[int]:
    """`set_sub_status` for many orders in two statements; returns the ids it changed."""
    changed = await repository.set_sub_status(session, order_ids, value)
    note = f"sub-status: {value}" if value else "sub-status cleared"
    return await _audit_many(session, changed, "set_sub_status", note, by, source_ip)


async def set_remark_many(
    session: AsyncSession,
    order_ids: list[int],
    value: str | None,
    by: str,
    source_ip: str | None = None,
) -> set[int]:
    """Set many orders' seller remark (None clears it) in two statements, one audit row each;
    returns the ids it changed (an order with that remark already is left as it is)."""
    changed = await repository.set_remark(session, order_ids, value)
    note = f"remark: {value}" if value else "remark cleared"
    return await _audit_many(session, changed, "set_remark", note[:500], by, source_ip)


async def _audit_many(
    session: AsyncSession,
    changed: list[tuple[int, int, str]],
    event: str,
    note: str,
    by: str,
    source_ip: str | None,
) -> set[int]:
    """One audit row per changed order (id, new version, status) for an edit in place."""
    if not changed:
        return set()
    now = clock.now()
    await repository.insert_events(
        session,
        [
            {
                "order_id": order_id,
                "version": version,
                "event": event,
                "from_status": status,
                "to_status": status,
                "actor_kind": "operator",
                "actor_id": by[:100],
                "source_ip": source_ip,
                "evidence_ref": None,
                "note": note,
                "occurred_at": now,
            }
            for order_id, version, status in changed
        ],
    )
    return {order_id for order_id, _, _ in changed}


# The encrypted columns a platform's late answer may fill in (the masked ones never change).
RECIPIENT_COLUMNS = frozenset(
    {
        "customer_name_enc",
        "customer_phone_enc",
        "customer_phone_bidx",
        "customer_phone_last4",
        "shipping_address_enc",
    }
)


async def set_recipient(
    session: AsyncSession, order_id: int, values: dict[str, str], by: str, note: str
) -> bool:
    """Replace an order's encrypted recipient (a platform's decrypted answer arriving after the
    order was created), with an audit row (event `set_recipient`, the status unchanged); the
    masked columns shown and searched stay as they are. False when there is no such order."""
    unknown = set(values) - RECIPIENT_COLUMNS
    if unknown:
        raise ValueError(f"not recipient columns: {sorted(unknown)}")
    changed = await repository.set_personal(session, order_id, values)
    if changed is None:
        return False
    version, status = changed
    await repository.insert_events(
        session,
        [
            {
                "order_id": order_id,
                "version": version,
                "event": "set_recipient",
                "from_status": status,
                "to_status": status,
                "actor_kind": "channel_sync",
                "actor_id": by[:100],
                "source_ip": None,
                "evidence_ref": None,
                "note": note[:500],
                "occurred_at": clock.now(),
            }
        ],
    )
    return True


async def orders_after(session: AsyncSession, after_id: int, limit: int) -> list[SalesOrder]:
    """A chunk of orders by ascending id after `after_id` (re-indexing walks every order)."""
    return await repository.ids_after(session, after_id, limit)


async def order_ids_with_skus(
    session: AsyncSession, codes: list[str], after_id: int, limit: int
) -> list[int]:
    """Ids above `after_id` of the orders with a line of one of these codes, ascending, at
    most `limit` (search re-indexes them when the catalogue changes)."""
    if not codes:
        return []
    return await repository.order_ids_with_skus(session, sorted(set(codes)), after_id, limit)


async def get_orders_by_id(session: AsyncSession, order_ids: list[int]) -> list[SalesOrder]:
    """The orders with these ids that exist, by id."""
    return await repository.get_many_by_id(session, order_ids)


async def get_orders(session: AsyncSession, order_nos: list[str]) -> list[SalesOrder]:
    """The orders with these numbers that exist, in no particular order."""
    return await repository.get_many_by_no(session, order_nos)


async def lock_orders(session: AsyncSession, order_ids: list[int]) -> list[SalesOrder]:
    """Orders by id, read fresh and row-locked on PostgreSQL in id order (a batch that moves
    several of them decides on what it read, and no deadlock between two such batches)."""
    return await repository.lock_many(session, sorted(set(order_ids)))


async def lines_of_orders(
    session: AsyncSession, order_ids: list[int]
) -> dict[int, list[OrderLine]]:
    """The lines of several orders, by order id."""
    found: dict[int, list[OrderLine]] = {order_id: [] for order_id in order_ids}
    for line in await repository.lines_of_many(session, order_ids):
        found.setdefault(line.order_id, []).append(line)
    return found


async def line_words_of_orders(session: AsyncSession, order_ids: list[int]) -> dict[int, list[Any]]:
    """What the lines of several orders are called (rows of order_id, sku, sku_name, sku_spec,
    sku_name_en), by order id: the search index's read, without building line objects."""
    found: dict[int, list[Any]] = {order_id: [] for order_id in order_ids}
    for line in await repository.line_words_of_many(session, order_ids):
        found.setdefault(line.order_id, []).append(line)
    return found


async def count_orders(session: AsyncSession) -> int:
    """How many orders exist."""
    return await repository.count_orders(session)


async def delivered_before(
    session: AsyncSession,
    channel: str | None,
    before: datetime,
    *,
    exclude: list[str] | None = None,
    limit: int = 500,
) -> list[str]:
    """Order numbers delivered before a time, of a channel (None: every channel but those
    excluded), oldest first: the ones whose receipt the scheduler may confirm."""
    return await repository.delivered_before(session, channel, before, exclude or [], limit)


# The fingerprint purge deletes in chunks, one short transaction each, at most
# FINGERPRINT_PURGE_CHUNKS a run (like the idempotency keys' purge): a backlog is worked off
# over several runs.
FINGERPRINT_PURGE_CHUNK = 10_000
FINGERPRINT_PURGE_CHUNKS = 100


def fingerprints_needed_since(now: datetime, settings: Settings) -> datetime:
    """The oldest moment the duplicate check still reads fingerprints from (the window)."""
    return now - timedelta(seconds=settings.duplicate_window_seconds)


async def purge_fingerprints(
    db: Database,
    now: datetime,
    settings: Settings,
    chunk: int = FINGERPRINT_PURGE_CHUNK,
    chunks: int = FINGERPRINT_PURGE_CHUNKS,
) -> int:
    """Forget the fingerprints of orders created before the duplicate window, `chunk` per
    transaction, at most `chunks` transactions; returns how many."""
    before = fingerprints_needed_since(now, settings)
    return await in_chunks(
        db, lambda session, n: repository.purge_fingerprints(session, before, n), chunk, chunks
    )


async def stale_fingerprints(
    session: AsyncSession, now: datetime, settings: Settings, grace_seconds: int, cap: int
) -> int:
    """Fingerprints kept longer than the window plus a grace (the purge is not running), up
    to `cap`."""
    before = fingerprints_needed_since(now, settings) - timedelta(seconds=grace_seconds)
    return await repository.stale_fingerprints(session, before, cap)
