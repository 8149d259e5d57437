"""Active queries (compensation for lost callbacks) and the last query before an order closes.

Both follow the same three steps, so a slow provider never holds a lock or, on SQLite, the
single writer: claim the attempts in a short transaction, ask the providers with no transaction
open (`gateway.query_many`, bounded concurrency), record each answer in its own short
transaction (`record_query_result`, which applies a payment through the inbox). The functions
taking a `Database` are those boundaries; the others receive a session and never commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database, count_after_commit
from ordertally.core.settings import Settings, get_settings
from ordertally.orders import closing as orders_closing
from ordertally.orders.closing import DueOrder
from ordertally.payments import gateway, repository
from ordertally.payments.apply import apply_notification
from ordertally.payments.inbox import store_notice
from ordertally.payments.metrics import QUERIES
from ordertally.payments.models import Payment
from ordertally.payments.providers import Notice, QueryResult
from ordertally.payments.state_machine import MONEY_RECEIVED, OPENED

log = logging.getLogger(__name__)

# After this long past its deadline an order whose provider cannot be asked closes anyway:
# the platforms stop notifying after ~25 h and reconciliation catches anything later.
QUERY_GIVE_UP_AFTER = timedelta(hours=25)
# What recording an answer ended in when its transaction failed (the attempt stays leased and
# is asked again once the lease ends; the close job keeps its order open).
RECORD_FAILED = "record_failed"
# Outcomes that keep an order open at its deadline: money arrived (now applied, already
# applied, wrong amount, twice) or the answer could not be recorded.
_KEEPS_OPEN = frozenset({"paid", "duplicate", "amount_mismatch", "double_payment", RECORD_FAILED})


def query_notice(result: QueryResult, source: str = "query") -> Notice:
    """An active query's answer in the inbox's shape (so it is applied by the same code)."""
    return Notice(
        provider=result.provider,
        dedupe_key=f"{source}:{result.out_trade_no}:{result.provider_txn_id}:{result.trade_state}",
        event_type=f"{source}:{result.trade_state}",
        kind="payment",
        out_trade_no=result.out_trade_no,
        provider_txn_id=result.provider_txn_id,
        trade_state=result.trade_state[:32] or None,
        facts={**result.facts(), **result.extra},
        headers={},
        body=result.raw,
    )


def _next_query(settings: Settings, payment: Payment, now: datetime) -> datetime | None:
    nxt = now + timedelta(seconds=settings.payment_query_every_seconds)
    deadline = clock.as_utc(payment.deadline_at) if payment.deadline_at else None
    if deadline is None or nxt <= deadline:
        return nxt
    # The last regular query lands on the deadline; the close job asks once more itself.
    return deadline if now < deadline else None


def _after_answer(
    settings: Settings, payment: Payment, now: datetime, final: bool
) -> datetime | None:
    """When to ask about an attempt again after an answer without money. A final query (before
    an order closes) ends the queries only once the attempt's deadline has passed: an order a
    person cancels before it leaves its trade open at the provider, and a buyer who pays it then
    and whose notification is lost is found by the next regular query, up to the deadline
    (issue 21: a late payment after a cancel was never recorded as `paid_after_close`)."""
    deadline = clock.as_utc(payment.deadline_at) if payment.deadline_at else None
    if final and (deadline is None or now >= deadline):
        return None
    return _next_query(settings, payment, now)


def _count_query(session: AsyncSession, provider: str, result: str) -> None:
    count_after_commit(session, QUERIES.labels(provider, result).inc)


async def record_query_result(
    session: AsyncSession,
    payment: Payment,
    result: QueryResult | Exception,
    now: datetime,
    *,
    final: bool = False,
) -> str:
    """Act on an active query's answer: apply a payment, close the attempt, or schedule the
    next query. Returns what happened (an apply outcome, or closed/pending/error)."""
    settings = get_settings()
    if isinstance(result, Exception):
        _count_query(session, payment.provider, "error")
        await repository.record_query(
            session,
            payment.id,
            at=now,
            trade_state=None,
            next_query_at=_after_answer(settings, payment, now, final),
            error=f"{type(result).__name__}: {result}",
        )
        return "error"
    _count_query(session, payment.provider, result.status)
    if result.status == "paid":
        await repository.record_query(
            session,
            payment.id,
            at=now,
            trade_state=result.trade_state,
            next_query_at=None,
            error=None,
        )
        notification_id = await store_notice(
            session, query_notice(result), source="query", received_at=now, publish=False
        )
        if notification_id is None:
            return "duplicate"
        return await apply_notification(session, notification_id)
    if result.status == "closed":
        await repository.record_query(
            session,
            payment.id,
            at=now,
            trade_state=result.trade_state,
            next_query_at=None,
            error=None,
        )
        await repository.mark_closed(session, payment.id, result.trade_state, now)
        return "closed"
    await repository.record_query(
        session,
        payment.id,
        at=now,
        trade_state=result.trade_state,
        next_query_at=_after_answer(settings, payment, now, final),
        error=None,
    )
    return result.status


async def record_answer(
    db: Database, payment: Payment, result: QueryResult | Exception, *, final: bool = False
) -> str:
    """`record_query_result` in a short transaction of its own; a failure is logged and
    returned as `RECORD_FAILED`, so one attempt cannot lose the others' answers."""
    try:
        async with db.transaction() as session:
            return await record_query_result(session, payment, result, clock.now(), final=final)
    except Exception:
        log.exception("the answer about %s could not be recorded", payment.out_trade_no)
        return RECORD_FAILED


def query_lease(settings: Settings, claimed: int) -> timedelta:
    """How long claimed attempts are kept from other workers: longer than asking them all can
    take (`QUERY_CONCURRENCY` at a time, each bounded by the HTTP timeout), plus a minute."""
    rounds = -(-claimed // gateway.QUERY_CONCURRENCY)
    return timedelta(seconds=60 + rounds * settings.payment_http_timeout_seconds)


async def claim_due(db: Database, now: datetime, limit: int) -> list[Payment]:
    """Claim the attempts whose query is due, in a short transaction (leased, see
    `query_lease`; SKIP LOCKED on PostgreSQL)."""
    until = now + query_lease(get_settings(), limit)
    async with db.transaction() as session:
        return await repository.lease_due_for_query(
            session, now, limit, until, skip_locked=not db.is_sqlite
        )


async def query_due(db: Database, now: datetime, limit: int) -> dict[str, int]:
    """Query attempts whose next query is due; apply what the providers say (claim, ask with
    no transaction open, record each answer in its own transaction)."""
    due = await claim_due(db, now, limit)
    counts: dict[str, int] = {"queried": len(due)}
    if not due:
        return counts
    answers = await gateway.query_many(due)
    for payment, result in zip(due, answers, strict=True):
        outcome = await record_answer(db, payment, result)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def keep_open_if_paid(db: Database, orders: Sequence[DueOrder]) -> set[int]:
    """Pre-close check: ask the providers one last time, with no transaction open; returns the
    orders to keep open (paid and now applied, money arrived in a wrong amount, the buyer is
    paying right now, or a provider could not answer)."""
    if not orders:
        return set()
    async with db.transaction(write=False) as session:
        attempts = await repository.payments_of_orders(session, [o.id for o in orders])
    keep = {p.order_id for p in attempts if p.state in MONEY_RECEIVED}
    pending = [p for p in attempts if p.state == OPENED and p.order_id not in keep]
    if not pending:
        return keep
    answers = await gateway.query_many(pending)
    now = clock.now()
    deadlines = {o.id: o.payment_deadline_at for o in orders}
    for payment, result in zip(pending, answers, strict=True):
        outcome = await record_answer(db, payment, result, final=True)
        if outcome in _KEEPS_OPEN:
            keep.add(payment.order_id)
        elif outcome == "error":
            if now - clock.as_utc(deadlines[payment.order_id]) < QUERY_GIVE_UP_AFTER:
                keep.add(payment.order_id)
        elif isinstance(result, QueryResult) and result.trade_state == "USERPAYING":
            keep.add(payment.order_id)
    return keep


def register_checks() -> None:
    """Hook the last query into the order timeout."""
    orders_closing.register_pre_close_check(keep_open_if_paid)
