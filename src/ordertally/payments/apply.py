"""Applying stored notifications, each exactly once: payments (amount checked to the fen,
duplicates, double payments, payments after close, unknown trades) and refunds within what was
paid. Callbacks, active queries and statement rows all arrive here through the inbox.

`apply_notification` applies one; `apply_notifications` (the worker's batch path) applies a
batch's plain payments and its refunds in a fixed number of statements each, with the same
effects, and the rest one by one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import count_after_commit
from ordertally.core.errors import Conflict
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.errors import IllegalTransition
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Event, Status, find
from ordertally.payments import repository, state_machine
from ordertally.payments.metrics import APPLIED, CALLBACK_TO_APPLIED
from ordertally.payments.models import AFTERSALES_REFUND_PREFIX, Payment, PaymentNotification
from ordertally.payments.state_machine import PaymentState


class PaymentNotYetApplied(Exception):
    """A refund arrived before the payment it refunds was applied; retried by the worker."""


class _RefundTooLarge(Exception):
    """Rolls back a refund that would take the refunded total past what was paid."""


class _RefundBatchConflict(Exception):
    """Another writer recorded one of the batch's refunds meanwhile: apply them one by one."""


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
        _count_applied(session, [(row, outcome)], now)
    return outcome


def _count_applied(
    session: AsyncSession, applied: list[tuple[PaymentNotification, str]], now: datetime
) -> None:
    """Count applied notifications once the transaction that applied them has committed."""
    counted = [
        (row.provider, outcome, max((now - clock.as_utc(row.received_at)).total_seconds(), 0.0))
        for row, outcome in applied
    ]

    def count() -> None:
        for provider, outcome, seconds in counted:
            APPLIED.labels(provider, outcome).inc()
            CALLBACK_TO_APPLIED.labels(provider).observe(seconds)

    count_after_commit(session, count)


async def apply_notifications(session: AsyncSession, notification_ids: list[int]) -> None:
    """`apply_notification` for many at once (the worker's batch path), with the same effects.

    The common cases are applied for the whole batch in a fixed number of statements, the
    attempts locked first in id order:

    - a paid notification for a pending attempt with the right amount, whose order is still
      waiting for payment: one compare-and-set per group (`transition_many`), the audit rows
      and events inserted together;
    - refund notifications (`_apply_refund_batch`): the refund numbers already recorded read
      once, every refund decided in Python in arrival order, then one insert of the new
      refunds, one update of the attempts' refunded totals and one of the outcomes; a refund
      that completes an attempt's refund moves its order, and exception cases open, as one
      by one.

    Everything else (duplicates, mismatches, unknown trades, closed orders, two notifications
    for one attempt, refunds for an attempt one of those concerns or not yet paid) goes
    through `apply_notification` one by one afterwards, in the same transaction, and so sees
    the batch's writes.
    """
    rows = await repository.pending_notifications(session, notification_ids)
    paid = [
        r
        for r in rows
        if r.facts.get("kind") == "payment" and r.facts.get("status") == "paid" and r.out_trade_no
    ]
    refunds = [r for r in rows if r.facts.get("kind") == "refund"]
    payments = {
        p.out_trade_no: p
        for p in await repository.lock_by_out_trade_nos(
            session, sorted({r.out_trade_no for r in (*paid, *refunds) if r.out_trade_no})
        )
    }
    simple: dict[int, tuple[PaymentNotification, Payment]] = {}  # order id -> (row, attempt)
    for r in paid:
        payment = payments.get(r.out_trade_no or "")
        if (
            payment is None
            or payment.provider != r.provider
            or payment.state not in state_machine.RECEIVED.sources
            or payment.order_id in simple
            or r.facts.get("amount_minor") != payment.amount_minor
            or (r.facts.get("currency") or "CNY") != payment.currency
        ):
            continue
        simple[payment.order_id] = (r, payment)
    batched = {r.id for r, _ in simple.values()}
    completing = _may_complete(refunds, payments)
    stirring = {
        payments[r.out_trade_no or ""].order_id
        for r in rows
        if r.id not in batched and _may_move_stock(r, payments.get(r.out_trade_no or ""))
    } | completing
    if stirring:
        # Notifications applied below may move stock (a refund that completes its attempt's
        # refund, a payment for an order not in the batch): lock every stock row the
        # transaction can touch first, in stock id order, rather than order by order (issue
        # 21's deadlock).
        await orders_service.lock_orders_and_stock(session, sorted(stirring | set(simple)))
    moved: set[int] = set()
    if simple:
        actors = {oid: _actor(r, r.provider_txn_id) for oid, (r, _) in simple.items()}
        moved = await orders_service.transition_many(
            session, list(simple), Event.PAYMENT_SUCCEEDED, actors
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
        _count_applied(session, [(r, "paid") for r, _ in done], now)
    applied = {r.id for r, _ in done}
    if refunds:
        paid_now = {payment.out_trade_no for _, payment in done}
        if any(r.out_trade_no in paid_now for r in refunds):
            # The attempts just paid: read them again (their objects still say pending).
            await repository.by_out_trade_nos(session, sorted(paid_now))
        applied |= await _apply_refund_batch(
            session, _batchable_refunds(rows, refunds, applied, payments), payments
        )
    for r in rows:
        if r.id not in applied:
            await apply_notification(session, r.id)


def _may_move_stock(row: PaymentNotification, payment: Payment | None) -> bool:
    """Whether applying this payment notification one by one can change its order's stock: a
    payment for an attempt that has not received money yet (its order may be paid, reopened
    or closed). Duplicates and unknown trades cannot; refunds are `_may_complete`'s."""
    if payment is None:
        return False
    return (
        row.facts.get("kind") == "payment"
        and row.facts.get("status") == "paid"
        and payment.state not in state_machine.MONEY_RECEIVED
    )


def _may_complete(refunds: list[PaymentNotification], payments: dict[str, Payment]) -> set[int]:
    """The orders whose attempt the batch's refunds might refund fully, which moves the order
    to refunded and releases its stock. Errs towards yes: each refund is counted as if it were
    recorded (the running total is an upper bound of what applying them leaves)."""
    running: dict[int, int] = {}
    orders: set[int] = set()
    for r in refunds:
        payment = payments.get(r.out_trade_no or "")
        if payment is None or payment.order_id in orders:
            continue
        total = running.get(payment.id, payment.refunded_minor)
        if "refunded_total_minor" in r.facts:
            value = r.facts.get("refunded_total_minor")
            total = max(total, value) if isinstance(value, int) else total
        else:
            value = r.facts.get("refund_minor")
            total += value if isinstance(value, int) and value > 0 else 0
        running[payment.id] = total
        paid = payment.paid_amount_minor
        if total >= (payment.amount_minor if paid is None else paid):
            orders.add(payment.order_id)
    return orders


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
        if payment.state in state_machine.MONEY_RECEIVED:
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
        if await repository.mark_received(
            session,
            payment.id,
            move=state_machine.receipt(matches),
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
            session, payment.order_no, Event.PAYMENT_SUCCEEDED, actor
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
        if policy == "reopen" and find(Event.REOPEN_PAID) is not None:
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


# --- refunds -------------------------------------------------------------------------------------


def _refund_detail(row: PaymentNotification) -> dict[str, Any]:
    """What a refund's exception case says of the notification."""
    return {
        "provider": row.provider,
        "out_trade_no": row.out_trade_no,
        "out_refund_no": row.facts.get("out_refund_no"),
        "notification_id": row.id,
    }


def _refund_delta(facts: dict[str, Any], refunded_minor: int) -> int | str:
    """What a successful refund adds to an attempt's refunded total, or the outcome when it
    adds nothing ("duplicate": Alipay's running total is not above it; "ignored")."""
    if "refunded_total_minor" in facts:  # Alipay: the running total
        total = facts.get("refunded_total_minor")
        delta = total - refunded_minor if isinstance(total, int) else None
        if delta is not None and delta <= 0:
            return "duplicate"
    else:
        delta = facts.get("refund_minor")
    if not isinstance(delta, int) or delta <= 0:
        return "ignored"
    return delta


def _refund_number(row: PaymentNotification) -> str:
    """The refund's number (its key with the provider): ours, or made from the notification."""
    return str(row.facts.get("out_refund_no") or f"{row.provider_txn_id}:{row.id}")[:64]


def _refund_values(
    row: PaymentNotification, payment_id: int, out_refund_no: str, delta: int, now: datetime
) -> dict[str, Any]:
    """The payment_refund row a recorded refund writes."""
    refunded_at = row.facts.get("refunded_at")
    return {
        "payment_id": payment_id,
        "provider": row.provider,
        "out_refund_no": out_refund_no,
        "refund_id": (str(row.facts.get("refund_id") or "") or None),
        "amount_minor": delta,
        "status": "success",
        "refunded_at": datetime.fromisoformat(refunded_at) if refunded_at else now,
        "notification_id": row.id,
        "created_at": now,
    }


def _exceeds_detail(
    detail: dict[str, Any], delta: int, paid_minor: int | None, refunded_minor: int
) -> dict[str, Any]:
    return {
        **detail,
        "refund_minor": delta,
        "paid_minor": paid_minor,
        "already_refunded_minor": refunded_minor,
    }


async def _refund_order(
    session: AsyncSession,
    row: PaymentNotification,
    payment: Payment,
    out_refund_no: str,
    detail: dict[str, Any],
) -> str:
    """The attempt that paid the order is refunded in full: move the order to refunded, or
    say why it cannot be (an after-sales refund after shipment is the case's to move)."""
    actor = _refund_actor(row, out_refund_no)
    try:
        result = await orders_service.transition(session, payment.order_no, "refund", actor)
    except IllegalTransition as exc:
        if out_refund_no.startswith(AFTERSALES_REFUND_PREFIX):
            return "refund_recorded"
        await _case(
            session,
            payment.order_id,
            "refund_after_fulfilment",
            {**detail, "order_status": exc.extra.get("order_status")},
        )
        return "refund_recorded"
    return "refund_full" if result.applied else "refund_recorded"


def _refund_actor(row: PaymentNotification, out_refund_no: str) -> Actor:
    """Who moves an order refunded in full: the provider's refund notification."""
    return Actor(
        ActorKind.PAYMENT_CALLBACK,
        f"{row.provider}:notify",
        evidence_ref=str(row.facts.get("refund_id") or out_refund_no),
        note=f"{row.provider} refund {out_refund_no} of {row.out_trade_no}",
    )


async def _refund_orders(
    session: AsyncSession,
    fulls: list[tuple[PaymentNotification, Payment, str, dict[str, Any]]],
) -> dict[int, str]:
    """`_refund_order` for a batch's full refunds ((row, attempt, number, detail) each, in
    arrival order), with the same outcomes by notification id. The orders (already locked
    with their stock rows by the batch) are read once: those the `refund` row can move (paid,
    allocated, fulfilling) move together through `transition_many` (one compare-and-set per
    source status, their reservations released in two statements, the audit rows and events
    inserted together); an after-sales refund of an order already sent records only (the case
    moves it); one of ours opens `refund_after_fulfilment`. An order already refunded, or
    refunded twice in the batch, goes through `_refund_order` alone, which explains it."""
    if not fulls:
        return {}
    spec = find(Event.REFUND)
    assert spec is not None
    orders = {
        o.id: o
        for o in await orders_service.lock_orders(session, [p.order_id for _, p, _, _ in fulls])
    }
    outcomes: dict[int, str] = {}
    movable: dict[int, tuple[PaymentNotification, Payment, str, dict[str, Any]]] = {}
    alone: list[tuple[PaymentNotification, Payment, str, dict[str, Any]]] = []
    for full in fulls:
        row, payment, number, detail = full
        order = orders.get(payment.order_id)
        if order is None or payment.order_id in movable or order.status == Status.REFUNDED:
            alone.append(full)
        elif Status(order.status) in spec.sources:
            movable[payment.order_id] = full
            outcomes[row.id] = "refund_full"
        else:
            # `transition` would refuse: the order is past what `refund` leaves from.
            if not number.startswith(AFTERSALES_REFUND_PREFIX):
                await _case(
                    session,
                    payment.order_id,
                    "refund_after_fulfilment",
                    {**detail, "order_status": order.status},
                )
            outcomes[row.id] = "refund_recorded"
    if movable:
        actors = {oid: _refund_actor(full[0], full[2]) for oid, full in movable.items()}
        moved = await orders_service.transition_many(session, sorted(movable), Event.REFUND, actors)
        for oid in sorted(set(movable) - moved):  # not under the batch's locks: as alone
            outcomes.pop(movable[oid][0].id)
            alone.append(movable[oid])
    for row, payment, number, detail in sorted(alone, key=lambda f: f[0].id):
        outcomes[row.id] = await _refund_order(session, row, payment, number, detail)
    return outcomes


async def _apply_refund(session: AsyncSession, row: PaymentNotification) -> tuple[str, int | None]:
    facts = row.facts
    # The attempt is locked (PostgreSQL) before its refund row is written, as the batch path
    # locks it: every path takes the attempt first, so none waits on another in reverse.
    found = await repository.lock_by_out_trade_nos(session, [row.out_trade_no or ""])
    payment = found[0] if found else None
    detail = _refund_detail(row)
    if payment is None or payment.provider != row.provider:
        await _case(session, None, "unknown_trade", detail)
        return "unknown_trade", None
    if payment.state != PaymentState.PAID:
        raise PaymentNotYetApplied(f"refund for {payment.out_trade_no} before its payment")
    status = facts.get("status")
    if status != "success":
        if status == "abnormal":
            await _case(session, payment.order_id, "refund_abnormal", detail)
        return "ignored", payment.id
    delta = _refund_delta(facts, payment.refunded_minor)
    if isinstance(delta, str):
        return delta, payment.id
    out_refund_no = _refund_number(row)
    now = clock.now()
    try:
        async with session.begin_nested():
            refund_id = await repository.insert_refund(
                session, _refund_values(row, payment.id, out_refund_no, delta, now)
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
            _exceeds_detail(detail, delta, payment.paid_amount_minor, payment.refunded_minor),
        )
        return "refund_exceeds_paid", payment.id
    if refund_id is None:
        return "duplicate", payment.id
    fresh = await repository.get_payment(session, payment.id)
    assert fresh is not None
    if fresh.settles_order and fresh.refunded_minor == fresh.paid_amount_minor:
        return await _refund_order(session, row, fresh, out_refund_no, detail), payment.id
    return "refund_recorded", payment.id


def _batchable_refunds(
    rows: list[PaymentNotification],
    refunds: list[PaymentNotification],
    applied: set[int],
    payments: dict[str, Payment],
) -> list[PaymentNotification]:
    """The refunds `_apply_refund_batch` may decide: not those of an attempt another
    notification of the batch applied one by one concerns (they keep their arrival order
    behind it), nor those of an attempt not paid yet (one by one they wait for it)."""
    others = {
        r.out_trade_no for r in rows if r.id not in applied and r.facts.get("kind") != "refund"
    }
    chosen: list[PaymentNotification] = []
    for r in refunds:
        if r.out_trade_no in others:
            continue
        payment = payments.get(r.out_trade_no or "")
        known = payment is not None and payment.provider == r.provider
        if known and payment is not None and payment.state != PaymentState.PAID:
            continue
        chosen.append(r)
    return chosen


async def _apply_refund_batch(
    session: AsyncSession, rows: list[PaymentNotification], payments: dict[str, Payment]
) -> set[int]:
    """Apply refund notifications (in id order, their attempts locked and paid) as
    `_apply_refund` would one after the other; returns the ids applied.

    The refund numbers already recorded are read once; each refund is decided in Python with
    the batch's earlier refunds counted (duplicate number, Alipay's running total, within
    what was paid); then the new refunds are inserted in one statement, the attempts'
    refunded totals set in one (from the totals read under the lock), exception cases opened
    in arrival order, the orders refunded in full moved together (`_refund_orders`), and the
    outcomes recorded in one.
    If another writer recorded one of the refunds meanwhile (the insert skips it), the
    savepoint rolls it all back and none is applied here: the caller applies them one by one.
    """
    if not rows:
        return set()
    now = clock.now()
    recorded = await repository.recorded_refund_numbers(
        session, {(r.provider, _refund_number(r)) for r in rows}
    )
    read = {p.id: p.refunded_minor for p in payments.values()}
    running = dict(read)
    inserts: list[dict[str, Any]] = []
    outcomes: dict[int, tuple[str, int | None]] = {}
    # In arrival order: ("case", row, order id, type, detail) or ("full", row, payment, number)
    effects: list[tuple[Any, ...]] = []
    for row in rows:
        payment = payments.get(row.out_trade_no or "")
        detail = _refund_detail(row)
        if payment is None or payment.provider != row.provider:
            effects.append(("case", row, None, "unknown_trade", detail))
            outcomes[row.id] = ("unknown_trade", None)
            continue
        status = row.facts.get("status")
        if status != "success":
            if status == "abnormal":
                effects.append(("case", row, payment.order_id, "refund_abnormal", detail))
            outcomes[row.id] = ("ignored", payment.id)
            continue
        delta = _refund_delta(row.facts, running[payment.id])
        if isinstance(delta, str):
            outcomes[row.id] = (delta, payment.id)
            continue
        number = _refund_number(row)
        if (row.provider, number) in recorded:
            outcomes[row.id] = ("duplicate", payment.id)
            continue
        paid = payment.paid_amount_minor
        if paid is None or running[payment.id] + delta > paid:
            exceeds = _exceeds_detail(detail, delta, paid, running[payment.id])
            effects.append(("case", row, payment.order_id, "refund_exceeds_paid", exceeds))
            outcomes[row.id] = ("refund_exceeds_paid", payment.id)
            continue
        recorded.add((row.provider, number))
        inserts.append(_refund_values(row, payment.id, number, delta, now))
        running[payment.id] += delta
        if payment.settles_order and running[payment.id] == paid:
            effects.append(("full", row, payment, number, detail))
        outcomes[row.id] = ("refund_recorded", payment.id)
    totals = [
        {"pid": pid, "before": read[pid], "after": total, "at": now}
        for pid, total in sorted(running.items())
        if total != read[pid]
    ]
    try:
        async with session.begin_nested():
            if inserts:
                written = await repository.insert_refunds(session, inserts)
                if len(written) != len(inserts):
                    raise _RefundBatchConflict
            if totals:
                updated = await repository.set_refunded_many(session, totals)
                if updated is not None and updated != len(totals):
                    raise _RefundBatchConflict
            for effect in effects:
                if effect[0] == "case":
                    _, row, order_id, type_, detail = effect
                    await _case(session, order_id, type_, detail)
            fulls = [effect[1:] for effect in effects if effect[0] == "full"]
            for row_id, outcome in (await _refund_orders(session, fulls)).items():
                outcomes[row_id] = (outcome, outcomes[row_id][1])
            await repository.finish_notifications(
                session,
                [
                    {"nid": row.id, "outcome": outcome, "pid": pid, "at": now}
                    for row in rows
                    for outcome, pid in [outcomes[row.id]]
                ],
            )
    except (_RefundBatchConflict, IntegrityError):
        return set()
    _count_applied(session, [(row, outcomes[row.id][0]) for row in rows], now)
    return {row.id for row in rows}
