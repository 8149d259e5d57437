"""What other domains (after-sales) need of payments to refund through a provider: the
attempt that settled an order, whether a refund is recorded, and recording a refund that an
active query found (applied by the same inbox code as a notification, so once).

Services receive a session and never commit; provider calls live in `gateway`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.payments import repository
from ordertally.payments.apply import apply_notification
from ordertally.payments.inbox import store_notice
from ordertally.payments.models import AFTERSALES_REFUND_PREFIX  # noqa: F401  (re-exported)
from ordertally.payments.providers import Notice, RefundResult
from ordertally.payments.state_machine import PaymentState


@dataclass(frozen=True, slots=True)
class RefundablePayment:
    """The attempt that paid an order, as a refund needs it."""

    provider: str
    out_trade_no: str
    paid_minor: int
    refunded_minor: int
    currency: str


async def refundable_payment(session: AsyncSession, order_id: int) -> RefundablePayment | None:
    """The paid attempt that settled an order (None for orders not paid through ordertally)."""
    for p in await repository.payments_of_order(session, order_id):
        if p.state == PaymentState.PAID and p.settles_order and p.paid_amount_minor:
            return RefundablePayment(
                p.provider, p.out_trade_no, p.paid_amount_minor, p.refunded_minor, p.currency
            )
    return None


async def refund_recorded(session: AsyncSession, provider: str, out_refund_no: str) -> bool:
    """Whether a refund notification (or a query's answer) under this number was applied."""
    return await repository.refund_by_out_refund_no(session, provider, out_refund_no) is not None


async def record_refund_answer(
    session: AsyncSession, out_trade_no: str, result: RefundResult
) -> str:
    """Record a refund the provider confirmed to a query (or to the refund call): stored in the
    inbox and applied like a notification. A refund already recorded (the notification came
    first) is a duplicate; returns the apply outcome."""
    if result.status != "succeeded":
        return "ignored"
    notice = Notice(
        provider=result.provider,
        dedupe_key=f"refund-query:{result.out_refund_no}",
        event_type=f"refund-query:{result.state}"[:40],
        kind="refund",
        out_trade_no=out_trade_no,
        provider_txn_id=result.refund_id,
        trade_state=result.state[:32] or None,
        facts={
            "status": "success",
            "out_refund_no": result.out_refund_no,
            "refund_id": result.refund_id,
            "refund_minor": result.amount_minor,
        },
        headers={},
        body=result.raw,
    )
    notification_id = await store_notice(
        session, notice, source="query", received_at=clock.now(), publish=False
    )
    if notification_id is None:
        return "duplicate"
    return await apply_notification(session, notification_id)
