"""Payment use cases: open attempts, store notifications, apply each once, query providers
actively, manual recovery by two people, refunds.

Services receive a session and never commit; the caller's boundary does. Calls to a provider
take no session: the boundary calls them between its transactions.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, money
from ordertally.core.db import dialect_of
from ordertally.core.errors import Conflict
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.errors import IllegalTransition
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Status, find
from ordertally.payments import repository
from ordertally.payments.errors import (
    ManualAmountMismatch,
    ManualPaymentNotFound,
    ManualPaymentNotPending,
    OrderNotPayable,
    ProviderOff,
    SameApprover,
    UnsupportedCurrency,
)
from ordertally.payments.events import PaymentNotificationReceived
from ordertally.payments.metrics import APPLIED, CALLBACK_TO_APPLIED, QUERIES
from ordertally.payments.models import PROVIDERS, ManualPayment, Payment, PaymentNotification
from ordertally.payments.providers import (
    Notice,
    ProviderCallFailed,
    QueryResult,
    Rejected,
    alipay,
    wechatpay,
)

CURRENCIES = frozenset({"CNY"})
# After this long past its deadline an order whose provider cannot be asked closes anyway:
# the platforms stop notifying after ~25 h and reconciliation catches anything later.
QUERY_GIVE_UP_AFTER = timedelta(hours=25)
QUERY_CONCURRENCY = 8


class PaymentNotYetApplied(Exception):
    """A refund arrived before the payment it refunds was applied; retried by the worker."""


class _RefundTooLarge(Exception):
    """Rolls back a refund that would take the refunded total past what was paid."""


# --- providers -------------------------------------------------------------------------------


def provider_config(provider: str, settings: Settings | None = None) -> Any:
    """The provider's configuration, or None when it is off."""
    settings = settings or get_settings()
    if provider == "wechatpay":
        return wechatpay.configured(settings)
    if provider == "alipay":
        return alipay.configured(settings)
    return None


def configuration_problems(settings: Settings | None = None) -> list[str]:
    """Why a partly or wrongly configured provider is off (empty when all is well)."""
    settings = settings or get_settings()
    return [*wechatpay.problems(settings), *alipay.problems(settings)]


def enabled_providers(settings: Settings | None = None) -> list[str]:
    """Providers that are fully configured."""
    return [p for p in PROVIDERS if provider_config(p, settings) is not None]


def notify_url(provider: str, settings: Settings | None = None) -> str:
    """Where the provider sends its notifications."""
    settings = settings or get_settings()
    base = settings.payment_notify_base_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/callbacks/{provider}"


async def request_provider_params(payment: Payment) -> dict[str, Any]:
    """Open the attempt at the provider (QR code); returns what a client shows the buyer."""
    config = provider_config(payment.provider)
    if config is None:
        raise ProviderOff(f"{payment.provider} is not configured")
    description = f"ordertally {payment.order_no}"
    url = notify_url(payment.provider)
    if payment.provider == "wechatpay":
        return await wechatpay.create_native(
            config, payment.out_trade_no, payment.amount_minor, description, url
        )
    return await alipay.precreate(
        config, payment.out_trade_no, payment.amount_minor, description, url
    )


async def query_remote(payment: Payment) -> QueryResult:
    """Ask the provider what became of an attempt (signature of the answer verified)."""
    config = provider_config(payment.provider)
    if config is None:
        raise ProviderCallFailed(f"{payment.provider} is not configured")
    if payment.provider == "wechatpay":
        return await wechatpay.query(config, payment.out_trade_no)
    return await alipay.query(config, payment.out_trade_no)


async def query_many(payments: list[Payment]) -> list[QueryResult | Exception]:
    """Query several attempts concurrently (bounded); failures come back as exceptions."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def one(payment: Payment) -> QueryResult | Exception:
        async with gate:
            try:
                return await query_remote(payment)
            except (ProviderCallFailed, OSError, ValueError) as exc:
                return exc

    return list(await asyncio.gather(*(one(p) for p in payments)))


# --- attempts --------------------------------------------------------------------------------


async def open_attempt(
    session: AsyncSession, order_no: str, provider: str, actor_id: str
) -> tuple[Payment, bool]:
    """Start (or reuse the open) attempt to pay an order through a provider; True if new."""
    settings = get_settings()
    if provider_config(provider, settings) is None:
        raise ProviderOff(f"{provider} is not configured")
    order = await orders_service.get_order(session, order_no)
    if order.status != Status.PENDING_PAYMENT:
        raise OrderNotPayable(f"order {order_no} is {order.status}", order_status=order.status)
    if order.currency not in CURRENCIES:
        raise UnsupportedCurrency(f"{provider} takes CNY; order {order_no} is in {order.currency}")
    existing = await repository.open_attempt(session, order.id, provider)
    if existing is not None:
        return existing, False
    now = clock.now()
    seq = await repository.count_attempts(session, order.id) + 1
    values: dict[str, Any] = {
        "order_id": order.id,
        "order_no": order.order_no,
        "provider": provider,
        "out_trade_no": f"{order.order_no}P{seq:02d}",
        "amount_minor": order.total_minor,
        "currency": order.currency,
        "state": "pending",
        "provider_txn_id": None,
        "paid_amount_minor": None,
        "paid_at": None,
        "settles_order": False,
        "refunded_minor": 0,
        "provider_params": None,
        "deadline_at": order.payment_deadline_at,
        "next_query_at": now + timedelta(seconds=settings.payment_query_after_seconds),
        "query_count": 0,
        "last_query_at": None,
        "last_query_state": None,
        "last_error": None,
        "created_by": actor_id,
        "created_at": now,
        "updated_at": now,
    }
    payment_id = await repository.insert_payment(session, values)
    return Payment(id=payment_id, **values), True


async def store_provider_params(
    session: AsyncSession, payment_id: int, params: dict[str, Any] | None, error: str | None
) -> Payment:
    """Keep the provider's answer to opening an attempt (a failure closes the attempt)."""
    await repository.set_provider_params(session, payment_id, params, error, clock.now())
    payment = await repository.get_payment(session, payment_id)
    assert payment is not None
    return payment


async def payments_of(session: AsyncSession, order_no: str) -> dict[str, Any]:
    """An order's attempts, the notifications about them, refunds and manual requests."""
    order = await orders_service.get_order(session, order_no)
    payments = await repository.payments_of_order(session, order.id)
    notifications = await repository.notifications_for(session, [p.out_trade_no for p in payments])
    refunds = await repository.refunds_of(session, [p.id for p in payments])
    return {
        "order": order,
        "payments": payments,
        "notifications": notifications,
        "refunds": refunds,
    }


# --- the inbox (the acknowledgement path) ----------------------------------------------------


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
        "body": notice.body,
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


# --- applying --------------------------------------------------------------------------------


def _actor(row: PaymentNotification, evidence: str | None) -> Actor:
    note = f"{row.provider} {row.out_trade_no} ({row.source} #{row.id})"
    if row.source == "callback":
        return Actor(
            ActorKind.PAYMENT_CALLBACK, f"{row.provider}:notify", evidence_ref=evidence, note=note
        )
    return Actor(
        ActorKind.COMPENSATION_QUERY,
        f"{row.provider}:{row.source}",
        evidence_ref=evidence,
        note=note,
    )


async def _case(
    session: AsyncSession, order_id: int | None, type_: str, detail: dict[str, Any]
) -> None:
    await exceptions_service.open_case(
        session, order_id=order_id, category="payment", type=type_, blocking=False, detail=detail
    )


async def apply_notification(session: AsyncSession, notification_id: int) -> str:
    """Apply one stored notification exactly once; returns its outcome."""
    row = await repository.get_notification(session, notification_id)
    if row is None:
        return "ignored"
    if row.outcome != "pending":
        return row.outcome
    kind = row.facts.get("kind")
    payment_id: int | None = None
    if kind == "refund":
        outcome, payment_id = await _apply_refund(session, row)
    elif kind == "payment" and row.facts.get("status") == "paid":
        outcome, payment_id = await _apply_paid(session, row)
    else:
        outcome = "not_paid" if kind == "payment" else "ignored"
    now = clock.now()
    if await repository.finish_notification(session, row.id, outcome, payment_id, now):
        APPLIED.labels(row.provider, outcome).inc()
        CALLBACK_TO_APPLIED.labels(row.provider).observe(
            max((now - clock.as_utc(row.received_at)).total_seconds(), 0.0)
        )
    return outcome


async def apply_notifications(session: AsyncSession, notification_ids: list[int]) -> None:
    """`apply_notification` for many at once (the worker's batch path), with the same effects.

    The common case — a paid notification for a pending attempt with the right amount, whose
    order is still waiting for payment — is applied for the whole batch in a fixed number of
    statements (attempts and orders locked in id order, one compare-and-set per group, the
    audit rows and events inserted together). Everything else (duplicates, mismatches, unknown
    trades, refunds, closed orders, two notifications for one attempt) goes through
    `apply_notification` one by one afterwards, in the same transaction, and so sees the batch's
    writes.
    """
    rows = await repository.pending_notifications(session, notification_ids)
    paid = [
        r
        for r in rows
        if r.facts.get("kind") == "payment" and r.facts.get("status") == "paid" and r.out_trade_no
    ]
    payments = {
        p.out_trade_no: p
        for p in await repository.lock_by_out_trade_nos(
            session, sorted({r.out_trade_no for r in paid if r.out_trade_no})
        )
    }
    simple: dict[int, tuple[PaymentNotification, Payment]] = {}  # order id -> (row, attempt)
    for r in paid:
        payment = payments.get(r.out_trade_no or "")
        if (
            payment is None
            or payment.provider != r.provider
            or payment.state not in ("pending", "closed", "failed")
            or payment.order_id in simple
            or r.facts.get("amount_minor") != payment.amount_minor
            or (r.facts.get("currency") or "CNY") != payment.currency
        ):
            continue
        simple[payment.order_id] = (r, payment)
    moved: set[int] = set()
    if simple:
        actors = {oid: _actor(r, r.provider_txn_id) for oid, (r, _) in simple.items()}
        moved = await orders_service.transition_many(
            session, list(simple), "payment_succeeded", actors
        )
    now = clock.now()
    done = [simple[oid] for oid in sorted(moved)]
    if done:
        await repository.mark_paid_many(
            session,
            [
                {
                    "pid": payment.id,
                    "txn": r.provider_txn_id,
                    "amount": payment.amount_minor,
                    "paid_at": _paid_at(r),
                    "at": now,
                }
                for r, payment in done
            ],
        )
        await repository.finish_notifications(
            session,
            [{"nid": r.id, "outcome": "paid", "pid": payment.id, "at": now} for r, payment in done],
        )
        for r, _ in done:
            APPLIED.labels(r.provider, "paid").inc()
            CALLBACK_TO_APPLIED.labels(r.provider).observe(
                max((now - clock.as_utc(r.received_at)).total_seconds(), 0.0)
            )
    applied = {r.id for r, _ in done}
    for r in rows:
        if r.id not in applied:
            await apply_notification(session, r.id)


def _paid_at(row: PaymentNotification) -> datetime:
    value = row.facts.get("paid_at")
    if value:
        try:
            return clock.as_utc(datetime.fromisoformat(str(value)))
        except ValueError:
            pass
    return clock.as_utc(row.received_at)


async def _apply_paid(session: AsyncSession, row: PaymentNotification) -> tuple[str, int | None]:
    payment = await repository.by_out_trade_no(session, row.out_trade_no or "")
    detail = {
        "provider": row.provider,
        "out_trade_no": row.out_trade_no,
        "transaction_id": row.provider_txn_id,
        "notification_id": row.id,
    }
    if payment is None or payment.provider != row.provider:
        await _case(session, None, "unknown_trade", detail)
        return "unknown_trade", None
    amount = row.facts.get("amount_minor")
    currency = row.facts.get("currency") or "CNY"
    txn = row.provider_txn_id
    now = clock.now()
    for _ in range(3):
        if payment.state in ("paid", "mismatch"):
            if txn is None or payment.provider_txn_id == txn:
                return "duplicate", payment.id
            await _case(
                session,
                payment.order_id,
                "double_payment",
                {**detail, "first": payment.provider_txn_id},
            )
            return "double_payment", payment.id
        matches = amount == payment.amount_minor and currency == payment.currency
        state = "paid" if matches else "mismatch"
        if await repository.mark_received(
            session,
            payment.id,
            state=state,
            txn_id=txn,
            amount_minor=amount if isinstance(amount, int) else None,
            paid_at=_paid_at(row),
            at=now,
        ):
            if not matches:
                await _case(
                    session,
                    payment.order_id,
                    "amount_mismatch",
                    {
                        **detail,
                        "expected_minor": payment.amount_minor,
                        "expected_currency": payment.currency,
                        "received_minor": amount,
                        "received_currency": currency,
                    },
                )
                return "amount_mismatch", payment.id
            return await _settle(session, payment, row, detail), payment.id
        # Another worker recorded this attempt first: read it again and decide.
        fresh = await repository.get_payment(session, payment.id)
        assert fresh is not None
        payment = fresh
    raise Conflict(f"payment {payment.out_trade_no} kept changing")


async def _settle(
    session: AsyncSession, payment: Payment, row: PaymentNotification, detail: dict[str, Any]
) -> str:
    """Money for this attempt was received: move the order, or say why it cannot be."""
    actor = _actor(row, row.provider_txn_id)
    try:
        result = await orders_service.transition(
            session, payment.order_no, "payment_succeeded", actor
        )
    except IllegalTransition:
        order = await orders_service.get_order(session, payment.order_no)
    else:
        if result.applied:
            await repository.mark_settles(session, payment.id, clock.now())
            return "paid"
        order = result.order  # someone else paid it first
    if order.status == Status.CLOSED:
        policy = get_settings().payment_paid_after_close_policy
        if policy == "reopen" and find("reopen_paid") is not None:
            await orders_service.transition(session, order.order_no, "reopen_paid", actor)
            await repository.mark_settles(session, payment.id, clock.now())
        await _case(
            session,
            order.id,
            "paid_after_close",
            {**detail, "policy": policy, "amount_minor": payment.amount_minor},
        )
        return "paid_after_close"
    await _case(
        session,
        order.id,
        "double_payment",
        {**detail, "order_status": order.status, "to_refund_minor": payment.amount_minor},
    )
    return "double_payment"


async def _apply_refund(session: AsyncSession, row: PaymentNotification) -> tuple[str, int | None]:
    facts = row.facts
    payment = await repository.by_out_trade_no(session, row.out_trade_no or "")
    detail = {
        "provider": row.provider,
        "out_trade_no": row.out_trade_no,
        "out_refund_no": facts.get("out_refund_no"),
        "notification_id": row.id,
    }
    if payment is None or payment.provider != row.provider:
        await _case(session, None, "unknown_trade", detail)
        return "unknown_trade", None
    if payment.state != "paid":
        raise PaymentNotYetApplied(f"refund for {payment.out_trade_no} before its payment")
    status = facts.get("status")
    if status != "success":
        if status == "abnormal":
            await _case(session, payment.order_id, "refund_abnormal", detail)
        return "ignored", payment.id
    if "refunded_total_minor" in facts:  # Alipay: the running total
        total = facts.get("refunded_total_minor")
        delta = total - payment.refunded_minor if isinstance(total, int) else None
        if delta is not None and delta <= 0:
            return "duplicate", payment.id
    else:
        delta = facts.get("refund_minor")
    if not isinstance(delta, int) or delta <= 0:
        return "ignored", payment.id
    out_refund_no = str(facts.get("out_refund_no") or f"{row.provider_txn_id}:{row.id}")[:64]
    now = clock.now()
    refunded_at = facts.get("refunded_at")
    try:
        async with session.begin_nested():
            refund_id = await repository.insert_refund(
                session,
                {
                    "payment_id": payment.id,
                    "provider": row.provider,
                    "out_refund_no": out_refund_no,
                    "refund_id": (str(facts.get("refund_id") or "") or None),
                    "amount_minor": delta,
                    "status": "success",
                    "refunded_at": datetime.fromisoformat(refunded_at) if refunded_at else now,
                    "notification_id": row.id,
                    "created_at": now,
                },
            )
            if refund_id is not None and not await repository.add_refunded(
                session, payment.id, delta, now
            ):
                raise _RefundTooLarge
    except _RefundTooLarge:
        await _case(
            session,
            payment.order_id,
            "refund_exceeds_paid",
            {
                **detail,
                "refund_minor": delta,
                "paid_minor": payment.paid_amount_minor,
                "already_refunded_minor": payment.refunded_minor,
            },
        )
        return "refund_exceeds_paid", payment.id
    if refund_id is None:
        return "duplicate", payment.id
    fresh = await repository.get_payment(session, payment.id)
    assert fresh is not None
    if fresh.settles_order and fresh.refunded_minor == fresh.paid_amount_minor:
        actor = Actor(
            ActorKind.PAYMENT_CALLBACK,
            f"{row.provider}:notify",
            evidence_ref=str(facts.get("refund_id") or out_refund_no),
            note=f"{row.provider} refund {out_refund_no} of {row.out_trade_no}",
        )
        try:
            result = await orders_service.transition(session, fresh.order_no, "refund", actor)
        except IllegalTransition as exc:
            await _case(
                session,
                fresh.order_id,
                "refund_after_fulfilment",
                {**detail, "order_status": exc.extra.get("order_status")},
            )
            return "refund_recorded", payment.id
        return ("refund_full" if result.applied else "refund_recorded"), payment.id
    return "refund_recorded", payment.id


# --- active queries (compensation) -----------------------------------------------------------


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
        QUERIES.labels(payment.provider, "error").inc()
        await repository.record_query(
            session,
            payment.id,
            at=now,
            trade_state=None,
            next_query_at=None if final else _next_query(settings, payment, now),
            error=f"{type(result).__name__}: {result}",
        )
        return "error"
    QUERIES.labels(payment.provider, result.status).inc()
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
        next_query_at=None if final else _next_query(settings, payment, now),
        error=None,
    )
    return result.status


async def query_due(session: AsyncSession, now: datetime, limit: int) -> dict[str, int]:
    """Query attempts whose next query is due; apply what the providers say."""
    due = await repository.due_for_query(
        session, now, limit, skip_locked=dialect_of(session) == "postgresql"
    )
    counts: dict[str, int] = {"queried": len(due)}
    if not due:
        return counts
    for payment, result in zip(due, await query_many(due), strict=True):
        outcome = await record_query_result(session, payment, result, now)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def keep_open_if_paid(session: AsyncSession, order: SalesOrder) -> bool:
    """Pre-close check: ask the providers one last time; True keeps the order open (it was
    paid and is now applied, money arrived in a wrong amount, the buyer is paying right now, or
    a provider could not answer)."""
    payments = await repository.payments_of_order(session, order.id)
    if any(p.state in ("paid", "mismatch") for p in payments):
        return True
    pending = [p for p in payments if p.state == "pending"]
    if not pending:
        return False
    now = clock.now()
    keep = False
    for payment, result in zip(pending, await query_many(pending), strict=True):
        outcome = await record_query_result(session, payment, result, now, final=True)
        if outcome in ("paid", "duplicate", "amount_mismatch", "double_payment"):
            keep = True
        elif outcome == "error":
            deadline = clock.as_utc(order.payment_deadline_at or now)
            keep = keep or now - deadline < QUERY_GIVE_UP_AFTER
        elif isinstance(result, QueryResult) and result.trade_state == "USERPAYING":
            keep = True
    return keep


def register_checks() -> None:
    """Hook the last query into the order timeout."""
    orders_service.register_pre_close_check(keep_open_if_paid)


# --- manual recovery (补单) -------------------------------------------------------------------


async def request_manual(
    session: AsyncSession,
    order_no: str,
    *,
    reference: str,
    amount: Decimal | str,
    paid_at: datetime,
    reason: str,
    requested_by: str,
) -> ManualPayment:
    """Finance vouches for a payment with evidence; it waits for a second person."""
    order = await orders_service.get_order(session, order_no)
    if order.status not in (Status.PENDING_PAYMENT, Status.CLOSED):
        raise OrderNotPayable(f"order {order_no} is {order.status}", order_status=order.status)
    amount_minor = money.to_minor(amount, order.currency)
    if amount_minor != order.total_minor:
        raise ManualAmountMismatch(
            f"{amount} {order.currency} is not the order total "
            f"{money.format_minor(order.total_minor, order.currency)}",
            field="amount",
        )
    if await repository.pending_manual_for_order(session, order.id) is not None:
        raise Conflict(f"order {order_no} already has a manual payment awaiting approval")
    now = clock.now()
    manual_id = await repository.insert_manual(
        session,
        {
            "order_id": order.id,
            "order_no": order.order_no,
            "amount_minor": amount_minor,
            "currency": order.currency,
            "reference": reference,
            "paid_at": paid_at,
            "reason": reason,
            "state": "pending_approval",
            "requested_by": requested_by,
            "requested_at": now,
        },
    )
    manual = await repository.get_manual(session, manual_id)
    assert manual is not None
    return manual


async def manual_for_decision(
    session: AsyncSession, manual_id: int, decided_by: str
) -> tuple[ManualPayment, list[Payment]]:
    """A pending request a second person may decide, and the attempts worth querying first."""
    manual = await repository.get_manual(session, manual_id)
    if manual is None:
        raise ManualPaymentNotFound(f"manual payment {manual_id} does not exist")
    if manual.state != "pending_approval":
        raise ManualPaymentNotPending(f"manual payment {manual_id} is {manual.state}")
    if manual.requested_by == decided_by:
        raise SameApprover(f"{decided_by} requested manual payment {manual_id}")
    payments = await repository.payments_of_order(session, manual.order_id)
    queryable = [p for p in payments if p.state == "pending" and provider_config(p.provider)]
    return manual, queryable


async def approve_manual(
    session: AsyncSession,
    manual_id: int,
    approved_by: str,
    queried: list[tuple[Payment, QueryResult | Exception]],
) -> ManualPayment:
    """Second person's approval: apply what the providers said first; if the order is still
    unpaid, mark it paid on the evidence, with both people in the audit trail."""
    manual, _ = await manual_for_decision(session, manual_id, approved_by)
    now = clock.now()
    answers = []
    for payment, result in queried:
        outcome = await record_query_result(session, payment, result, now)
        answers.append(f"{payment.out_trade_no}: {outcome}")
    query_outcome = "; ".join(answers)[:200] or None
    order = await orders_service.get_order(session, manual.order_no)
    if order.status not in (Status.PENDING_PAYMENT, Status.CLOSED):
        await repository.decide_manual(
            session,
            manual.id,
            state="superseded",
            by=approved_by,
            at=now,
            note=f"order already {order.status}",
            query_outcome=query_outcome,
        )
    else:
        actor = Actor(
            ActorKind.FINANCE,
            approved_by,
            evidence_ref=f"manual-payment:{manual.id}:{manual.reference}"[:200],
            note=(
                f"manual payment #{manual.id} requested by {manual.requested_by}, "
                f"approved by {approved_by}: {manual.reason}"
            )[:500],
        )
        name = "payment_succeeded" if order.status == Status.PENDING_PAYMENT else "reopen_paid"
        if find(name) is None:
            raise OrderNotPayable(f"order {order.order_no} is closed; reopening is not enabled")
        await orders_service.transition(session, order.order_no, name, actor)
        if not await repository.decide_manual(
            session,
            manual.id,
            state="approved",
            by=approved_by,
            at=now,
            note=None,
            query_outcome=query_outcome,
        ):
            raise ManualPaymentNotPending(f"manual payment {manual_id} was decided meanwhile")
    fresh = await repository.get_manual(session, manual.id)
    assert fresh is not None
    return fresh


async def reject_manual(
    session: AsyncSession, manual_id: int, rejected_by: str, note: str
) -> ManualPayment:
    """Second person's refusal (the requester cannot decide their own request)."""
    manual, _ = await manual_for_decision(session, manual_id, rejected_by)
    if not await repository.decide_manual(
        session,
        manual.id,
        state="rejected",
        by=rejected_by,
        at=clock.now(),
        note=note,
        query_outcome=None,
    ):
        raise ManualPaymentNotPending(f"manual payment {manual_id} was decided meanwhile")
    fresh = await repository.get_manual(session, manual.id)
    assert fresh is not None
    return fresh


# --- housekeeping ----------------------------------------------------------------------------


async def purge_nonces(session: AsyncSession, now: datetime) -> int:
    """Forget nonces past the replay window."""
    return await repository.purge_nonces(session, now)


async def count_overdue_queries(session: AsyncSession, before: datetime) -> int:
    """Attempts whose active query has been due since before a moment."""
    return await repository.count_overdue_queries(session, before)


async def inbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Notifications stored but not yet applied, and the oldest one's arrival."""
    return await repository.inbox_backlog(session)
