"""Holds on orders: lifting one is an order use case, because lifting a stock-shortage hold
must leave the order with its stock reserved (the exceptions domain only stores the cases).

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.errors import Conflict
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.errors import StillShort
from ordertally.exceptions.models import ACTIVE, ExceptionCase
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.orders import repository
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Status

STOCK_SHORTAGE = "stock_shortage"
# Statuses whose units must be committed (payment arrived, not yet shipped).
_COMMITTED = frozenset({Status.PAID.value, Status.ALLOCATED.value})


async def resolve_case(
    session: AsyncSession,
    case_id: int,
    by: str,
    resolution: str,
    *,
    code: str | None = None,
    source_ip: str | None = None,
) -> ExceptionCase:
    """Resolve an open case; a stock-shortage hold first reserves the order's missing units
    again, or is refused (StillShort) and stays open when the stock is still not there."""
    case = await exceptions_service.get_case(session, case_id)
    if case.type == STOCK_SHORTAGE and case.order_id is not None:
        if case.status not in ACTIVE:
            raise Conflict(f"exception case {case_id} is not open")
        locked = await repository.lock_many(session, [case.order_id])
        if locked:
            await _reserve_again(session, locked[0], case_id)
    return await exceptions_service.resolve(
        session, case_id, by, resolution, code=code, source_ip=source_ip
    )


async def _reserve_again(session: AsyncSession, order: SalesOrder, case_id: int) -> None:
    """Reserve what the order's lines miss: committed once paid, held while awaiting payment.
    Orders in other statuses (closed, shipped...) need no stock; nothing is done for them."""
    lines = [
        inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
        for line in await repository.lines_of(session, order.id)
    ]
    if order.status in _COMMITTED:
        missing = await inventory_service.commit_order(
            session, order.id, lines, order.ship_province
        )
    elif order.status == Status.PENDING_PAYMENT.value:
        missing = await _hold_missing(session, order, lines)
    else:
        return
    if missing:
        raise StillShort(
            "still short of " + ", ".join(sorted(missing)) + ": receive stock first",
            case_id=case_id,
            order_no=order.order_no,
            skus=[{"sku": sku, "missing": units} for sku, units in sorted(missing.items())],
        )


async def _hold_missing(
    session: AsyncSession, order: SalesOrder, lines: list[inventory_service.LineDemand]
) -> dict[str, int]:
    """Hold (until the payment deadline's grace) the units of an unpaid order's lines that no
    live reservation covers; returns what could not be reserved (sku -> units)."""
    by_no = {line.line_id: line.line_no for line in lines}
    view = await inventory_service.order_view(session, order.id, by_no)
    now = clock.now()
    # A bundle line is held as its components: compare per (line, component).
    lines = await inventory_service.expand_lines(session, lines)
    have: dict[tuple[int, str], int] = defaultdict(int)
    for r in view["reservations"]:
        expires = r["expires_at"]
        if r["state"] in ("committed", "consumed") or (
            r["state"] == "held" and (expires is None or clock.as_utc(expires) > now)
        ):
            have[(r["line_no"], r["sku"])] += r["quantity"]
    missing = [
        inventory_service.LineDemand(
            line.line_id, line.line_no, line.sku, line.quantity - have[(line.line_no, line.sku)]
        )
        for line in lines
        if line.quantity > have[(line.line_no, line.sku)]
    ]
    if not missing:
        return {}
    try:
        await inventory_service.reserve_for_order(
            session,
            order_id=order.id,
            lines=missing,
            ship_province=order.ship_province,
            expires_at=inventory_service.reservation_expiry(order.payment_deadline_at),
            new_order=False,
        )
    except InsufficientStock:
        demand: dict[str, int] = defaultdict(int)
        for line in missing:
            demand[line.sku] += line.quantity
        return dict(demand)
    return {}
