"""Manual recovery of a payment (补单) by two people: finance vouches for a payment with
evidence, a second finance user approves (after the providers were asked, outside any
transaction, by the caller) or rejects it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, money
from ordertally.core.errors import Conflict
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Status, find
from ordertally.payments import repository
from ordertally.payments.compensation import record_query_result
from ordertally.payments.errors import (
    ManualAmountMismatch,
    ManualPaymentNotFound,
    ManualPaymentNotPending,
    OrderNotPayable,
    SameApprover,
)
from ordertally.payments.gateway import provider_config
from ordertally.payments.models import ManualPayment, Payment
from ordertally.payments.providers import QueryResult
from ordertally.payments.state_machine import APPROVE, OPENED, REJECT, SUPERSEDE, ManualState


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
            "state": ManualState.PENDING_APPROVAL.value,
            "requested_by": requested_by,
            "requested_at": now,
        },
    )
    manual = await repository.get_manual(session, manual_id)
    assert manual is not None
    return manual


async def list_manual(
    session: AsyncSession,
    state: str | None = ManualState.PENDING_APPROVAL.value,
    *,
    limit: int = 100,
    before_id: int | None = None,
) -> list[ManualPayment]:
    """Manual payment requests, newest first (by default those awaiting a second person)."""
    return await repository.manual_requests(session, state, limit, before_id)


async def get_manual(session: AsyncSession, manual_id: int) -> ManualPayment:
    """A manual payment request by id (ManualPaymentNotFound)."""
    manual = await repository.get_manual(session, manual_id)
    if manual is None:
        raise ManualPaymentNotFound(f"manual payment {manual_id} does not exist")
    return manual


async def manual_for_decision(
    session: AsyncSession, manual_id: int, decided_by: str
) -> tuple[ManualPayment, list[Payment]]:
    """A pending request a second person may decide, and the attempts worth querying first."""
    manual = await repository.get_manual(session, manual_id)
    if manual is None:
        raise ManualPaymentNotFound(f"manual payment {manual_id} does not exist")
    if manual.state != ManualState.PENDING_APPROVAL:
        raise ManualPaymentNotPending(f"manual payment {manual_id} is {manual.state}")
    if manual.requested_by == decided_by:
        raise SameApprover(f"{decided_by} requested manual payment {manual_id}")
    payments = await repository.payments_of_order(session, manual.order_id)
    queryable = [p for p in payments if p.state == OPENED and provider_config(p.provider)]
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
            move=SUPERSEDE,
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
            move=APPROVE,
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
        move=REJECT,
        by=rejected_by,
        at=clock.now(),
        note=note,
        query_outcome=None,
    ):
        raise ManualPaymentNotPending(f"manual payment {manual_id} was decided meanwhile")
    fresh = await repository.get_manual(session, manual.id)
    assert fresh is not None
    return fresh
