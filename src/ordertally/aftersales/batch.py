"""A page of platform after-sale records applied in a fixed number of statements.

The per-record path (`platforms.ingest_each`: open → approve → record the platform refund →
confirm → settle → move the order, one savepoint per record) costs ~33 statements a record.
Here a page reads what it needs once (its orders, locked in id order; the refund ids already
cases; the orders' lines, units already asked back and refund ledger rows, locked; the refund
numbers already recorded), decides every record in Python in the order they came, with the
same checks as the per-record path (`service.check_*`, `refunds.settles`, `refunds.order_move`)
and the page's earlier records counted, then writes each table once: cases, lines, audit rows,
ledger rows, refunds, outbox rows, and the orders' transitions through `orders.service.
transition_many` (one call per round when an order takes several refunds in the page).

The result is what the per-record path would write for the same stream (tested:
tests/aftersales/test_batch.py). A record that fails a check is refused with its reason and
does not block the others. Exactly once: the orders are locked first, so two batches of the
same page queue and the second finds every refund id a case; the unique (channel, refund id)
index still decides, and anything written meanwhile by another path (a case, a ledger row)
makes the page raise `PageConflict`: the caller rolls the page's savepoint back and applies it
record by record.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import refunds, repository, service
from ordertally.aftersales.errors import AftersaleError, InvalidCase, RefundExceedsPaid
from ordertally.aftersales.models import AftersaleCase, AftersaleRefund
from ordertally.aftersales.schemas import CaseCreate, CaseLineIn
from ordertally.aftersales.state_machine import RETURNS_GOODS, CaseStatus, CaseType
from ordertally.aftersales.state_machine import find as find_case_transition
from ordertally.core import clock, money
from ordertally.core.db import count_after_commit
from ordertally.events import outbox
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderLine, SalesOrder
from ordertally.orders.state_machine import Actor
from ordertally.orders.state_machine import find as find_order_transition

if TYPE_CHECKING:
    from ordertally.aftersales.platforms import PlatformRecord

# Case types whose lines count as asked back (`repository.returned_quantities`).
_ASKED_BACK = frozenset({CaseType.RETURN_REFUND, CaseType.REFUSED, CaseType.REFUND_ONLY})

CREATED, DUPLICATE, UNKNOWN_ORDER, REFUSED = "created", "duplicate", "unknown_order", "refused"


class PageConflict(Exception):
    """Another writer changed part of the page meanwhile: apply it record by record."""


@dataclass(slots=True)
class _OrderState:
    """An order as the page's records so far leave it."""

    order: SalesOrder
    lines: dict[int, OrderLine]
    status: str
    taken: dict[int, int]
    money: tuple[int, int, int] | None  # paid, committed, refunded (None: no ledger row yet)
    money_new: bool = False
    added: tuple[int, int] = (0, 0)  # committed, refunded added by the page
    moves: list[tuple[str, Actor]] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """One record the page will write as a case."""

    record: PlatformRecord
    state: _OrderState
    cmd: CaseCreate
    values: dict[str, Any]
    lines: list[tuple[int, str, int]]
    steps: list[tuple[str, str, dict[str, Any]]]  # (transition, from status, detail)
    refund_no: str | None


def case_command(
    record: PlatformRecord, order: SalesOrder, order_lines: Iterable[OrderLine]
) -> CaseCreate:
    """The case a platform record asks for on its order: its SKUs mapped to the order's lines
    (at most what a line holds); a record none of whose SKUs the order has is a refund only."""
    by_sku = {line.sku: line for line in order_lines}
    lines = []
    for sku, units in sorted(record.skus.items()):
        line = by_sku.get(sku)
        if line is not None:
            lines.append(CaseLineIn(line_no=line.line_no, quantity=min(units, line.quantity)))
    case_type = (
        record.type if lines or record.type == CaseType.REFUND_ONLY else CaseType.REFUND_ONLY
    )
    return CaseCreate(
        order_no=order.order_no,
        type=case_type,
        reason_code=record.reason_code,
        lines=lines,
        refund_goods=str(
            money.from_minor(
                record.amount_minor if record.asked_minor is None else record.asked_minor,
                order.currency,
            )
        ),
        platform_refund_id=record.platform_refund_id,
    )


def _decide(
    record: PlatformRecord, state: _OrderState, recorded: set[str], actor: str, now: Any
) -> _Plan:
    """Check one record against its order as the page leaves it (the per-record path's checks,
    in its order); raise its refusal, or count it and return what to write."""
    cmd = case_command(record, state.order, state.lines.values())
    case_type = CaseType(cmd.type)
    service.check_opens(case_type, state.status)
    service.check_window(state.order)
    lines = service.check_lines(cmd, case_type, state.lines, state.taken)
    amounts = service.case_amounts(cmd, case_type, state.order)
    values = service.case_row(cmd, case_type, state.order, record.channel, amounts, actor, now)
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("approve", CaseStatus.REQUESTED.value, {"note": None})
    ]
    status = CaseStatus.APPROVED.value
    if case_type in RETURNS_GOODS:
        steps.append(("await_return", status, {}))
        status = CaseStatus.AWAITING_RETURN.value
    refund_no = None
    paid, committed, _ = state.money or (state.order.total_minor, 0, 0)
    if record.amount_minor > 0:
        refund_no = refunds.platform_refund_no(record.channel, record.platform_refund_id)
        if refund_no in recorded:
            raise InvalidCase(
                f"platform refund {record.platform_refund_id} belongs to another case"
            )
        if committed + record.amount_minor > paid:
            raise RefundExceedsPaid(
                f"order {state.order.order_no}: the refund would pass what was paid"
            )
        if record.amount_minor >= sum(amounts.values()) and refunds.settles(
            case_type.value, status
        ):
            steps.append(("refund", status, {"out_refund_no": refund_no}))
            status = CaseStatus.REFUNDED.value
    # Accepted: count it on the order for the page's next records.
    if case_type in _ASKED_BACK:
        for no, _, qty in lines:
            state.taken[no] = state.taken.get(no, 0) + qty
    if refund_no is not None:
        recorded.add(refund_no)
        _take_refund(state, record, refund_no, actor)
    values["status"] = status
    values["version"] = 1 + len(steps)
    values["updated_at"] = now
    return _Plan(record, state, cmd, values, lines, steps, refund_no)


def _take_refund(state: _OrderState, record: PlatformRecord, refund_no: str, actor: str) -> None:
    """Count a platform refund on its order as the page leaves it: the ledger's committed and
    refunded amounts, and the order's refund move after shipment."""
    paid, committed, refunded = state.money or (state.order.total_minor, 0, 0)
    amount = record.amount_minor
    if state.money is None:
        state.money_new = True
    state.money = (paid, committed + amount, refunded + amount)
    state.added = (state.added[0] + amount, state.added[1] + amount)
    move = refunds.order_move(state.status, refunded + amount, paid)
    if move is not None:
        spec = find_order_transition(move)
        assert spec is not None
        state.status = spec.target.value
        refund = AftersaleRefund(
            source="platform",
            out_refund_no=refund_no,
            provider_refund_id=record.platform_refund_id,
            amount_minor=amount,
        )
        state.moves.append((move, refunds.order_actor(refund, actor)))


def by_refund_id(records: list[PlatformRecord]) -> tuple[dict[str, PlatformRecord], int]:
    """The records by platform refund id (the first of each) and how many repeat one."""
    unique: dict[str, PlatformRecord] = {}
    for record in records:
        unique.setdefault(record.platform_refund_id, record)
    return unique, len(records) - len(unique)


@dataclass(slots=True)
class PageResult:
    """What each distinct refund id of the page came to: (outcome, reason)."""

    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    repeats: int = 0  # records repeating a refund id earlier in the page


async def apply_page(
    session: AsyncSession, records: list[PlatformRecord], actor: str
) -> PageResult:
    """Apply a page of one channel's records (see the module's docstring). Raises
    `PageConflict` when another writer got in between; the caller's savepoint then rolls
    everything back."""
    result = PageResult()
    if not records:
        return result
    channel = records[0].channel
    unique, result.repeats = by_refund_id(records)
    # Refund ids already cases need nothing more (a page read again costs one query)...
    known = await repository.existing_platform_ids(session, channel, list(unique))
    found = await orders_service.by_external_ids(
        session,
        channel,
        sorted({r.external_order_id for pid, r in unique.items() if pid not in known}),
    )
    if found:
        # ...the others' orders are locked (id order): a second batch of the same page waits
        # here, then sees the first one's cases when it asks again.
        orders = {
            o.id: o
            for o in await orders_service.lock_orders(session, [oid for oid, _ in found.values()])
        }
        known |= await repository.existing_platform_ids(
            session, channel, [pid for pid in unique if pid not in known]
        )
    fresh: list[PlatformRecord] = []
    for pid, record in unique.items():
        if pid in known:
            result.outcomes[pid] = (DUPLICATE, None)
        elif record.external_order_id not in found:
            result.outcomes[pid] = (
                UNKNOWN_ORDER,
                f"no {channel} order {record.external_order_id}",
            )
        else:
            fresh.append(record)
    if not fresh:
        return result
    ids = sorted({found[r.external_order_id][0] for r in fresh})
    lines = await orders_service.lines_of_orders(session, ids)
    taken = await repository.returned_quantities_many(session, ids)
    ledger = await repository.lock_money_many(
        session, sorted({found[r.external_order_id][0] for r in fresh if r.amount_minor > 0})
    )
    recorded = await repository.existing_refund_nos(
        session,
        [
            refunds.platform_refund_no(channel, r.platform_refund_id)
            for r in fresh
            if r.amount_minor > 0
        ],
    )
    states = {
        oid: _OrderState(
            orders[oid],
            {line.line_no: line for line in lines.get(oid, [])},
            orders[oid].status,
            dict(taken.get(oid, {})),
            ledger.get(oid),
        )
        for oid in ids
    }
    now = clock.now()
    plans: list[_Plan] = []
    for record in fresh:
        state = states[found[record.external_order_id][0]]
        try:
            plans.append(_decide(record, state, recorded, actor, now))
        except AftersaleError as exc:
            result.outcomes[record.platform_refund_id] = (REFUSED, exc.detail)
        except ValidationError as exc:
            result.outcomes[record.platform_refund_id] = (REFUSED, f"invalid record: {exc}"[:300])
    if plans:
        await _write(session, plans, [s for s in states.values()], actor, now)
    for plan in plans:
        result.outcomes[plan.record.platform_refund_id] = (CREATED, None)
    return result


async def _write(
    session: AsyncSession,
    plans: list[_Plan],
    states: list[_OrderState],
    actor: str,
    now: Any,
) -> None:
    """Write the page's decisions, one statement per table (and per round of order moves)."""
    # Sorted by refund id: two writers of overlapping pages take the index entries in one order.
    plans = sorted(plans, key=lambda p: p.record.platform_refund_id)
    case_ids = await repository.insert_cases_many(session, [p.values for p in plans])
    if len(case_ids) != len(plans):
        raise PageConflict("a refund id of the page became a case meanwhile")
    line_rows: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    refund_rows: list[dict[str, Any]] = []
    opened: Tally[str] = Tally()
    moved: Tally[tuple[str, str]] = Tally()
    for plan in plans:
        case_id = case_ids[plan.record.platform_refund_id]
        values = plan.values
        line_rows += service.line_rows(case_id, plan.lines)
        audit.append(service.request_audit(case_id, plan.cmd, actor, now))
        events.append(service.requested_event(case_id, values))
        opened[values["type"]] += 1
        for index, (name, _, _) in enumerate(plan.steps):
            if name != "refund":  # that one after the refund's confirmation, as per record
                row, event = _step_rows(plan, case_id, index, actor, now)
                audit.append(row)
                events.append(event)
        if plan.refund_no is not None:
            order = plan.state.order
            row = refunds.platform_refund_row(
                (case_id, order.id, order.order_no, plan.record.channel),
                order.total_minor,
                order.currency,
                plan.record.platform_refund_id,
                plan.record.amount_minor,
                now,
            )
            refund_rows.append({**row, "state": "succeeded", "confirmed_at": now})
        for name, _, _ in plan.steps:
            moved[(values["type"], _target(name))] += 1
    await repository.insert_lines(session, line_rows)
    refund_ids = await repository.insert_refunds_many(session, refund_rows)
    # The refunds' confirmations, then the cases they settle, in each case's order.
    for plan in plans:
        if plan.refund_no is None:
            continue
        case_id = case_ids[plan.record.platform_refund_id]
        values = plan.values
        refund = AftersaleRefund(
            id=refund_ids[plan.refund_no],
            order_no=values["order_no"],
            source="platform",
            provider=plan.record.channel,
            out_refund_no=plan.refund_no,
            amount_minor=plan.record.amount_minor,
            currency=values["currency"],
        )
        events.append(refunds.refund_confirmed_event(refund, values["case_no"], now))
        if plan.steps[-1][0] == "refund":
            row, event = _step_rows(plan, case_id, len(plan.steps) - 1, actor, now)
            audit.append(row)
            events.append(event)
    await repository.insert_events(session, audit)
    await outbox.publish_rows(session, events)
    await _write_money(session, states, now)
    await _move_orders(session, states)
    _count(session, plans, opened, moved, now)


def _step_rows(
    plan: _Plan, case_id: int, index: int, actor: str, now: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit and outbox rows of a planned case's step `index` (version index + 2)."""
    name, from_status, detail = plan.steps[index]
    values = plan.values
    return service.step_rows(
        case_id,
        values["case_no"],
        values["order_no"],
        values["type"],
        name,
        from_status,
        index + 2,
        actor,
        now,
        detail,
    )


def _target(name: str) -> str:
    spec = find_case_transition(name)
    assert spec is not None
    return spec.target.value


async def _write_money(session: AsyncSession, states: list[_OrderState], now: Any) -> None:
    """New ledger rows with the page's refunds counted, and the others' increments (their
    rows are locked; the table's check keeps committed within paid in any case)."""
    new_rows = [
        {
            "order_id": s.order.id,
            "currency": s.order.currency,
            "paid_minor": s.money[0],
            "committed_minor": s.money[1],
            "refunded_minor": s.money[2],
            "updated_at": now,
        }
        for s in states
        if s.money_new and s.money is not None
    ]
    added = await repository.insert_money_many(session, new_rows)
    if len(added) != len(new_rows):
        raise PageConflict("an order's refund ledger row appeared meanwhile")
    await repository.add_money_many(
        session,
        [
            {"oid": s.order.id, "add_committed": s.added[0], "add_refunded": s.added[1], "at": now}
            for s in states
            if not s.money_new and s.added != (0, 0)
        ],
    )


async def _move_orders(session: AsyncSession, states: list[_OrderState]) -> None:
    """The orders' refund transitions: round k moves every order's k-th, grouped by name."""
    # The ids first: `transition_many` expires the orders it moves.
    moves = [(s.order.id, s.moves) for s in states if s.moves]
    for k in range(max((len(m) for _, m in moves), default=0)):
        by_name: dict[str, dict[int, Actor]] = {}
        for order_id, steps in moves:
            if len(steps) > k:
                name, who = steps[k]
                by_name.setdefault(name, {})[order_id] = who
        for name, actors in sorted(by_name.items()):
            done = await orders_service.transition_many(session, sorted(actors), name, actors)
            if done != set(actors):
                raise PageConflict(f"an order moved meanwhile ({name})")


def _count(
    session: AsyncSession,
    plans: list[_Plan],
    opened: Tally[str],
    moved: Tally[tuple[str, str]],
    now: Any,
) -> None:
    """The per-record path's metrics, counted once the page commits."""
    refunded: Tally[str] = Tally()
    for plan in plans:
        if plan.refund_no is not None:
            refunded[plan.values["currency"]] += plan.record.amount_minor
    n_refunds = sum(1 for p in plans if p.refund_no is not None)

    def count() -> None:
        for case_type, n in opened.items():
            service.CASES_OPENED.labels(case_type, "platform").inc(n)
        for (case_type, to), n in moved.items():
            service.CASE_TRANSITIONS.labels(case_type, to).inc(n)
        if n_refunds:
            refunds.REFUNDS.labels("platform", "succeeded").inc(n_refunds)
        for currency, amount in refunded.items():
            refunds.REFUNDED_MINOR.labels(currency).inc(amount)
        for _ in range(n_refunds):
            refunds.TIME_TO_REFUND.observe(0.0)

    count_after_commit(session, count)


async def refund_cases(
    session: AsyncSession,
    channel: str,
    items: list[tuple[PlatformRecord, AftersaleCase]],
    actor: str,
) -> PageResult:
    """The platform's refund of each record recorded on the case its refund id already is (a
    later "refunded" stage), in a fixed number of statements plus one compare-and-set per case
    it settles: what `refunds.record_platform_refund` writes per record (the refund, its
    confirmation, the ledger, the case refunded when the refund covers it, the order after
    shipment). Each record's refund must cover its case's amount (the caller sends the others
    record by record). Raises `PageConflict` when another writer got in between."""
    result = PageResult()
    numbers = {
        r.platform_refund_id: refunds.platform_refund_no(channel, r.platform_refund_id)
        for r, _ in items
    }
    recorded = await repository.existing_refund_nos(session, list(numbers.values()))
    todo = []
    for record, case in items:
        if numbers[record.platform_refund_id] in recorded:
            result.outcomes[record.platform_refund_id] = (DUPLICATE, None)
        else:
            todo.append((record, case))
    if not todo:
        return result
    order_ids = sorted({case.order_id for _, case in todo})
    orders = {o.id: o for o in await orders_service.lock_orders(session, order_ids)}
    ledger = await repository.lock_money_many(session, order_ids)
    states = {
        oid: _OrderState(orders[oid], {}, orders[oid].status, {}, ledger.get(oid))
        for oid in order_ids
    }
    now = clock.now()
    plans: list[tuple[PlatformRecord, AftersaleCase, _OrderState]] = []
    for record, case in todo:
        state = states[case.order_id]
        paid, committed, _ = state.money or (state.order.total_minor, 0, 0)
        if committed + record.amount_minor > paid:
            result.outcomes[record.platform_refund_id] = (
                REFUSED,
                f"order {case.order_no}: the refund would pass what was paid",
            )
            continue
        _take_refund(state, record, numbers[record.platform_refund_id], actor)
        plans.append((record, case, state))
    if not plans:
        return result
    rows = [
        {
            **refunds.platform_refund_row(
                (case.id, case.order_id, case.order_no, channel),
                state.order.total_minor,
                state.order.currency,
                record.platform_refund_id,
                record.amount_minor,
                now,
            ),
            "state": "succeeded",
            "confirmed_at": now,
        }
        for record, case, state in plans
    ]
    refund_ids = await repository.insert_refunds_many(session, rows)
    if len(refund_ids) != len(rows):
        raise PageConflict("a platform refund of the page was recorded meanwhile")
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    settled: Tally[str] = Tally()
    for record, case, _ in plans:
        number = numbers[record.platform_refund_id]
        refund = AftersaleRefund(
            id=refund_ids[number],
            order_no=case.order_no,
            source="platform",
            provider=channel,
            out_refund_no=number,
            amount_minor=record.amount_minor,
            currency=case.currency,
        )
        events.append(refunds.refund_confirmed_event(refund, case.case_no, now))
        if refunds.settles(case.type, case.status):
            if not await repository.set_status(
                session,
                case.id,
                from_status=case.status,
                version=case.version,
                to_status=CaseStatus.REFUNDED.value,
                at=now,
                extra={},
            ):
                raise PageConflict(f"case {case.case_no} moved meanwhile")
            row, event = service.step_rows(
                case.id,
                case.case_no,
                case.order_no,
                case.type,
                "refund",
                case.status,
                case.version + 1,
                actor,
                now,
                {"out_refund_no": number},
            )
            audit.append(row)
            events.append(event)
            settled[case.type] += 1
        result.outcomes[record.platform_refund_id] = (CREATED, None)
    await repository.insert_events(session, audit)
    await outbox.publish_rows(session, events)
    await _write_money(session, list(states.values()), now)
    await _move_orders(session, list(states.values()))
    by_currency: Tally[str] = Tally()
    for record, case, _ in plans:
        by_currency[case.currency] += record.amount_minor

    def count() -> None:
        refunds.REFUNDS.labels("platform", "succeeded").inc(len(plans))
        for currency, amount in by_currency.items():
            refunds.REFUNDED_MINOR.labels(currency).inc(amount)
        for _ in plans:
            refunds.TIME_TO_REFUND.observe(0.0)
        for case_type, n in settled.items():
            service.CASE_TRANSITIONS.labels(case_type, CaseStatus.REFUNDED.value).inc(n)

    count_after_commit(session, count)
    return result
