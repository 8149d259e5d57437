"""After-sales cases: open one (from customer service or a platform record, deduplicated by
the platform's refund id), move it through its state table with an audit row and an outbox
event per change, and read it. Refunds live in `refunds`, goods coming back in `goods`.

Services receive a session and never commit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import repository
from ordertally.aftersales.errors import (
    CaseConflict,
    CaseNotFound,
    IllegalCaseTransition,
    InvalidCase,
    WaitingForStock,
)
from ordertally.aftersales.events import AftersaleRequested, AftersaleStatusChanged
from ordertally.aftersales.models import (
    AftersaleCase,
    AftersaleEvent,
    AftersaleLine,
    AftersaleRefund,
)
from ordertally.aftersales.policy import current as current_policy
from ordertally.aftersales.schemas import CaseCreate
from ordertally.aftersales.state_machine import (
    MOVES_MONEY,
    RETURNS_GOODS,
    CaseStatus,
    CaseType,
    find,
)
from ordertally.catalog import service as catalog_service
from ordertally.core import clock, money
from ordertally.core.crypto import open_body, seal_body
from ordertally.core.db import count_after_commit
from ordertally.events import outbox
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment.errors import ShipmentNotReady
from ordertally.inventory.errors import InsufficientStock
from ordertally.orders import service as orders_service
from ordertally.orders.errors import OrderNotFound
from ordertally.orders.models import OrderLine, SalesOrder

CASES_OPENED = Counter(
    "ordertally_aftersale_cases_total", "After-sales cases opened", ["type", "source"]
)
CASE_TRANSITIONS = Counter(
    "ordertally_aftersale_transitions_total", "After-sales case changes", ["type", "to"]
)

# Order statuses in which each case type may be opened.
_SHIPPED = frozenset({"shipped", "delivered", "completed", "partially_refunded"})
OPENS_FROM: dict[CaseType, frozenset[str]] = {
    CaseType.REFUND_ONLY: frozenset({"paid", "allocated", "fulfilling"}) | _SHIPPED,
    CaseType.RETURN_REFUND: _SHIPPED,
    CaseType.EXCHANGE: _SHIPPED,
    CaseType.RESHIP: _SHIPPED,
    CaseType.REFUSED: frozenset({"shipped", "delivered"}),
}


@dataclass(frozen=True, slots=True)
class LineName:
    """The product name an order line was sold under (its snapshot), in Chinese and English."""

    name: str | None
    name_en: str | None


@dataclass(frozen=True, slots=True)
class CaseView:
    case: AftersaleCase
    lines: list[AftersaleLine]
    events: list[AftersaleEvent]
    # line_no -> the order line's product name snapshot
    names: dict[int, LineName] = field(default_factory=dict)


def new_case_no(at: datetime) -> str:
    """A case number people can read out: AS + date (UTC) + 10 random digits."""
    return f"AS{at:%y%m%d}{secrets.randbelow(10**10):010d}"


async def _order(session: AsyncSession, order_no: str) -> SalesOrder:
    try:
        return await orders_service.get_order(session, order_no)
    except OrderNotFound as exc:
        raise InvalidCase(f"order {order_no} does not exist", field="order_no") from exc


async def open_case(
    session: AsyncSession, cmd: CaseCreate, actor: str, *, channel: str | None = None
) -> tuple[AftersaleCase, bool]:
    """Open a case on an order; returns it and whether it is new (a platform record whose
    refund id is already a case returns that case, unchanged)."""
    order = await _order(session, cmd.order_no)
    channel = channel or order.channel
    if cmd.platform_refund_id:
        known = await repository.existing_platform_ids(session, channel, [cmd.platform_refund_id])
        if known:
            return await _case_by_platform_id(session, order.id, cmd.platform_refund_id), False
    case_type = CaseType(cmd.type)
    check_opens(case_type, order.status)
    check_window(order)
    lines = await _check_lines(session, order, cmd, case_type)
    amounts = case_amounts(cmd, case_type, order)
    now = clock.now()
    values = case_row(cmd, case_type, order, channel, amounts, actor, now)
    case_id = await repository.insert_case(session, values)
    if case_id is None:  # the same platform record, inserted concurrently
        assert cmd.platform_refund_id
        return await _case_by_platform_id(session, order.id, cmd.platform_refund_id), False
    await repository.insert_lines(session, line_rows(case_id, lines))
    await repository.insert_event(session, request_audit(case_id, cmd, actor, now))
    await outbox.publish_rows(session, [requested_event(case_id, values)])
    source = "platform" if cmd.platform_refund_id else "api"
    count_after_commit(session, CASES_OPENED.labels(case_type.value, source).inc)
    case = await repository.get_case(session, case_id)
    assert case is not None
    return case, True


async def _case_by_platform_id(
    session: AsyncSession, order_id: int, platform_refund_id: str
) -> AftersaleCase:
    for case in await repository.cases_of_order(session, order_id):
        if case.platform_refund_id == platform_refund_id:
            return case
    raise InvalidCase(f"platform refund {platform_refund_id} belongs to another order")


# The buyer's own words (personal data): sealed with the PII key, bound to the column and the
# case number; shown in clear only to the roles that handle the case with the buyer.
_MESSAGE_COLUMN = "aftersale_case.buyer_message"
MESSAGE_MASK = "****"


def seal_message(text: str | None, case_no: str) -> str | None:
    """A buyer's message as stored: sealed (None and "" stay as they are)."""
    return seal_body(text, f"{_MESSAGE_COLUMN}:{case_no}") if text else text


def buyer_message(case: AftersaleCase, *, reveal: bool) -> str | None:
    """A case's buyer message for a reader: in clear when `reveal` (the roles that manage
    cases), else masked; a row written before messages were sealed reads as it is."""
    if not case.buyer_message:
        return None
    if not reveal:
        return MESSAGE_MASK
    return open_body(case.buyer_message, f"{_MESSAGE_COLUMN}:{case.case_no}")


def check_opens(case_type: CaseType, order_status: str) -> None:
    """A case type is opened only on orders in some statuses."""
    if order_status not in OPENS_FROM[case_type]:
        raise InvalidCase(
            f"a {case_type} case cannot be opened on an order that is {order_status}",
            order_status=order_status,
        )


def case_row(
    cmd: CaseCreate,
    case_type: CaseType,
    order: SalesOrder,
    channel: str,
    amounts: dict[str, int],
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """The `aftersale_case` row of a case just requested (the buyer's message sealed)."""
    case_no = new_case_no(now)
    return {
        "case_no": case_no,
        "order_id": order.id,
        "order_no": order.order_no,
        "channel": channel,
        "platform_refund_id": cmd.platform_refund_id,
        "type": case_type.value,
        "status": CaseStatus.REQUESTED.value,
        "version": 1,
        "reason_code": cmd.reason_code,
        "responsibility": None,
        "goods_status": cmd.goods_status.value,
        "evidence": list(cmd.evidence),
        "buyer_message": seal_message(cmd.buyer_message, case_no),
        "currency": order.currency,
        **amounts,
        "return_carrier": None,
        "return_waybill_no": None,
        "created_by": actor,
        "created_at": now,
        "updated_at": now,
    }


def line_rows(case_id: int, lines: list[tuple[int, str, int]]) -> list[dict[str, Any]]:
    """The `aftersale_line` rows of a new case ((line_no, sku, quantity) each)."""
    return [
        {
            "case_id": case_id,
            "line_no": no,
            "sku": sku,
            "quantity": qty,
            "received_quantity": 0,
            "restocked_quantity": 0,
            "written_off_quantity": 0,
        }
        for no, sku, qty in lines
    ]


def request_audit(case_id: int, cmd: CaseCreate, actor: str, now: datetime) -> dict[str, Any]:
    """The first audit row of a case (requested)."""
    return {
        "case_id": case_id,
        "version": 1,
        "event": "request",
        "from_status": None,
        "to_status": CaseStatus.REQUESTED.value,
        "actor": actor,
        "detail": {"reason_code": cmd.reason_code},
        "occurred_at": now,
    }


def requested_event(case_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """The `AftersaleRequested` outbox row of a case row just inserted."""
    return outbox.build_row(
        "AftersaleRequested",
        AftersaleRequested(
            case_id=case_id,
            case_no=values["case_no"],
            order_no=values["order_no"],
            channel=values["channel"],
            type=values["type"],
            refund_minor=values["refund_goods_minor"]
            + values["refund_postage_minor"]
            + values["refund_other_minor"],
            currency=values["currency"],
            occurred_at=values["created_at"],
        ),
        aggregate_type="aftersale",
        aggregate_id=values["case_no"],
    )


def step_rows(
    case_id: int,
    case_no: str,
    order_no: str,
    case_type: str,
    name: str,
    from_status: str,
    version: int,
    actor: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit row and the outbox row of one case transition (`version`: the new one)."""
    spec = find(name)
    assert spec is not None
    audit = {
        "case_id": case_id,
        "version": version,
        "event": name,
        "from_status": from_status,
        "to_status": spec.target.value,
        "actor": actor,
        "detail": detail or {},
        "occurred_at": now,
    }
    event = outbox.build_row(
        spec.event_type,
        AftersaleStatusChanged(
            case_id=case_id,
            case_no=case_no,
            order_no=order_no,
            type=case_type,
            transition=name,
            from_status=from_status,
            to_status=spec.target.value,
            version=version,
            actor=actor,
            occurred_at=now,
        ),
        aggregate_type="aftersale",
        aggregate_id=case_no,
    )
    return audit, event


def check_window(order: SalesOrder) -> None:
    """A completed order accepts cases only within its channel's after-sales window."""
    if order.status != "completed":
        return
    days = current_policy().window_days_for(order.channel)
    if (clock.now() - clock.as_utc(order.updated_at)).days >= days:
        raise InvalidCase(
            f"the after-sales window of {days} days after completion has passed",
            window_days=days,
        )


async def _check_lines(
    session: AsyncSession, order: SalesOrder, cmd: CaseCreate, case_type: CaseType
) -> list[tuple[int, str, int]]:
    """(line_no, sku, quantity) of the case's lines, each within what the order has left."""
    ordered = {line.line_no: line for line in await orders_service.lines_of(session, order)}
    return check_lines(
        cmd, case_type, ordered, await repository.returned_quantities(session, order.id)
    )


def check_lines(
    cmd: CaseCreate, case_type: CaseType, ordered: dict[int, OrderLine], taken: dict[int, int]
) -> list[tuple[int, str, int]]:
    """(line_no, sku, quantity) of the case's lines, each within what the order has left
    (`taken`: units per line already asked back by its other cases)."""
    if case_type in RETURNS_GOODS and not cmd.lines:
        raise InvalidCase(f"a {case_type} case names the lines coming back", field="lines")
    if case_type == CaseType.RESHIP and not cmd.lines:
        raise InvalidCase("a reship case names the lines to send again", field="lines")
    seen: set[int] = set()
    out = []
    for item in cmd.lines:
        line = ordered.get(item.line_no)
        if line is None or item.line_no in seen:
            raise InvalidCase(f"line {item.line_no} is not a line of the order", field="lines")
        seen.add(item.line_no)
        left = line.quantity - (taken.get(item.line_no, 0) if case_type != CaseType.RESHIP else 0)
        if item.quantity > left:
            raise InvalidCase(
                f"line {item.line_no}: {item.quantity} asked, {left} left", field="lines"
            )
        out.append((item.line_no, line.sku, item.quantity))
    return out


def case_amounts(cmd: CaseCreate, case_type: CaseType, order: SalesOrder) -> dict[str, int]:
    """The case's refund split (goods / postage / other) in minor units, checked against its
    type and the order's total."""
    amounts = {
        "refund_goods_minor": money.to_minor(cmd.refund_goods, order.currency),
        "refund_postage_minor": money.to_minor(cmd.refund_postage, order.currency),
        "refund_other_minor": money.to_minor(cmd.refund_other, order.currency),
    }
    total = sum(amounts.values())
    if case_type in MOVES_MONEY and total <= 0:
        raise InvalidCase("a refund case needs an amount", field="refund_goods")
    if case_type not in MOVES_MONEY and total:
        raise InvalidCase(f"a {case_type} case refunds nothing", field="refund_goods")
    if total > order.total_minor:
        raise InvalidCase("the refund is more than the order's total", field="refund_goods")
    return amounts


async def get_case(session: AsyncSession, case_no: str) -> AftersaleCase:
    """A case by number, or CaseNotFound."""
    case = await repository.get_case_by_no(session, case_no)
    if case is None:
        raise CaseNotFound(f"after-sales case {case_no} does not exist")
    return case


async def view(session: AsyncSession, case_no: str) -> CaseView:
    """A case with its lines and audit trail."""
    case = await get_case(session, case_no)
    ordered = await orders_service.lines_of_orders(session, [case.order_id])
    return CaseView(
        case,
        await repository.lines_of(session, case.id),
        await repository.events_of(session, case.id),
        {
            line.line_no: LineName(line.sku_name, line.sku_name_en)
            for line in ordered.get(case.order_id, [])
        },
    )


async def list_cases(
    session: AsyncSession, status: str | None = None, case_type: str | None = None, limit: int = 100
) -> list[AftersaleCase]:
    """Cases, newest first."""
    return await repository.list_cases(session, status, case_type, limit)


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """What the after-sales queue is narrowed to (None: any)."""

    status: str | None = None
    type: str | None = None
    channel: str | None = None
    responsibility: str | None = None
    since: datetime | None = None  # created at or after (UTC)
    until: datetime | None = None  # created before (UTC)


async def page_cases(
    session: AsyncSession, wanted: CaseFilter, before_id: int | None, limit: int
) -> tuple[list[AftersaleCase], int | None]:
    """One keyset page of cases, newest first, and the cursor of the next page (None: last)."""
    rows = await repository.page_cases(
        session,
        status=wanted.status,
        case_type=wanted.type,
        channel=wanted.channel,
        responsibility=wanted.responsibility,
        since=wanted.since,
        until=wanted.until,
        before_id=before_id,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def cases_of_order(session: AsyncSession, order_id: int) -> list[AftersaleCase]:
    """An order's cases, oldest first."""
    return await repository.cases_of_order(session, order_id)


async def transition(
    session: AsyncSession,
    case: AftersaleCase,
    name: str,
    actor: str,
    *,
    detail: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> AftersaleCase:
    """Apply one row of the case table as a compare-and-set, with its audit row and event.
    The same step taken twice is a no-op (the case is returned unchanged)."""
    spec = find(name)
    if spec is None:
        raise IllegalCaseTransition(f"{name!r} is not a case transition")
    if CaseType(case.type) not in spec.types:
        raise IllegalCaseTransition(f"a {case.type} case has no {name} step", transition=name)
    for _ in range(3):
        status = CaseStatus(case.status)
        if status not in spec.sources:
            trail = await repository.events_of(session, case.id)
            if case.status == spec.target and trail and trail[-1].event == name:
                return case
            raise IllegalCaseTransition(
                f"cannot {name} a case that is {status}", case_status=status.value, transition=name
            )
        now = clock.now()
        version = case.version
        if await repository.set_status(
            session,
            case.id,
            from_status=status.value,
            version=version,
            to_status=spec.target.value,
            at=now,
            extra=extra or {},
        ):
            audit, event = step_rows(
                case.id,
                case.case_no,
                case.order_no,
                case.type,
                name,
                status.value,
                version + 1,
                actor,
                now,
                detail,
            )
            await repository.insert_event(session, audit)
            await outbox.publish_rows(session, [event])
            count_after_commit(session, CASE_TRANSITIONS.labels(case.type, spec.target.value).inc)
            fresh = await repository.get_case(session, case.id)
            assert fresh is not None
            return fresh
        fresh = await repository.get_case(session, case.id)
        assert fresh is not None
        case = fresh
    raise CaseConflict(f"case {case.case_no} kept changing; try again")


async def approve(
    session: AsyncSession,
    case_no: str,
    actor: str,
    *,
    responsibility: str | None = None,
    note: str | None = None,
) -> AftersaleCase:
    """Approve a case; one whose goods come back then waits for them."""
    case = await get_case(session, case_no)
    extra = {"responsibility": responsibility} if responsibility else {}
    case = await transition(session, case, "approve", actor, detail={"note": note}, extra=extra)
    if CaseType(case.type) in RETURNS_GOODS and case.status == CaseStatus.APPROVED:
        case = await transition(session, case, "await_return", actor)
    return case


async def reject(
    session: AsyncSession, case_no: str, actor: str, *, note: str | None = None
) -> AftersaleCase:
    """Reject a case."""
    case = await get_case(session, case_no)
    return await transition(session, case, "reject", actor, detail={"note": note})


async def set_return_waybill(
    session: AsyncSession, case_no: str, carrier: str, waybill_no: str, actor: str
) -> AftersaleCase:
    """Record the waybill the goods come back under (the buyer's or ours)."""
    case = await get_case(session, case_no)
    if case.status != CaseStatus.AWAITING_RETURN:
        raise IllegalCaseTransition(
            f"a case that is {case.status} waits for no parcel", case_status=case.status
        )
    await repository.update_case(
        session,
        case.id,
        {
            "return_carrier": carrier,
            "return_waybill_no": waybill_no,
            "goods_status": "buyer_returned",
        },
    )
    fresh = await repository.get_case(session, case.id)
    assert fresh is not None
    return fresh


async def close(session: AsyncSession, case_no: str, actor: str) -> AftersaleCase:
    """Close a finished case."""
    case = await get_case(session, case_no)
    return await transition(session, case, "close", actor)


def withdrawal_blocked_by(refunds: list[AftersaleRefund]) -> AftersaleRefund | None:
    """The refund that keeps a case from being withdrawn (one on its way or made), if any: the
    rule the service enforces and the screen offers the step by."""
    return next((r for r in refunds if r.state != "failed"), None)


async def withdraw(session: AsyncSession, case_no: str, actor: str) -> AftersaleCase:
    """Close a case the buyer took back before any money or goods moved (撤销申请): refused
    while a refund of it is on its way to the provider or was made."""
    case = await get_case(session, case_no)
    blocking = withdrawal_blocked_by(await repository.refunds_of_case(session, case.id))
    if blocking is not None and case.status != CaseStatus.CLOSED:
        raise IllegalCaseTransition(
            f"case {case_no} has a refund {blocking.state}: it cannot be withdrawn",
            case_status=case.status,
            transition="withdraw",
        )
    return await transition(session, case, "withdraw", actor)


async def counts(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Cases per (type, status): the gauges and the dashboard."""
    return await repository.counts_by_type_status(session)


async def returns_since(
    session: AsyncSession, order_ids: list[int], since: datetime
) -> dict[int, int]:
    """Return cases opened since a time per order (the customer profile's return count)."""
    return await repository.returns_since(session, order_ids, since)


class _AlreadySent(Exception):
    """Another request took the same step first: undo this one's reservation."""


async def _send_again(
    session: AsyncSession, case_no: str, name: str, actor: str, *, received: bool
) -> AftersaleCase:
    """Take `name` (reship, exchange) with the outbound shipment it stands for: the case's
    units (`received`: those that came back) reserved for the original order and planned as
    replacement shipments, which the warehouse confirms and ships as usual (stock consumed on
    ship). No payment: nothing is charged. Not enough stock changes nothing and answers
    `aftersales.waiting_for_stock` (the case keeps waiting where it is)."""
    case = await get_case(session, case_no)
    spec = find(name)
    assert spec is not None
    if CaseStatus(case.status) not in spec.sources or CaseType(case.type) not in spec.types:
        return await transition(session, case, name, actor)  # a repeat (no-op) or refused
    lines = [
        fulfillment_service.ReplacementLine(
            line.line_no, line.received_quantity if received else line.quantity
        )
        for line in await repository.lines_of(session, case.id)
    ]
    lines = [line for line in lines if line.quantity > 0]
    version, status = case.version, case.status  # `case` is refreshed in place by transition
    if not lines:
        raise InvalidCase(f"case {case_no} has nothing to send", field="lines")
    try:
        async with session.begin_nested():
            shipments = await fulfillment_service.plan_replacement(session, case.order_id, lines)
            moved = await transition(
                session,
                case,
                name,
                actor,
                detail={
                    "order_no": case.order_no,
                    "shipments": [s.id for s in shipments],
                    "lines": [{"line_no": ln.line_no, "quantity": ln.quantity} for ln in lines],
                },
            )
            if moved.version == version:
                raise _AlreadySent
    except _AlreadySent:
        return await get_case(session, case_no)
    except InsufficientStock as exc:
        raise WaitingForStock(
            f"case {case_no} waits for stock: {exc.detail}",
            case_status=status,
            **exc.extra,
        ) from exc
    except ShipmentNotReady as exc:
        raise IllegalCaseTransition(exc.detail, **exc.extra) from exc
    return moved


async def reship(session: AsyncSession, case_no: str, actor: str) -> AftersaleCase:
    """Send an approved reship case's lines again (补发): a replacement shipment of the
    original order, reserved now and consumed when it ships (docs/adr/0035)."""
    return await _send_again(session, case_no, "reship", actor, received=False)


async def exchange(session: AsyncSession, case_no: str, actor: str) -> AftersaleCase:
    """Send an inspected exchange case's replacements (换货): the units that came back, as a
    replacement shipment of the original order (docs/adr/0035)."""
    return await _send_again(session, case_no, "exchange", actor, received=True)


async def inspected_stock_units(session: AsyncSession) -> int:
    """Stocked units the warehouse inspected over all cases (a bundle counts as its
    components): what the ledger's after-sales `return` movements must add up to."""
    by_sku = await repository.inspected_units_by_sku(session)
    bom = await catalog_service.components_of(session, by_sku)
    return sum(catalog_service.expand(by_sku, bom).values())


async def analytics_facts(session: AsyncSession, case_nos: list[str]) -> list[dict[str, Any]]:
    """What analytics keeps of each case (channel, type, currency, responsibility, when its
    audit trail first reached each status, lines, confirmed refunds): registered with
    analytics by this domain's wiring (analytics sits below after-sales and cannot import
    it)."""
    return await repository.analytics_facts(session, case_nos)
