"""Order review (审单): a paid order passes the auto-review strategy at once, or waits in review
(a blocking `order_review` case listing the reasons) for customer service, and then finance
when a rule asked for it, to pass, edit (address, remark, warehouse) or hold it; each decision
is a row of the transition table (`review_pass`, `review_edit`, `review_hold`, paid → paid).
With the strategy "pass_all" (the default) nothing here runs and paid orders allocate as
before.

The strategy (`reasons`) is a pure function of the order's facts; `review_paid` applies it in
the payment transition's transaction (no extra hop for the orders it passes); the
`orders_review_recheck` job passes the orders whose only reasons were time (paid too recently,
outside the window) once time has passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.core.errors import Conflict, Forbidden
from ordertally.core.settings import Settings, get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.orders import contact, repository
from ordertally.orders.errors import OrderNotFound
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind, Event

CS_CASE = "order_review"
FINANCE_CASE = "order_review_finance"
HOLD_CASE = "order_review_hold"  # a reviewer's hold (挂起), beside the review case
FINANCE_REQUEST = "rule.finance_review"  # a rule's hold (pool finance_review) asks for finance
# What other domains run in the transaction that makes orders paid, before the strategy reads
# their open cases: the rules on `order.paid` (rules.consumers adds them), whose holds must be
# open before anything can allocate the orders.
PaidCheck = Callable[[AsyncSession, list[SalesOrder]], Awaitable[object]]
PAID_CHECKS: list[PaidCheck] = []
TIME_REASONS = frozenset({"paid_too_recently", "outside_window"})
CS_ROLES = frozenset({"admin", "ops", "cs"})
FINANCE_ROLES = frozenset({"admin", "finance"})


@dataclass(frozen=True, slots=True)
class ReviewFacts:
    """What the strategy looks at."""

    paid_at: datetime
    lines: list[tuple[str, int, int]]  # sku, quantity, unit price (minor)
    unknown_skus: set[str]
    min_prices: dict[str, int]  # sku -> the catalogue's minimum sale price (minor)
    open_cases: list[tuple[str, bool]]  # type, blocking (the review cases excluded)


def _in_window(window: str, now: datetime, tz: str) -> bool:
    if not window:
        return True
    start_text, _, end_text = window.partition("-")
    start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    local = now.astimezone(ZoneInfo(tz)).time()
    return start <= local < end if start <= end else local >= start or local < end


def reasons(facts: ReviewFacts, now: datetime, settings: Settings) -> list[str]:
    """Why the auto-review strategy does not pass an order (empty: it passes). Pure."""
    out: list[str] = []
    if not _in_window(settings.orders_review_window, now, settings.timezone):
        out.append("outside_window")
    if now - facts.paid_at < timedelta(minutes=settings.orders_review_min_paid_minutes):
        out.append("paid_too_recently")
    if settings.orders_review_max_lines and len(facts.lines) > settings.orders_review_max_lines:
        out.append("too_many_lines")
    quantity = sum(q for _, q, _ in facts.lines)
    if settings.orders_review_max_quantity and quantity > settings.orders_review_max_quantity:
        out.append("too_many_units")
    if {s for s, _, _ in facts.lines} & set(settings.orders_review_excluded_skus):
        out.append("excluded_sku")
    if facts.unknown_skus:
        out.append("unmatched_sku")
    if any(price < facts.min_prices.get(sku, 0) for sku, _, price in facts.lines):
        out.append("below_minimum_price")
    if any(t == "stock_shortage" for t, _ in facts.open_cases):
        out.append("stock_insufficient")
    if any(t.startswith("rule.") for t, _ in facts.open_cases):
        out.append("rule_asks_review")
    if any(b and t != "stock_shortage" and not t.startswith("rule.") for t, b in facts.open_cases):
        out.append("open_blocking_case")
    return out


async def _facts(session: AsyncSession, order: SalesOrder, paid_at: datetime) -> ReviewFacts:
    lines = await repository.lines_of(session, order.id)
    skus = {line.sku for line in lines}
    known = await catalog_service.known_codes(session, skus)
    min_prices: dict[str, int] = {}
    for sku in sorted(known):
        price = (await catalog_service.get_sku(session, sku)).min_price_minor
        if price:
            min_prices[sku] = int(price)
    cases = await exceptions_service.open_cases(session, order.id)
    return ReviewFacts(
        paid_at=paid_at,
        lines=[(line.sku, line.quantity, line.unit_price_minor) for line in lines],
        unknown_skus=skus - known,
        min_prices=min_prices,
        open_cases=[(c.type, c.blocking) for c in cases if c.type not in (CS_CASE, FINANCE_CASE)],
    )


def on_paid(check: PaidCheck) -> None:
    """Run `check` in every transaction that makes orders paid (once, however often added)."""
    if check not in PAID_CHECKS:
        PAID_CHECKS.append(check)


async def review_paid(session: AsyncSession, orders: list[SalesOrder]) -> list[int]:
    """Run the paid checks (the rules on `order.paid`), then apply the strategy to orders that
    just became paid, by a payment or by being created paid (a platform order imported paid):
    those it does not pass get an `order_review` hold with their reasons. Returns the held
    order ids."""
    for check in PAID_CHECKS:
        await check(session, orders)
    return await review_new_paid(session, [o.id for o in orders])


async def review_new_paid(session: AsyncSession, order_ids: list[int]) -> list[int]:
    """The review strategy alone, by order id (`review_paid` runs the paid checks first)."""
    settings = get_settings()
    if settings.orders_review_strategy == "pass_all":
        return []
    now = clock.now()
    held = []
    for order_id in order_ids:
        order = await repository.get_by_id(session, order_id)
        if order is None:
            continue
        facts = await _facts(session, order, now)
        found = reasons(facts, now, settings)
        if not found:
            continue
        finance = any(t == FINANCE_REQUEST for t, _ in facts.open_cases)
        await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="review",
            type=CS_CASE,
            blocking=True,
            detail={
                "order_no": order.order_no,
                "reasons": found,
                "paid_at": now.isoformat(),
                "finance": finance,
            },
        )
        held.append(order.id)
    return held


async def _review_case(session: AsyncSession, order_id: int) -> Any:
    for case in await exceptions_service.open_cases(session, order_id):
        if case.type in (CS_CASE, FINANCE_CASE):
            return case
    return None


async def _hold_case(session: AsyncSession, order_id: int) -> Any:
    for case in await exceptions_service.open_cases(session, order_id):
        if case.type == HOLD_CASE:
            return case
    return None


def _actor(role: str, by: str, source_ip: str | None, note: str) -> Actor:
    kind = ActorKind.FINANCE if role == "finance" else ActorKind.OPERATOR
    return Actor(kind, by[:100], source_ip=source_ip, note=note[:500])


async def _waiting(session: AsyncSession, order_no: str, role: str) -> tuple[SalesOrder, Any]:
    """The order and its review case, when it waits in review at a stage this role works."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    case = await _review_case(session, order.id)
    if case is None:
        raise Conflict(f"order {order_no} is not waiting in review")
    roles = CS_ROLES if case.type == CS_CASE else FINANCE_ROLES
    if role not in roles:
        raise Forbidden(f"the {case.type} stage is worked by {', '.join(sorted(roles))}")
    return order, case


async def _record(session: AsyncSession, order_no: str, event: Event, actor: Actor) -> None:
    # transitions imports this module (the paid effect runs the review): import at call time.
    from ordertally.orders import transitions

    await transitions.transition(session, order_no, event, actor)


async def pass_review(
    session: AsyncSession, order_no: str, role: str, by: str, source_ip: str | None = None
) -> str:
    """Pass an order's review stage (cs, then finance when a rule asked); returns the stage
    the order is at now ("finance" or "passed"). Forbidden for a role of the other stage.
    Passing a held order lifts the hold too. The `review_pass` row of the transition table
    records it."""
    order, case = await _waiting(session, order_no, role)
    await exceptions_service.resolve(session, case.id, by, "review passed")
    hold = await _hold_case(session, order.id)
    if hold is not None:
        await exceptions_service.resolve(session, hold.id, by, "review passed")
    # The reviewer decides on the rules' holds too: cs on theirs, finance on its own.
    for other in await exceptions_service.open_cases(session, order.id):
        rule_hold = other.type.startswith("rule.") and other.blocking
        if rule_hold and (other.type == FINANCE_REQUEST) == (case.type == FINANCE_CASE):
            await exceptions_service.resolve(session, other.id, by, f"passed in {case.type}")
    stage = "passed"
    if case.type == CS_CASE and case.detail.get("finance"):
        await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="review",
            type=FINANCE_CASE,
            blocking=True,
            detail={"order_no": order.order_no, "reasons": ["finance_review_requested"]},
        )
        stage = "finance"
    await _record(
        session, order.order_no, Event.REVIEW_PASS, _actor(role, by, source_ip, case.type)
    )
    return stage


async def hold_review(
    session: AsyncSession,
    order_no: str,
    role: str,
    by: str,
    reason: str,
    source_ip: str | None = None,
) -> int:
    """Hold (挂起) an order waiting in review, with the reason (waiting for the buyer, for
    stock...): a blocking `order_review_hold` case beside the review case; the order stays in
    the queue, marked held, until someone passes it. Returns the hold's case id; Conflict when
    it is held already. The `review_hold` row of the transition table records it."""
    order, case = await _waiting(session, order_no, role)
    if await _hold_case(session, order.id) is not None:
        raise Conflict(f"order {order_no} is held already")
    hold_id = await exceptions_service.open_case(
        session,
        order_id=order.id,
        category="review",
        type=HOLD_CASE,
        blocking=True,
        detail={"order_no": order.order_no, "reason": reason, "stage": case.type, "by": by},
    )
    await _record(session, order.order_no, Event.REVIEW_HOLD, _actor(role, by, source_ip, reason))
    return hold_id


@dataclass(frozen=True, slots=True)
class ReviewEdit:
    """What a reviewer changes on an order waiting in review (None: unchanged)."""

    # name, phone, province, city, district, line1, postal_code
    address: dict[str, str] | None = None
    remark: str | None = None  # "" clears it
    warehouse: str | None = None  # ship from this warehouse alone


async def edit_review(
    session: AsyncSession,
    order_no: str,
    role: str,
    by: str,
    edit: ReviewEdit,
    source_ip: str | None = None,
) -> list[str]:
    """Edit an order waiting in review: its shipping address (encrypted and masked as at
    creation), the seller's remark, the warehouse it ships from (its units move there, or
    InsufficientStock and nothing changes). The order stays in review. Returns the fields
    changed; the `review_edit` row of the transition table records them (names only: no
    personal data in the audit note)."""
    order, _ = await _waiting(session, order_no, role)
    changed = [
        name
        for name, value in (
            ("address", edit.address),
            ("remark", edit.remark),
            ("warehouse", edit.warehouse),
        )
        if value is not None
    ]
    if not changed:
        raise Conflict("nothing to edit: give an address, a remark or a warehouse")
    values: dict[str, Any] = {}  # checked (a phone that is none refused) before any write
    if edit.address is not None:
        values.update(contact.address_columns(edit.address))
    if edit.remark is not None:
        values["remark"] = edit.remark.strip() or None
    # Orders before stock, like every path that moves stock (issue 21).
    from ordertally.orders import transitions

    await transitions.lock_orders_and_stock(session, [order.id])
    await _record(
        session,
        order.order_no,
        Event.REVIEW_EDIT,
        _actor(role, by, source_ip, "edited: " + ", ".join(changed)),
    )
    if values:
        await repository.set_reviewed_fields(session, order.id, values)
    if edit.warehouse is not None:
        lines = [
            inventory_service.LineDemand(line.id, line.line_no, line.sku, line.quantity)
            for line in await repository.lines_of(session, order.id)
        ]
        province = values.get("ship_province", order.ship_province)
        await inventory_service.move_to_warehouse(
            session, order.id, lines, province, edit.warehouse
        )
    return changed


async def queue(session: AsyncSession, stage: str, limit: int) -> list[dict[str, Any]]:
    """Orders waiting in review at a stage ("cs" or "finance"), oldest first, with reasons."""
    case_type = CS_CASE if stage == "cs" else FINANCE_CASE
    out = []
    for order_id in sorted(await exceptions_service.orders_with_open_case(session, case_type)):
        case = await _review_case(session, order_id)
        order = await repository.get_by_id(session, order_id)
        if case is None or order is None:
            continue
        hold = await _hold_case(session, order_id)
        warehouses = await inventory_service.committed_by_warehouse(session, order_id)
        out.append(
            {
                "order_no": order.order_no,
                "status": order.status,
                "stage": stage,
                "reasons": case.detail.get("reasons", []),
                "held": hold.detail.get("reason", "") if hold is not None else None,
                "remark": order.remark,
                "warehouses": sorted(warehouses),
                "case_id": case.id,
                "since": clock.as_utc(case.created_at).isoformat().replace("+00:00", "Z"),
            }
        )
        if len(out) == limit:
            break
    return out


async def recheck(session: AsyncSession, limit: int = 500) -> int:
    """Pass the orders held only for time reasons once the strategy passes them; how many."""
    settings = get_settings()
    if settings.orders_review_strategy == "pass_all":
        return 0
    now = clock.now()
    passed = 0
    for order_id in sorted(await exceptions_service.orders_with_open_case(session, CS_CASE))[
        :limit
    ]:
        case = await _review_case(session, order_id)
        order = await repository.get_by_id(session, order_id)
        if case is None or order is None or case.type != CS_CASE:
            continue
        if not set(case.detail.get("reasons", [])) <= TIME_REASONS:
            continue
        paid_at = datetime.fromisoformat(str(case.detail["paid_at"]))
        if reasons(await _facts(session, order, paid_at), now, settings):
            continue
        await exceptions_service.resolve(session, case.id, "auto-review", "review passed")
        await _record(
            session,
            order.order_no,
            Event.REVIEW_PASS,
            Actor(ActorKind.SCHEDULER, "auto-review", note="time reasons passed"),
        )
        passed += 1
    return passed
