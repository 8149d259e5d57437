"""Order review (审单): a paid order passes the auto-review strategy at once, or waits in review
(a blocking `order_review` case listing the reasons) for customer service, and then finance
when a rule asked for it, to pass it. With the strategy "pass_all" (the default) nothing here
runs and paid orders allocate as before.

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
from ordertally.orders import repository
from ordertally.orders.errors import OrderNotFound
from ordertally.orders.models import SalesOrder

CS_CASE = "order_review"
FINANCE_CASE = "order_review_finance"
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
    just became paid: those it does not pass get an `order_review` hold with their reasons.
    Returns the held order ids."""
    for check in PAID_CHECKS:
        await check(session, orders)
    return await review_new_paid(session, [o.id for o in orders])


async def review_new_paid(session: AsyncSession, order_ids: list[int]) -> list[int]:
    """`review_paid` by order id: orders created paid (platform imports) too."""
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


async def pass_review(session: AsyncSession, order_no: str, role: str, by: str) -> str:
    """Pass an order's review stage (cs, then finance when a rule asked); returns the stage
    the order is at now ("finance" or "passed"). Forbidden for a role of the other stage."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    case = await _review_case(session, order.id)
    if case is None:
        raise Conflict(f"order {order_no} is not waiting in review")
    roles = CS_ROLES if case.type == CS_CASE else FINANCE_ROLES
    if role not in roles:
        raise Forbidden(f"the {case.type} stage is passed by {', '.join(sorted(roles))}")
    await exceptions_service.resolve(session, case.id, by, "review passed")
    # The reviewer decides on the rules' holds too: cs on theirs, finance on its own.
    for other in await exceptions_service.open_cases(session, order.id):
        rule_hold = other.type.startswith("rule.") and other.blocking
        if rule_hold and (other.type == FINANCE_REQUEST) == (case.type == FINANCE_CASE):
            await exceptions_service.resolve(session, other.id, by, f"passed in {case.type}")
    if case.type == CS_CASE and case.detail.get("finance"):
        await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="review",
            type=FINANCE_CASE,
            blocking=True,
            detail={"order_no": order.order_no, "reasons": ["finance_review_requested"]},
        )
        return "finance"
    return "passed"


async def queue(session: AsyncSession, stage: str, limit: int) -> list[dict[str, Any]]:
    """Orders waiting in review at a stage ("cs" or "finance"), oldest first, with reasons."""
    case_type = CS_CASE if stage == "cs" else FINANCE_CASE
    out = []
    for order_id in sorted(await exceptions_service.orders_with_open_case(session, case_type)):
        case = await _review_case(session, order_id)
        order = await repository.get_by_id(session, order_id)
        if case is None or order is None:
            continue
        out.append(
            {
                "order_no": order.order_no,
                "status": order.status,
                "stage": stage,
                "reasons": case.detail.get("reasons", []),
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
        passed += 1
    return passed
