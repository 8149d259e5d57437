"""Refunds of after-sales cases, and the order's money they are counted against.

Orders paid through ordertally are refunded through their payment provider in three steps, so
a slow provider never holds a lock or, on SQLite, the single writer: `request_refund` counts
the amount against the order's ledger row (a conditional update: concurrent requests never
pass what was paid) and writes a pending refund; `send_due` claims due refunds in a short
transaction, calls the provider with none open, and records each answer in its own. The
refund number is the provider's idempotency key; a refund whose call failed or timed out is
asked about (query) before it is ever sent again. A refund is confirmed once: by the payment
notification (payments records it under its number) or by the query's answer, recorded
through the same payments inbox. Platform orders record the platform's refund instead.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import repository
from ordertally.aftersales.errors import (
    FinanceApprovalRequired,
    IllegalCaseTransition,
    InvalidCase,
    RefundExceedsPaid,
    ReturnFirst,
)
from ordertally.aftersales.events import AftersaleRefundConfirmed
from ordertally.aftersales.models import AftersaleCase, AftersaleRefund
from ordertally.aftersales.policy import current as current_policy
from ordertally.aftersales.service import get_case, transition
from ordertally.aftersales.state_machine import MOVES_MONEY, RETURNS_GOODS, CaseStatus, CaseType
from ordertally.core import clock, money
from ordertally.core.db import Database, count_after_commit
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.orders import service as orders_service
from ordertally.orders.state_machine import Actor, ActorKind
from ordertally.payments import gateway as payments_gateway
from ordertally.payments import refunds as payments_refunds
from ordertally.payments.providers import ProviderCallFailed, ProviderRefused, RefundResult

log = logging.getLogger(__name__)

REFUNDS = Counter(
    "ordertally_aftersale_refunds_total", "After-sales refunds by outcome", ["source", "outcome"]
)
REFUNDED_MINOR = Counter(
    "ordertally_aftersale_refunded_minor_total", "Refunded amount (minor units)", ["currency"]
)
TIME_TO_REFUND = Histogram(
    "ordertally_aftersale_time_to_refund_seconds",
    "From the refund request to its confirmation",
    buckets=(1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400),
)
_AFTER_SHIPMENT = frozenset({"shipped", "delivered", "completed", "partially_refunded"})
# How long claimed refunds are kept from other workers (beyond the provider's timeout).
LEASE = timedelta(seconds=60)
RETRY_AFTER = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date
    currency: str
    refunds: int
    amount_minor: int


async def request_refund(
    session: AsyncSession, case_no: str, actor: str, *, role: str, amount_minor: int | None = None
) -> AftersaleRefund:
    """Ask for a case's refund (all of what it refunds unless `amount_minor` says less):
    counted against what the order paid, sent to the provider by the refund job."""
    case = await get_case(session, case_no)
    if CaseType(case.type) not in MOVES_MONEY:
        raise InvalidCase(f"a {case.type} case refunds nothing")
    policy = current_policy()
    if case.status in (CaseStatus.REQUESTED, CaseStatus.REJECTED, CaseStatus.CLOSED):
        raise IllegalCaseTransition(
            f"a case that is {case.status} cannot be refunded", case_status=case.status
        )
    if case.status == CaseStatus.AWAITING_RETURN and not policy.refunds_before_return(case.type):
        raise ReturnFirst(f"{case.type} cases are refunded once the warehouse has the goods")
    already = sum(
        r.amount_minor
        for r in await repository.refunds_of_case(session, case.id)
        if r.state != "failed"
    )
    amount = case.refund_minor - already if amount_minor is None else amount_minor
    if amount <= 0 or already + amount > case.refund_minor:
        raise RefundExceedsPaid(
            f"case {case.case_no} refunds {case.refund_minor}, {already} already asked",
            case_refund_minor=case.refund_minor,
            already_minor=already,
        )
    if policy.needs_finance(amount) and role not in ("finance", "admin"):
        raise FinanceApprovalRequired(
            f"refunds above {policy.finance_approval_above_minor} need finance",
            threshold_minor=policy.finance_approval_above_minor,
        )
    payment = await payments_refunds.refundable_payment(session, case.order_id)
    if payment is None:
        raise InvalidCase(
            "the order was not paid through ordertally: record the platform's refund instead"
        )
    now = clock.now()
    await repository.ensure_money(session, case.order_id, payment.currency, payment.paid_minor, now)
    if not await repository.commit_money(session, case.order_id, amount, now):
        ledger = await repository.get_money(session, case.order_id)
        raise RefundExceedsPaid(
            f"order {case.order_no}: refunding {amount} would pass what was paid",
            paid_minor=ledger.paid_minor if ledger else None,
            committed_minor=ledger.committed_minor if ledger else None,
        )
    refund_id = await repository.insert_refund(
        session,
        {
            "case_id": case.id,
            "order_id": case.order_id,
            "order_no": case.order_no,
            "source": "provider",
            "provider": payment.provider,
            "out_trade_no": payment.out_trade_no,
            "paid_total_minor": payment.paid_minor,
            # The case's digits and a random tail: unique even for concurrent requests.
            "out_refund_no": f"{payments_refunds.AFTERSALES_REFUND_PREFIX}{case.case_no[2:]}"
            f"{secrets.randbelow(10**6):06d}",
            "provider_refund_id": None,
            "amount_minor": amount,
            "currency": payment.currency,
            "state": "pending",
            "attempts": 0,
            "next_at": now,
            "last_error": None,
            "created_at": now,
            "sent_at": None,
            "confirmed_at": None,
        },
    )
    refund = await repository.get_refund(session, refund_id)
    assert refund is not None
    return refund


async def record_platform_refund(
    session: AsyncSession, case_no: str, platform_refund_id: str, amount_minor: int, actor: str
) -> tuple[AftersaleRefund, bool]:
    """Record a refund the platform made for a platform order (never sent by us); the same
    platform refund id recorded again is a no-op. Returns the refund and whether it is new."""
    case = await get_case(session, case_no)
    out_refund_no = platform_refund_no(case.channel, platform_refund_id)
    for existing in await repository.refunds_of_case(session, case.id):
        if existing.out_refund_no == out_refund_no:
            return existing, False
    if await repository.platform_refund_exists(session, out_refund_no):
        raise InvalidCase(f"platform refund {platform_refund_id} belongs to another case")
    order = await orders_service.get_order(session, case.order_no)
    now = clock.now()
    await repository.ensure_money(session, case.order_id, order.currency, order.total_minor, now)
    if amount_minor <= 0 or not await repository.commit_money(
        session, case.order_id, amount_minor, now
    ):
        raise RefundExceedsPaid(f"order {case.order_no}: the refund would pass what was paid")
    refund_id = await repository.insert_refund(
        session,
        platform_refund_row(
            (case.id, case.order_id, case.order_no, case.channel),
            order.total_minor,
            order.currency,
            platform_refund_id,
            amount_minor,
            now,
        ),
    )
    refund = await repository.get_refund(session, refund_id)
    assert refund is not None
    await confirm(session, refund, actor)
    fresh = await repository.get_refund(session, refund_id)
    assert fresh is not None
    return fresh, True


async def confirm(session: AsyncSession, refund: AftersaleRefund, actor: str) -> bool:
    """A refund is confirmed (notification, query, or the platform): counted once, the case
    refunded when all its refunds are, the order partially_refunded / refunded after shipment.
    Returns False when it was confirmed before."""
    now = clock.now()
    if not await repository.set_refund(
        session, refund.id, ("pending", "sent"), {"state": "succeeded", "confirmed_at": now}
    ):
        return False
    case = await repository.get_case(session, refund.case_id)
    assert case is not None
    await repository.confirm_money(session, refund.order_id, refund.amount_minor, now)
    await outbox.publish_rows(session, [refund_confirmed_event(refund, case.case_no, now)])
    count_after_commit(session, REFUNDS.labels(refund.source, "succeeded").inc)
    count_after_commit(
        session, lambda: REFUNDED_MINOR.labels(refund.currency).inc(refund.amount_minor)
    )
    waited = (now - clock.as_utc(refund.created_at)).total_seconds()
    count_after_commit(session, lambda: TIME_TO_REFUND.observe(max(waited, 0.0)))
    await settle_case(session, case, actor, refund.out_refund_no)
    await _move_order(session, refund, actor)
    return True


def settles(case_type: str, status: str) -> bool:
    """Whether a case whose refunds are all confirmed moves to refunded now: not while its
    goods are still on their way back (refund first: they still come home)."""
    goods_out = CaseType(case_type) in RETURNS_GOODS and status in (
        CaseStatus.APPROVED,
        CaseStatus.AWAITING_RETURN,
        CaseStatus.RETURNED,
    )
    refundable = status in (
        CaseStatus.APPROVED,
        CaseStatus.AWAITING_RETURN,
        CaseStatus.RETURNED,
        CaseStatus.INSPECTED,
    )
    return refundable and not goods_out


async def settle_case(
    session: AsyncSession, case: AftersaleCase, actor: str, evidence: str | None = None
) -> AftersaleCase:
    """Move a case to refunded once its refunds are all confirmed; a case whose goods come
    back waits for them (refund first: the money went out, the goods still come home)."""
    done = sum(
        r.amount_minor
        for r in await repository.refunds_of_case(session, case.id)
        if r.state == "succeeded"
    )
    if done == 0 or done < case.refund_minor:
        return case
    if not settles(case.type, case.status):
        return case
    return await transition(session, case, "refund", actor, detail={"out_refund_no": evidence})


async def _move_order(session: AsyncSession, refund: AftersaleRefund, actor: str) -> None:
    """After shipment, the order shows what was refunded (through the transition table)."""
    order = await orders_service.get_order(session, refund.order_no)
    if order.status not in _AFTER_SHIPMENT:
        return
    ledger = await repository.get_money(session, refund.order_id)
    assert ledger is not None
    name = order_move(order.status, ledger.refunded_minor, ledger.paid_minor)
    assert name is not None
    await orders_service.transition(session, order.order_no, name, order_actor(refund, actor))


def order_actor(refund: AftersaleRefund, actor: str) -> Actor:
    """Who moves the order when a refund is confirmed, with the refund as evidence."""
    return Actor(
        ActorKind.AFTERSALES,
        actor,
        evidence_ref=refund.provider_refund_id or refund.out_refund_no,
        note=f"{refund.source} refund {refund.out_refund_no}: {refund.amount_minor}",
    )


def order_move(status: str, refunded_minor: int, paid_minor: int) -> str | None:
    """The order's transition once a refund is confirmed (None before shipment)."""
    if status not in _AFTER_SHIPMENT:
        return None
    return "aftersale_refund" if refunded_minor >= paid_minor else "aftersale_partial_refund"


def platform_refund_no(channel: str, platform_refund_id: str) -> str:
    """Our number of a platform's refund: unique per channel."""
    return f"{channel}:{platform_refund_id}"[:64]


def platform_refund_row(
    case: tuple[int, int, str, str],
    order_total_minor: int,
    currency: str,
    platform_refund_id: str,
    amount_minor: int,
    now: datetime,
) -> dict[str, object]:
    """The `aftersale_refund` row of a refund the platform made (sent: it happened) for a case
    given as (case id, order id, order number, channel)."""
    case_id, order_id, order_no, channel = case
    return {
        "case_id": case_id,
        "order_id": order_id,
        "order_no": order_no,
        "source": "platform",
        "provider": channel,
        "out_trade_no": None,
        "paid_total_minor": order_total_minor,
        "out_refund_no": platform_refund_no(channel, platform_refund_id),
        "provider_refund_id": platform_refund_id,
        "amount_minor": amount_minor,
        "currency": currency,
        "state": "sent",
        "attempts": 0,
        "next_at": None,
        "last_error": None,
        "created_at": now,
        "sent_at": now,
        "confirmed_at": None,
    }


def refund_confirmed_event(
    refund: AftersaleRefund, case_no: str, now: datetime
) -> dict[str, object]:
    """The `AftersaleRefundConfirmed` outbox row of a refund."""
    return outbox.build_row(
        "AftersaleRefundConfirmed",
        AftersaleRefundConfirmed(
            refund_id=refund.id,
            case_no=case_no,
            order_no=refund.order_no,
            source=refund.source,
            provider=refund.provider,
            out_refund_no=refund.out_refund_no,
            amount_minor=refund.amount_minor,
            currency=refund.currency,
            occurred_at=now,
        ),
        aggregate_type="aftersale",
        aggregate_id=refund.order_no,
    )


async def fail(session: AsyncSession, refund: AftersaleRefund, reason: str) -> bool:
    """A refund the provider refused or closed: its amount goes back to the order's ledger."""
    now = clock.now()
    if not await repository.set_refund(
        session,
        refund.id,
        ("pending", "sent"),
        {"state": "failed", "last_error": reason[:300], "next_at": None},
    ):
        return False
    await repository.release_money(session, refund.order_id, refund.amount_minor, now)
    count_after_commit(session, REFUNDS.labels(refund.source, "failed").inc)
    return True


# --- the refund job: claim, call with no transaction open, record -------------------------------


async def claim_due(db: Database, now: datetime, limit: int) -> list[AftersaleRefund]:
    """Claim provider refunds due to be sent or asked about (short transaction; SKIP LOCKED
    on PostgreSQL)."""
    until = now + LEASE + timedelta(seconds=get_settings().payment_http_timeout_seconds)
    async with db.transaction() as session:
        return await repository.lease_due_refunds(
            session, now, limit, until, skip_locked=not db.is_sqlite
        )


async def _ask(refund: AftersaleRefund) -> RefundResult | Exception:
    """What the provider says of a refund, or the error asking it."""
    try:
        return await payments_gateway.query_refund_remote(
            refund.provider, refund.out_trade_no or "", refund.out_refund_no
        )
    except (ProviderCallFailed, OSError, ValueError) as exc:
        return exc


async def _send(refund: AftersaleRefund) -> RefundResult | Exception:
    """Send the refund (under its one refund number), or the error sending it."""
    try:
        return await payments_gateway.refund_remote(
            refund.provider,
            refund.out_trade_no or "",
            refund.out_refund_no,
            refund.amount_minor,
            refund.paid_total_minor,
            f"ordertally {refund.order_no}",
        )
    except (ProviderCallFailed, OSError, ValueError) as exc:
        return exc


async def process(db: Database, refund: AftersaleRefund) -> str:
    """Take one claimed refund one step on; returns what happened."""
    # A refund the notification already confirmed needs no call at all.
    async with db.transaction(write=False) as session:
        recorded = await payments_refunds.refund_recorded(
            session, refund.provider, refund.out_refund_no
        )
    if recorded:
        return await _record(db, refund, None, sent=False)
    if refund.state == "pending" and refund.attempts == 0:
        return await _record(db, refund, await _send(refund), sent=True)
    # Sent before, or a call whose answer was lost: ask before ever sending again.
    answer = await _ask(refund)
    lost = isinstance(answer, RefundResult) and answer.status == "not_found"
    if lost and refund.state == "pending":
        return await _record(db, refund, await _send(refund), sent=True)
    return await _record(db, refund, answer, sent=False)


async def _record(
    db: Database, refund: AftersaleRefund, answer: RefundResult | Exception | None, *, sent: bool
) -> str:
    """Record what the provider said, in a short transaction of its own."""
    now = clock.now()
    try:
        async with db.transaction() as session:
            fresh = await repository.get_refund(session, refund.id)
            assert fresh is not None
            if fresh.state in ("succeeded", "failed"):
                return fresh.state
            if answer is None:  # confirmed by the notification
                await confirm(session, fresh, "payments:notify")
                return "succeeded"
            if isinstance(answer, ProviderRefused):
                await fail(session, fresh, str(answer))
                return "failed"
            if isinstance(answer, Exception):
                await repository.set_refund(
                    session,
                    fresh.id,
                    ("pending", "sent"),
                    {
                        "last_error": f"{type(answer).__name__}: {answer}"[:300],
                        "next_at": now + RETRY_AFTER,
                    },
                )
                count_after_commit(session, REFUNDS.labels("provider", "error").inc)
                return "error"
            if answer.status == "succeeded":
                await repository.set_refund(
                    session,
                    fresh.id,
                    ("pending", "sent"),
                    {"provider_refund_id": answer.refund_id, "sent_at": fresh.sent_at or now},
                )
                await payments_refunds.record_refund_answer(
                    session, fresh.out_trade_no or "", answer
                )
                await confirm(session, fresh, f"{fresh.provider}:query")
                return "succeeded"
            if answer.status in ("closed", "abnormal"):
                await fail(session, fresh, f"{fresh.provider} refund {answer.state}")
                return "failed"
            if answer.status == "not_found":
                # Sent and unknown to the provider (it never arrived): send again next round.
                await repository.set_refund(
                    session,
                    fresh.id,
                    ("sent",),
                    {"state": "pending", "next_at": now},
                )
                return "not_found"
            query_after = timedelta(seconds=get_settings().aftersales_refund_query_after_seconds)
            values = {
                "state": "sent",
                "provider_refund_id": answer.refund_id,
                "next_at": now + query_after,
            }
            if sent:
                values["sent_at"] = now
            await repository.set_refund(session, fresh.id, ("pending", "sent"), values)
            return "sent" if sent else "processing"
    except Exception:
        log.exception("the answer about refund %s could not be recorded", refund.out_refund_no)
        return "record_failed"


async def send_due(db: Database, now: datetime, limit: int = 100) -> dict[str, int]:
    """Send due refunds and ask about unconfirmed ones; one short transaction per answer."""
    due = await claim_due(db, now, limit)
    counts: dict[str, int] = {"claimed": len(due)}
    for refund in due:
        outcome = await process(db, refund)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def refunded_per_day(session: AsyncSession, start: datetime, end: datetime) -> list[DayTotal]:
    """Confirmed refunds per UTC day and currency (finance; equal to the refund records)."""
    return [DayTotal(*row) for row in await repository.refunded_by_day(session, start, end)]


async def refunds_of(session: AsyncSession, case: AftersaleCase) -> list[AftersaleRefund]:
    """A case's refunds."""
    return await repository.refunds_of_case(session, case.id)


async def order_money_of(session: AsyncSession, order_no: str) -> dict[str, int | str] | None:
    """An order's paid / committed / refunded amounts as its ledger row holds them, and the sum
    of its refund records (None before its first refund)."""
    order = await orders_service.get_order(session, order_no)
    row = await repository.get_money(session, order.id)
    if row is None:
        return None
    return {
        "currency": row.currency,
        "paid_minor": row.paid_minor,
        "committed_minor": row.committed_minor,
        "refunded_minor": row.refunded_minor,
        "refund_records_minor": await repository.refunded_of_order(session, order.id),
    }


def parse_amount(amount: str, currency: str) -> int:
    """An amount from the API in minor units."""
    return money.to_minor(amount, currency)
