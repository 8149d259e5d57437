"""Every query of the payments domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import dialect_of, table_of, upsert_insert
from ordertally.payments.models import (
    ManualPayment,
    Payment,
    PaymentNonce,
    PaymentNotification,
    PaymentReconciliation,
    PaymentRefund,
)
from ordertally.payments.state_machine import (
    OPEN_REFUSED,
    OPENED,
    QUERIED_CLOSED,
    RECEIVED,
    ManualState,
    ManualTransition,
    PaymentState,
    PaymentTransition,
)

# UPDATEs here never need the session's objects synchronised: callers read fresh rows
# (populate_existing) when they need them. Without this SQLAlchemy evaluates each UPDATE's
# criteria against every object in the session, which grows with a dispatcher batch.
NO_SYNC = {"synchronize_session": False}
# A moment bound outside its column (inside a CASE) keeps the column's UTC handling.
_NEXT_QUERY_TYPE = table_of(Payment).c.next_query_at.type

# --- payment attempts --------------------------------------------------------------------------


async def insert_payment(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert an attempt; returns its id."""
    result = await session.execute(insert(Payment).values(**values).returning(Payment.id))
    return int(result.scalar_one())


async def get_payment(session: AsyncSession, payment_id: int) -> Payment | None:
    """One attempt by id, read fresh."""
    return await session.scalar(
        select(Payment).where(Payment.id == payment_id).execution_options(populate_existing=True)
    )


async def by_out_trade_no(session: AsyncSession, out_trade_no: str) -> Payment | None:
    """One attempt by its out_trade_no, read fresh."""
    return await session.scalar(
        select(Payment)
        .where(Payment.out_trade_no == out_trade_no)
        .execution_options(populate_existing=True)
    )


async def by_out_trade_nos(session: AsyncSession, out_trade_nos: Sequence[str]) -> list[Payment]:
    """The attempts of some out_trade_nos, read fresh (unknown ones are simply absent)."""
    found: list[Payment] = []
    wanted = list(out_trade_nos)
    for start in range(0, len(wanted), 1000):
        rows = await session.scalars(
            select(Payment)
            .where(Payment.out_trade_no.in_(wanted[start : start + 1000]))
            .order_by(Payment.id)
            .execution_options(populate_existing=True)
        )
        found.extend(rows.all())
    return found


async def payments_of_order(session: AsyncSession, order_id: int) -> list[Payment]:
    """Every attempt of an order, oldest first."""
    rows = await session.scalars(
        select(Payment)
        .where(Payment.order_id == order_id)
        .order_by(Payment.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def payments_of_orders(session: AsyncSession, order_ids: Sequence[int]) -> list[Payment]:
    """Every attempt of some orders, by order then oldest first."""
    found: list[Payment] = []
    for start in range(0, len(order_ids), 1000):
        rows = await session.scalars(
            select(Payment)
            .where(Payment.order_id.in_(list(order_ids[start : start + 1000])))
            .order_by(Payment.order_id, Payment.id)
            .execution_options(populate_existing=True)
        )
        found.extend(rows.all())
    return found


async def set_provider_params(
    session: AsyncSession,
    payment_id: int,
    params: dict[str, Any] | None,
    error: str | None,
    at: datetime,
) -> Payment | None:
    """Keep what the provider answered when the attempt was opened (or why it failed); returns
    the attempt as updated, or None when it is no longer open (nothing written)."""
    values: dict[str, Any] = {"provider_params": params, "last_error": error, "updated_at": at}
    if error is not None:
        values.update(state=OPEN_REFUSED.target.value, next_query_at=None)
    return await session.scalar(
        update(Payment)
        .where(Payment.id == payment_id, Payment.state.in_(OPEN_REFUSED.source_values))
        .values(**values)
        .returning(Payment)
        .execution_options(populate_existing=True, **NO_SYNC)
    )


async def mark_received(
    session: AsyncSession,
    payment_id: int,
    *,
    move: PaymentTransition,
    txn_id: str | None,
    amount_minor: int | None,
    paid_at: datetime | None,
    at: datetime,
) -> bool:
    """Record money received on an attempt (`state_machine.receipt`), once: a compare-and-set."""
    result = await session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.state.in_(move.source_values))
        .values(
            state=move.target.value,
            provider_txn_id=txn_id,
            paid_amount_minor=amount_minor,
            paid_at=paid_at,
            next_query_at=None,
            updated_at=at,
        )
        .execution_options(**NO_SYNC)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def mark_settles(session: AsyncSession, payment_id: int, at: datetime) -> None:
    """This attempt is the one that paid its order."""
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id)
        .values(settles_order=True, updated_at=at)
        .execution_options(**NO_SYNC)
    )


async def mark_closed(
    session: AsyncSession, payment_id: int, trade_state: str, at: datetime
) -> None:
    """The provider says the attempt ended unpaid."""
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.state.in_(QUERIED_CLOSED.source_values))
        .values(
            state=QUERIED_CLOSED.target.value,
            next_query_at=None,
            last_query_state=trade_state,
            updated_at=at,
        )
        .execution_options(**NO_SYNC)
    )


async def record_query(
    session: AsyncSession,
    payment_id: int,
    *,
    at: datetime,
    trade_state: str | None,
    next_query_at: datetime | None,
    error: str | None,
) -> None:
    """Note an active query and when the next one is due (never again once the attempt has a
    result: a notification may have been applied while the provider was being asked)."""
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id)
        .values(
            query_count=Payment.query_count + 1,
            last_query_at=at,
            last_query_state=trade_state,
            next_query_at=case(
                (Payment.state == OPENED, literal(next_query_at, _NEXT_QUERY_TYPE)), else_=None
            ),
            last_error=error[:500] if error else None,
            updated_at=at,
        )
        .execution_options(**NO_SYNC)
    )


async def due_for_query(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> list[Payment]:
    """Pending attempts whose next active query is due, oldest first."""
    stmt = (
        select(Payment)
        .where(Payment.state == OPENED, Payment.next_query_at <= now)
        .order_by(Payment.next_query_at, Payment.id)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def lease_due_for_query(
    session: AsyncSession, now: datetime, limit: int, until: datetime, *, skip_locked: bool
) -> list[Payment]:
    """Claim the attempts whose query is due: their next query is pushed to `until`, so no
    other worker takes them while the providers are asked outside any transaction."""
    due = await due_for_query(session, now, limit, skip_locked=skip_locked)
    if due:
        await session.execute(
            update(Payment)
            .where(Payment.id.in_([p.id for p in due]), Payment.state == OPENED)
            .values(next_query_at=until)
            .execution_options(**NO_SYNC)
        )
    return due


async def add_refunded(session: AsyncSession, payment_id: int, delta: int, at: datetime) -> bool:
    """Add to the refunded total, only while it stays within what was paid."""
    result = await session.execute(
        update(Payment)
        .where(
            Payment.id == payment_id,
            Payment.state == PaymentState.PAID,
            Payment.refunded_minor + delta <= Payment.paid_amount_minor,
        )
        .values(refunded_minor=Payment.refunded_minor + delta, updated_at=at)
        .execution_options(**NO_SYNC)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def count_overdue_queries(session: AsyncSession, before: datetime) -> int:
    """Pending attempts whose query has been due since before a moment (is a worker running?)."""
    return int(
        await session.scalar(
            select(func.count()).where(Payment.state == OPENED, Payment.next_query_at < before)
        )
        or 0
    )


# --- inbox -------------------------------------------------------------------------------------


async def insert_notification(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Store a notification; None when (provider, dedupe_key) is already there."""
    stmt = (
        upsert_insert(session, PaymentNotification)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["provider", "dedupe_key"])
        .returning(PaymentNotification.id)
    )
    found = (await session.execute(stmt)).scalar_one_or_none()
    return int(found) if found is not None else None


async def insert_notifications(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> dict[tuple[str, str], int]:
    """Store several notifications in one statement; (provider, dedupe_key) -> id of the new
    ones (those already there are skipped)."""
    # executemany (not a multi-row VALUES clause): the statement compiles once and is cached,
    # SQLAlchemy still sends the rows as one INSERT ... VALUES (...), (...) RETURNING.
    stmt = (
        upsert_insert(session, table_of(PaymentNotification))
        .on_conflict_do_nothing(index_elements=["provider", "dedupe_key"])
        .returning(
            PaymentNotification.id, PaymentNotification.provider, PaymentNotification.dedupe_key
        )
    )
    return {(p, k): int(i) for i, p, k in (await session.execute(stmt, rows)).all()}


# One statement for a whole group-committed batch of callbacks on PostgreSQL: nonces claimed,
# notifications stored and their events published, committed as the statement ends. `fresh`
# aggregates every claimed nonce before any notification is inserted, so rows are always locked
# nonces first, each kind in key order, and two processes' batches cannot deadlock.
_STORE_CALLBACKS = """
WITH input AS (
    SELECT *
    FROM unnest(
        $1::int[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::timestamptz[], $15::text[], $16::text[], $17::text[], $18::timestamptz[]
    ) AS r(
        ord, provider, nonce, nonce_expires_at, dedupe_key, event_type, out_trade_no,
        provider_txn_id, trade_state, headers, body, facts, source_ip, received_at,
        event_id, aggregate_id, payload, occurred_at
    )
),
claimed AS (
    INSERT INTO payment_nonce (provider, nonce, expires_at)
    SELECT provider, nonce, nonce_expires_at FROM input
    WHERE nonce IS NOT NULL
    ORDER BY provider, nonce
    ON CONFLICT DO NOTHING
    RETURNING provider, nonce
),
fresh AS (
    SELECT coalesce(array_agg(i.ord), '{}') AS ords
    FROM claimed c JOIN input i ON i.provider = c.provider AND i.nonce = c.nonce
),
candidate AS (
    SELECT DISTINCT ON (i.provider, i.dedupe_key) i.*
    FROM input i CROSS JOIN fresh f
    WHERE i.nonce IS NULL OR i.ord = ANY (f.ords)
    ORDER BY i.provider, i.dedupe_key, i.ord
),
stored AS (
    INSERT INTO payment_notification (
        provider, source, dedupe_key, event_type, out_trade_no, provider_txn_id, trade_state,
        headers, body, facts, verification, source_ip, received_at, outcome
    )
    SELECT
        provider, 'callback', dedupe_key, event_type, out_trade_no, provider_txn_id,
        trade_state, headers::jsonb, body, facts::jsonb, 'verified', source_ip, received_at,
        'pending'
    FROM candidate
    ORDER BY provider, dedupe_key
    ON CONFLICT (provider, dedupe_key) DO NOTHING
    RETURNING id, provider, dedupe_key
),
published AS (
    INSERT INTO outbox (
        event_id, event_type, event_version, aggregate_type, aggregate_id, payload,
        occurred_at, status, attempts, available_at
    )
    SELECT
        k.event_id, $19, $20, $21, k.aggregate_id,
        k.payload::jsonb || jsonb_build_object('notification_id', s.id),
        k.occurred_at, 'pending', 0, k.occurred_at
    FROM stored s
    JOIN candidate k ON k.provider = s.provider AND k.dedupe_key = s.dedupe_key
    ORDER BY s.id
)
SELECT i.ord, i.nonce IS NULL OR i.ord = ANY (f.ords) AS fresh, s.id
FROM input i
CROSS JOIN fresh f
LEFT JOIN candidate k ON k.ord = i.ord
LEFT JOIN stored s ON s.provider = k.provider AND s.dedupe_key = k.dedupe_key
"""
_STORE_COLUMNS = (
    "ord",
    "provider",
    "nonce",
    "nonce_expires_at",
    "dedupe_key",
    "event_type",
    "out_trade_no",
    "provider_txn_id",
    "trade_state",
    "headers",
    "body",
    "facts",
    "source_ip",
    "received_at",
    "event_id",
    "aggregate_id",
    "payload",
    "occurred_at",
)


async def store_callbacks(
    connection: Any, rows: list[dict[str, Any]], event: tuple[str, int, str]
) -> dict[int, tuple[bool, int | None]]:
    """Claim the nonces, store the notifications and publish one event per new one, in one
    autocommitted statement on an asyncpg connection (PostgreSQL only).

    `rows` carry an `ord` each, the columns of `_STORE_COLUMNS` (JSON columns and the event
    payload already encoded, the payload's `notification_id` filled in here) and `event` is
    (event_type, event_version, aggregate_type). Returns ord -> (nonce fresh, new id or None);
    a row whose key is already stored, or lost to an earlier row of the batch, gets None.
    """
    arrays = [[row[name] for row in rows] for name in _STORE_COLUMNS]
    found = await connection.fetch(_STORE_CALLBACKS, *arrays, *event)
    return {int(ord_): (bool(fresh), int(i) if i is not None else None) for ord_, fresh, i in found}


async def get_notification(
    session: AsyncSession, notification_id: int
) -> PaymentNotification | None:
    """One stored notification."""
    return await session.scalar(
        select(PaymentNotification)
        .where(PaymentNotification.id == notification_id)
        .execution_options(populate_existing=True)
    )


async def pending_notifications(
    session: AsyncSession, notification_ids: Sequence[int]
) -> list[PaymentNotification]:
    """Stored notifications not applied yet, by id, read fresh, in id order."""
    rows = await session.scalars(
        select(PaymentNotification)
        .where(
            PaymentNotification.id.in_(list(notification_ids)),
            PaymentNotification.outcome == "pending",
        )
        .order_by(PaymentNotification.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def lock_by_out_trade_nos(
    session: AsyncSession, out_trade_nos: Sequence[str]
) -> list[Payment]:
    """Attempts by out_trade_no, read fresh and row-locked on PostgreSQL, in id order."""
    stmt = (
        select(Payment)
        .where(Payment.out_trade_no.in_(list(out_trade_nos)))
        .order_by(Payment.id)
        .execution_options(populate_existing=True)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def mark_paid_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record many locked attempts as paid and settling their orders: rows of
    {"pid", "txn", "amount", "paid_at", "at"}."""
    await session.execute(
        update(table_of(Payment))
        .where(
            Payment.id == bindparam("pid"),
            # (an IN list cannot be used with executemany)
            or_(*(Payment.state == source for source in RECEIVED.source_values)),
        )
        .values(
            state=RECEIVED.target.value,
            provider_txn_id=bindparam("txn"),
            paid_amount_minor=bindparam("amount"),
            paid_at=bindparam("paid_at"),
            next_query_at=None,
            settles_order=True,
            updated_at=bindparam("at"),
        ),
        rows,
    )


async def finish_notifications(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record many outcomes at once: rows of {"nid", "outcome", "pid", "at"}."""
    await session.execute(
        update(table_of(PaymentNotification))
        .where(PaymentNotification.id == bindparam("nid"), PaymentNotification.outcome == "pending")
        .values(
            outcome=bindparam("outcome"), applied_at=bindparam("at"), payment_id=bindparam("pid")
        ),
        rows,
    )


async def finish_notification(
    session: AsyncSession, notification_id: int, outcome: str, payment_id: int | None, at: datetime
) -> bool:
    """Record what applying a notification did, once."""
    result = await session.execute(
        update(PaymentNotification)
        .where(PaymentNotification.id == notification_id, PaymentNotification.outcome == "pending")
        .values(outcome=outcome, applied_at=at, payment_id=payment_id)
        .execution_options(**NO_SYNC)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def notifications_for(
    session: AsyncSession, out_trade_nos: Sequence[str]
) -> list[PaymentNotification]:
    """Stored notifications of some out_trade_nos, oldest first."""
    if not out_trade_nos:
        return []
    rows = await session.scalars(
        select(PaymentNotification)
        .where(PaymentNotification.out_trade_no.in_(list(out_trade_nos)))
        .order_by(PaymentNotification.id)
    )
    return list(rows.all())


async def inbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Verified notifications not yet applied, and the oldest one's arrival."""
    row = (
        await session.execute(
            select(func.count(), func.min(PaymentNotification.received_at)).where(
                PaymentNotification.outcome == "pending"
            )
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    return int(row[0]), oldest


async def outcome_counts(session: AsyncSession, since: datetime | None = None) -> dict[str, int]:
    """Stored notifications per outcome."""
    stmt = select(PaymentNotification.outcome, func.count()).group_by(PaymentNotification.outcome)
    if since is not None:
        stmt = stmt.where(PaymentNotification.received_at >= since)
    return {outcome: int(n) for outcome, n in (await session.execute(stmt)).all()}


# --- nonces ------------------------------------------------------------------------------------


async def claim_nonces(
    session: AsyncSession, wanted: dict[tuple[str, str], datetime]
) -> set[tuple[str, str]]:
    """Remember several nonces in one statement; returns those not seen before."""
    stmt = (
        upsert_insert(session, table_of(PaymentNonce))
        .on_conflict_do_nothing()
        .returning(PaymentNonce.provider, PaymentNonce.nonce)
    )
    rows = [{"provider": p, "nonce": n, "expires_at": e} for (p, n), e in wanted.items()]
    return {(p, n) for p, n in (await session.execute(stmt, rows)).all()}


async def purge_notification_bodies(session: AsyncSession, finished_before: datetime) -> int:
    """Empty the bodies of notifications applied (or refused) before a time; returns how many."""
    result = await session.execute(
        update(PaymentNotification)
        .where(
            PaymentNotification.outcome != "pending",
            PaymentNotification.applied_at < finished_before,
            PaymentNotification.body != "",
        )
        .values(body="")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def purge_nonces(session: AsyncSession, now: datetime) -> int:
    """Forget nonces past the replay window."""
    result = await session.execute(delete(PaymentNonce).where(PaymentNonce.expires_at < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- refunds -----------------------------------------------------------------------------------


async def insert_refund(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Record a refund; None when (provider, out_refund_no) is already recorded."""
    stmt = (
        upsert_insert(session, PaymentRefund)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["provider", "out_refund_no"])
        .returning(PaymentRefund.id)
    )
    found = (await session.execute(stmt)).scalar_one_or_none()
    return int(found) if found is not None else None


async def recorded_refund_numbers(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of some (provider, out_refund_no) are already recorded."""
    wanted = set(keys)
    providers = sorted({provider for provider, _ in wanted})
    numbers = sorted({number for _, number in wanted})
    found: set[tuple[str, str]] = set()
    for start in range(0, len(numbers), 1000):
        rows = await session.execute(
            select(PaymentRefund.provider, PaymentRefund.out_refund_no).where(
                PaymentRefund.provider.in_(providers),
                PaymentRefund.out_refund_no.in_(numbers[start : start + 1000]),
            )
        )
        found.update((p, n) for p, n in rows.all() if (p, n) in wanted)
    return found


async def insert_refunds(session: AsyncSession, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Record several refunds in one statement; returns the (provider, out_refund_no) written
    (those already recorded are skipped)."""
    stmt = (
        upsert_insert(session, table_of(PaymentRefund))
        .on_conflict_do_nothing(index_elements=["provider", "out_refund_no"])
        .returning(PaymentRefund.provider, PaymentRefund.out_refund_no)
    )
    return {(p, n) for p, n in (await session.execute(stmt, rows)).all()}


async def set_refunded_many(session: AsyncSession, rows: list[dict[str, Any]]) -> int | None:
    """Move many locked paid attempts' refunded totals from what was read to a new total
    within what was paid: rows of {"pid", "before", "after", "at"}. Returns the rows updated
    where the driver reports it for an executemany (None where it does not)."""
    result = await session.execute(
        update(table_of(Payment))
        .where(
            Payment.id == bindparam("pid"),
            Payment.state == PaymentState.PAID.value,
            Payment.refunded_minor == bindparam("before"),
            Payment.paid_amount_minor >= bindparam("after"),
        )
        .values(refunded_minor=bindparam("after"), updated_at=bindparam("at")),
        rows,
    )
    if not session.get_bind().dialect.supports_sane_multi_rowcount:
        return None
    return int(result.rowcount)  # type: ignore[attr-defined]


async def refunds_of(session: AsyncSession, payment_ids: Iterable[int]) -> list[PaymentRefund]:
    """Refunds of some attempts, oldest first."""
    ids = list(payment_ids)
    if not ids:
        return []
    rows = await session.scalars(
        select(PaymentRefund).where(PaymentRefund.payment_id.in_(ids)).order_by(PaymentRefund.id)
    )
    return list(rows.all())


# --- manual payments ---------------------------------------------------------------------------


async def insert_manual(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert a manual payment request; returns its id."""
    result = await session.execute(
        insert(ManualPayment).values(**values).returning(ManualPayment.id)
    )
    return int(result.scalar_one())


async def get_manual(session: AsyncSession, manual_id: int) -> ManualPayment | None:
    """One manual payment request, read fresh."""
    return await session.scalar(
        select(ManualPayment)
        .where(ManualPayment.id == manual_id)
        .execution_options(populate_existing=True)
    )


async def pending_manual_for_order(session: AsyncSession, order_id: int) -> ManualPayment | None:
    """The order's request still awaiting a second person, if any."""
    return await session.scalar(
        select(ManualPayment).where(
            ManualPayment.order_id == order_id,
            ManualPayment.state == ManualState.PENDING_APPROVAL,
        )
    )


async def manual_requests(
    session: AsyncSession, state: str | None, limit: int, before_id: int | None = None
) -> list[ManualPayment]:
    """Manual payment requests, newest first, of one state or all."""
    query = select(ManualPayment).order_by(ManualPayment.id.desc()).limit(limit)
    if state is not None:
        query = query.where(ManualPayment.state == state)
    if before_id is not None:
        query = query.where(ManualPayment.id < before_id)
    return list((await session.scalars(query)).all())


async def decide_manual(
    session: AsyncSession,
    manual_id: int,
    *,
    move: ManualTransition,
    by: str,
    at: datetime,
    note: str | None,
    query_outcome: str | None,
) -> bool:
    """Approve, reject or supersede a pending request (`state_machine.MANUAL_TRANSITIONS`),
    once: a compare-and-set."""
    result = await session.execute(
        update(ManualPayment)
        .where(ManualPayment.id == manual_id, ManualPayment.state == move.source)
        .values(
            state=move.target.value,
            decided_by=by,
            decided_at=at,
            decision_note=note,
            query_outcome=query_outcome,
        )
        .execution_options(**NO_SYNC)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


# --- reconciliation ----------------------------------------------------------------------------

RECON_COLUMNS = (
    Payment.out_trade_no,
    Payment.state,
    Payment.amount_minor,
    Payment.paid_amount_minor,
    Payment.refunded_minor,
    Payment.provider_txn_id,
    Payment.order_no,
)


_RECON_PAID_SQL = (
    "SELECT out_trade_no, COALESCE(paid_amount_minor, amount_minor), refunded_minor"
    " FROM payment WHERE provider = $1 AND paid_at >= $2 AND paid_at < $3 AND state = 'paid'"
)


async def recon_paid_window(
    session: AsyncSession, provider: str, start: datetime, end: datetime
) -> dict[str, tuple[int, int]]:
    """out_trade_no -> (amount paid, refunded) of a provider's attempts paid within a window.
    On PostgreSQL the rows come straight from asyncpg (a million in about a second)."""
    if dialect_of(session) == "postgresql":
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        records = await driver.fetch(_RECON_PAID_SQL, provider, start, end)
        return {r[0]: (r[1], r[2]) for r in records}
    result = await session.execute(
        select(
            Payment.out_trade_no,
            func.coalesce(Payment.paid_amount_minor, Payment.amount_minor),
            Payment.refunded_minor,
        ).where(
            Payment.provider == provider,
            Payment.paid_at >= start,
            Payment.paid_at < end,
            Payment.state == PaymentState.PAID,
        )
    )
    return {no: (int(paid), int(refunded)) for no, paid, refunded in result.all()}


async def recon_unsettled_window(
    session: AsyncSession, provider: str, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    """Attempts with money received in a window but not in state paid (a wrong amount)."""
    result = await session.execute(
        select(*RECON_COLUMNS).where(
            Payment.provider == provider,
            Payment.paid_at >= start,
            Payment.paid_at < end,
            Payment.state != PaymentState.PAID,
        )
    )
    return [tuple(row) for row in result.all()]


async def recon_lookup(
    session: AsyncSession, provider: str, out_trade_nos: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Attempts by out_trade_no (statement rows the window did not cover)."""
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(out_trade_nos), 1000):
        chunk = list(out_trade_nos[start : start + 1000])
        result = await session.execute(
            select(*RECON_COLUMNS).where(
                Payment.provider == provider,
                or_(Payment.out_trade_no.in_(chunk)),
            )
        )
        found.extend(tuple(row) for row in result.all())
    return found


async def insert_reconciliation(session: AsyncSession, values: dict[str, Any]) -> int:
    """Record a reconciliation run; returns its id."""
    result = await session.execute(
        insert(PaymentReconciliation).values(**values).returning(PaymentReconciliation.id)
    )
    return int(result.scalar_one())


async def refund_by_out_refund_no(
    session: AsyncSession, provider: str, out_refund_no: str
) -> PaymentRefund | None:
    """The refund recorded under a provider's refund number, if any."""
    found = await session.scalars(
        select(PaymentRefund).where(
            PaymentRefund.provider == provider, PaymentRefund.out_refund_no == out_refund_no
        )
    )
    return found.first()


async def refunds_recorded_between(
    session: AsyncSession, prefix: str, start: datetime, end: datetime
) -> dict[str, int]:
    """out_refund_no -> amount of the refunds recorded in a window whose number has a prefix."""
    rows = await session.execute(
        select(PaymentRefund.out_refund_no, PaymentRefund.amount_minor).where(
            PaymentRefund.out_refund_no.like(f"{prefix}%"),
            PaymentRefund.created_at >= start,
            PaymentRefund.created_at < end,
        )
    )
    return {no: int(amount) for no, amount in rows.all()}
