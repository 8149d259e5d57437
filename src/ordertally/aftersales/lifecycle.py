"""The end of an order's life: the scheduler confirms receipt (`delivered → completed`) once
the channel's window after delivery has passed, unless an after-sales case is still open; the
platform (or the buyer) may confirm earlier. Steps of a case past their SLA open an exception
case in the workbench."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import repository
from ordertally.aftersales.policy import DEFAULT_CHANNEL
from ordertally.aftersales.policy import current as current_policy
from ordertally.aftersales.state_machine import OPEN
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind

# The exception case types after-sales opens (the lead registers them in the case registry).
EXCEPTION_CASE_TYPES: tuple[str, ...] = ("aftersale_sla", "aftersale_refund_failed")
SCHEDULER_ID = "aftersales:confirm_receipt"


async def _has_open_case(session: AsyncSession, order_id: int) -> bool:
    return any(c.status in OPEN for c in await repository.cases_of_order(session, order_id))


async def confirm_due_receipts(
    session: AsyncSession, now: datetime, limit: int = 500
) -> dict[str, int]:
    """Complete delivered orders whose channel's confirmation window has passed (orders with an
    open after-sales case wait for it)."""
    policy = current_policy()
    counts = {"completed": 0, "waiting_for_case": 0}
    named = [c for c in policy.confirm_days if c != DEFAULT_CHANNEL]
    for channel, days in sorted(policy.confirm_days.items()):
        before = now - timedelta(days=days)
        order_nos = await orders_service.delivered_before(
            session,
            None if channel == DEFAULT_CHANNEL else channel,
            before,
            exclude=named,
            limit=limit,
        )
        for order_no in order_nos:
            order = await orders_service.get_order(session, order_no)
            if await _has_open_case(session, order.id):
                counts["waiting_for_case"] += 1
                continue
            actor = Actor(
                ActorKind.SCHEDULER, SCHEDULER_ID, note=f"{days} days after delivery ({channel})"
            )
            result = await orders_service.transition(session, order_no, "complete", actor)
            counts["completed"] += int(result.applied)
    return counts


async def confirm_receipt(
    session: AsyncSession, order_no: str, *, by: str, actor_id: str, evidence_ref: str | None
) -> SalesOrder:
    """The platform (`by="platform"`, with the platform's record as evidence) or the buyer
    confirms receipt before the window ends."""
    kind, name = (
        (ActorKind.CHANNEL_SYNC, "confirm_receipt")
        if by == "platform"
        else (ActorKind.BUYER, "complete")
    )
    result = await orders_service.transition(
        session, order_no, name, Actor(kind, actor_id, evidence_ref=evidence_ref)
    )
    return result.order


async def open_sla_cases(session: AsyncSession, now: datetime, limit: int = 200) -> int:
    """Open an exception case for each case that stayed in a step longer than its SLA (once
    per order while the exception case is open)."""
    policy = current_policy()
    already = set(await exceptions_service.orders_with_open_case(session, "aftersale_sla"))
    opened = 0
    for status, hours in sorted(policy.sla_hours.items()):
        for case in await repository.stale_cases(
            session, status, now - timedelta(hours=hours), limit
        ):
            if case.order_id in already:
                continue
            await exceptions_service.open_case(
                session,
                order_id=case.order_id,
                category="aftersales",
                type="aftersale_sla",
                blocking=False,
                detail={
                    "case_no": case.case_no,
                    "case_type": case.type,
                    "status": case.status,
                    "sla_hours": hours,
                },
            )
            already.add(case.order_id)
            opened += 1
    return opened
