"""Order use cases: reads, the timeout, idempotency keys. Creation lives in
`orders.creation`, status changes in `orders.transitions`, personal data in `orders.contact`.

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import dialect_of
from ordertally.core.settings import get_settings
from ordertally.orders import repository
from ordertally.orders.errors import IdempotencyInFlight, IdempotencyMismatch, OrderNotFound
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import ActorKind

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
from ordertally.orders.transitions import transition as transition
from ordertally.orders.transitions import transition_many as transition_many

PreCloseCheck = Callable[[AsyncSession, SalesOrder], Awaitable[bool]]
# Other domains (payments) register checks run before an unpaid order is closed for timeout;
# a check returning True means "do not close" (e.g. an active query found it paid).
PRE_CLOSE_CHECKS: list[PreCloseCheck] = []


def register_pre_close_check(check: PreCloseCheck) -> PreCloseCheck:
    """Run `check` before closing an order for payment timeout; True keeps it open."""
    if check not in PRE_CLOSE_CHECKS:
        PRE_CLOSE_CHECKS.append(check)
    return check


async def get_order(session: AsyncSession, order_no: str) -> SalesOrder:
    """An order by number, or OrderNotFound."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    return order


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
) -> list[SalesOrder]:
    """A page of orders, newest first."""
    return await repository.list_page(
        session,
        status=status,
        channel=channel,
        created_from=created_from,
        created_to=created_to,
        after=after,
        limit=limit,
    )


async def close_unpaid(session: AsyncSession, now: datetime, limit: int = 500) -> int:
    """Close pending-payment orders past their deadline (actor: scheduler)."""
    due = await repository.due_for_timeout(
        session, now, limit, skip_locked=dialect_of(session) == "postgresql"
    )
    closed = 0
    for order in due:
        if any([await check(session, order) for check in PRE_CLOSE_CHECKS]):
            continue
        result = await transition(
            session,
            order.order_no,
            "payment_timeout",
            Actor(ActorKind.SCHEDULER, "payment_timeout"),
        )
        closed += int(result.applied)
    return closed


# --- idempotency keys -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: str


def request_hash(method: str, path: str, body: OrderCreate | bytes) -> str:
    """What "the same request" means: method, path and the parsed body."""
    raw = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + raw).hexdigest()


async def check_idempotent(
    session: AsyncSession, scope: str, key: str, req_hash: str
) -> Replay | None:
    """Inside the request's own transaction: None means "go ahead"; a Replay is the stored
    response. A concurrent request holding the same key gets IdempotencyInFlight.

    PostgreSQL: a transaction-scoped advisory lock on the key marks it in flight (released at
    commit or rollback). SQLite: write transactions are serialised, so a second request with
    the key simply runs after the first and replays it.
    """
    if dialect_of(session) == "postgresql" and not await repository.try_key_lock(
        session, scope, key
    ):
        raise IdempotencyInFlight("the first request with this key has not finished")
    row = await repository.get_idempotency_key(session, scope, key)
    if row is None or clock.as_utc(row.expires_at) <= clock.now():
        return None
    if row.request_hash != req_hash:
        raise IdempotencyMismatch("this Idempotency-Key was first used with another request")
    return Replay(row.response_status, row.response_body)


async def claim_keys(session: AsyncSession, keys: list[tuple[str, str] | None]) -> list[bool]:
    """For a batch of requests in one transaction: True where a request may go ahead here.

    An unkeyed request may. A keyed one may when its key has no stored response, is not in
    flight in another transaction (PostgreSQL: the same advisory lock as `check_idempotent`)
    and is the first of its key in the batch. The others are left to `check_idempotent`,
    after this transaction commits, which replays, refuses or runs them as it always does.
    """
    keyed = sorted({k for k in keys if k is not None})
    if not keyed:
        return [True] * len(keys)
    free = set(keyed)
    if dialect_of(session) == "postgresql":
        locks = await repository.try_key_locks(session, keyed)
        free = {k for k, locked in zip(keyed, locks, strict=True) if locked}
    free -= await repository.idempotency_keys_in(session, sorted(free))
    go: list[bool] = []
    for key in keys:
        go.append(key is None or key in free)
        free.discard(key)
    return go


def idempotency_row(scope: str, key: str, req_hash: str, status: int, body: str) -> dict[str, Any]:
    """A stored response's row."""
    now = clock.now()
    return {
        "scope": scope,
        "key": key,
        "request_hash": req_hash,
        "response_status": status,
        "response_body": body,
        "created_at": now,
        "expires_at": now + timedelta(hours=get_settings().idempotency_ttl_hours),
    }


async def store_idempotent_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Store many responses (`idempotency_row`), in the same transaction as their work."""
    if rows:
        await repository.store_idempotency_key(session, rows)  # type: ignore[arg-type]


async def store_idempotent(
    session: AsyncSession, scope: str, key: str, req_hash: str, status: int, body: str
) -> None:
    """Store the response, in the same transaction as the work it describes."""
    await repository.store_idempotency_key(
        session, idempotency_row(scope, key, req_hash, status, body)
    )


async def purge_idempotency_keys(session: AsyncSession, now: datetime) -> int:
    """Delete keys past their 24 h."""
    return await repository.purge_idempotency_keys(session, now)
