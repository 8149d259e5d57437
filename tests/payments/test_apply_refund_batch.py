"""Refund notifications through the worker's batch path: the same stream applied as one batch
and one by one leaves the same tables (attempts, refunds, orders, audit rows, events, exception
cases, stock), in a fixed number of statements; a refund before its payment still waits for
it; a refund another writer records meanwhile is applied once (the batch falls back to one by
one)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events import dispatcher
from ordertally.events.models import OutboxEvent
from ordertally.exceptions.models import ExceptionCase
from ordertally.inventory.models import Reservation
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from ordertally.payments import (
    apply,
    consumers,  # noqa: F401  (registers the apply consumer)
    inbox,
    repository,
)
from ordertally.payments.models import Payment, PaymentNotification, PaymentRefund
from ordertally.payments.providers import Notice
from tests.conftest import ONLY_PG
from tests.factories import add_warehouse, make_order, receive
from tests.payments.helpers import make_attempt, paid_notice, store_and_apply

pytestmark = pytest.mark.anyio

SKUS = ("TEA-LJ-250", "CUP-CER-01")


def refund(
    payment: Payment,
    key: str,
    number: str | None,
    *,
    minor: int | None = None,
    total: int | None = None,
    status: str = "success",
    refund_id: str | None = None,
) -> Notice:
    """A refund notice: WeChat Pay's amount of this refund (`minor`) or Alipay's running
    total (`total`)."""
    facts: dict[str, Any] = {
        "status": status,
        "out_refund_no": number,
        "refund_id": refund_id,
        "total_minor": payment.amount_minor,
        "refunded_at": "2026-12-05T10:00:00+00:00",
    }
    if total is not None:
        facts["refunded_total_minor"] = total
    else:
        facts["refund_minor"] = minor
    return Notice(
        provider=payment.provider,
        dedupe_key=key,
        event_type="REFUND.SUCCESS" if status == "success" else "REFUND.ABNORMAL",
        kind="refund",
        out_trade_no=payment.out_trade_no,
        provider_txn_id="4200REFUNDED",
        trade_state="SUCCESS",
        facts=facts,
        headers={},
        body="{}",
    )


@dataclass
class World:
    """One copy of the scenario: its orders, attempts and the stream of notifications."""

    tag: str
    orders: list[SalesOrder]
    attempts: list[Payment]
    ids: list[int] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)


async def _paid_then(db: Database, order: SalesOrder, attempt: Payment, path: list[str]) -> None:
    """Pay an attempt through its notification, then walk the order on."""
    _, outcome = await store_and_apply(db, paid_notice(attempt, txn=f"42{attempt.id:010d}"))
    assert outcome == "paid"
    async with db.transaction() as session:
        for name in path:
            await orders_service.transition(
                session, order.order_no, name, Actor(_DRIVERS[name], "tests")
            )


_DRIVERS = {
    "allocate": ActorKind.ALLOCATOR,
    "start_fulfillment": ActorKind.WAREHOUSE,
    "ship": ActorKind.WAREHOUSE,
}
_SHIP = ["allocate", "start_fulfillment", "ship"]


async def _world(db: Database, tag: str) -> World:
    """Eight orders: 0–3 paid (0–2 WeChat Pay, 3 Alipay), 4 pending (paid within the stream),
    5 and 6 paid and shipped, 7 paid by Alipay."""
    orders = [await make_order(db) for _ in range(8)]
    providers = ["wechatpay"] * 3 + ["alipay", "wechatpay", "wechatpay", "wechatpay", "alipay"]
    attempts = [await make_attempt(db, o, p) for o, p in zip(orders, providers, strict=True)]
    for i in (0, 1, 2, 3, 7):
        await _paid_then(db, orders[i], attempts[i], [])
    for i in (5, 6):
        await _paid_then(db, orders[i], attempts[i], _SHIP)
    async with db.transaction(write=False) as session:
        fresh = [await repository.get_payment(session, a.id) for a in attempts]
    return World(tag, orders, [a for a in fresh if a is not None])


def _stream(w: World) -> list[Notice]:
    """Duplicates, partial refunds, one over what was paid, one for an unknown trade, a
    payment and its refund in the same batch, Alipay's running totals, full refunds before
    and after shipment (ours and after-sales' numbers), and refunds that change nothing."""
    a, t = w.attempts, w.tag
    total = [p.amount_minor for p in a]
    stray = refund(a[2], f"{t}-k7", f"{t}-R7", minor=100)
    stray.out_trade_no = f"{t}-NOT-OURS"
    return [
        refund(a[0], f"{t}-k1", f"{t}-R1", minor=1000, refund_id="5030001"),
        refund(a[0], f"{t}-k2", f"{t}-R1", minor=1000, refund_id="5030001"),  # resent
        refund(a[0], f"{t}-k3", f"{t}-R2", minor=total[0]),  # over what is left
        paid_notice(a[4], txn=f"42{a[4].id:010d}", dedupe_key=f"{t}-k4"),
        refund(a[4], f"{t}-k5", f"{t}-R5", minor=300),  # the payment just before it
        refund(a[3], f"{t}-k6", f"{t}-B1", total=500),  # Alipay: 5.00 refunded so far
        stray,  # not our trade
        refund(a[3], f"{t}-k8", f"{t}-B1", total=500),  # the same running total again
        refund(a[0], f"{t}-k9", f"{t}-R3", minor=total[0] - 1000),  # the rest: full
        refund(a[1], f"{t}-k10", f"{t}-R10", minor=200, status="abnormal"),
        refund(a[1], f"{t}-k11", f"{t}-R11", minor=200, status="closed"),
        refund(a[1], f"{t}-k12", f"{t}-R12", minor=0),  # nothing to add
        refund(a[5], f"{t}-k13", f"{t}-R13", minor=total[5]),  # full, after shipment
        refund(a[6], f"{t}-k14", f"ASR{t}14", minor=total[6]),  # after-sales', shipped
        refund(a[3], f"{t}-k15", f"{t}-B2", total=total[3]),  # Alipay: the rest
        refund(a[7], f"{t}-k16", None, total=50),  # no number: one made from the notice
        refund(a[1], f"{t}-k17", f"{t}-R17", minor=total[1]),  # full in one go
        refund(a[1], f"{t}-k18", f"{t}-R18", minor=1),  # after the full refund
        refund(a[0], f"{t}-k19", f"{t}-R1", minor=1000, refund_id="5030001"),  # resent again
        refund(a[7], f"{t}-k20", f"{t}-R20", total=total[7] + 1),  # more than was paid
    ]


async def _store(db: Database, notices: list[Notice], *, publish: bool = False) -> list[int]:
    ids: list[int] = []
    async with db.transaction() as session:
        for notice in notices:
            stored = await inbox.store_notice(
                session, notice, source="callback", received_at=clock.now(), publish=publish
            )
            assert stored is not None
            ids.append(stored)
    return ids


async def _max_id(db: Database, model: Any) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.max(model.id))) or 0)


def _scrubber(w: World) -> Any:
    """Replaces what differs between the two copies (numbers, ids, the tag) by positions."""
    names: dict[str, str] = {}
    for i, p in enumerate(w.attempts):
        names[p.out_trade_no] = f"<trade {i}>"
        names[p.order_no] = f"<order {i}>"
        if p.provider_txn_id:
            names[p.provider_txn_id] = f"<txn {i}>"
    names[f"42{w.attempts[4].id:010d}"] = "<txn 4>"
    names[w.tag] = "<tag>"
    pattern = re.compile("|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)))
    notes = {nid: n for n, nid in enumerate(w.ids)}
    orders = {o.id: n for n, o in enumerate(w.orders)}
    payments = {p.id: n for n, p in enumerate(w.attempts)}

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            skip = {"occurred_at", "event_id", "created_at", "updated_at", "due_at"}
            return {k: scrub(v, k) for k, v in sorted(value.items()) if k not in skip}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str):
            value = re.sub(
                r"(#|REFUNDED:)(\d+)", lambda m: f"{m[1]}<n {notes.get(int(m[2]), m[2])}>", value
            )
            return pattern.sub(lambda m: names[m[0]], value)
        if key == "notification_id" and isinstance(value, int):
            return f"<n {notes[value]}>"
        if key == "order_id" and isinstance(value, int):
            return f"<order {orders[value]}>"
        if key == "payment_id" and isinstance(value, int):
            return f"<attempt {payments[value]}>"
        return value

    return scrub


def _aggregate(e: OutboxEvent) -> str:
    """An event's aggregate; a case's event is named by its case id, which the two copies
    number differently (the case itself is compared under "cases")."""
    if e.aggregate_type == "exception_case":
        return e.aggregate_type
    return f"{e.aggregate_type}:{e.aggregate_id}"


async def _tables(
    db: Database, w: World, since: dict[str, int], until: dict[str, int] | None = None
) -> dict[str, Any]:
    """Everything applying the stream wrote or changed (rows with ids in (since, until]),
    with the copy's own numbers scrubbed."""
    last = until or {key: 2**62 for key in since}
    scrub = _scrubber(w)
    order_ids = [o.id for o in w.orders]
    payment_ids = [p.id for p in w.attempts]
    async with db.transaction(write=False) as session:
        payments = (
            await session.scalars(
                select(Payment).where(Payment.id.in_(payment_ids)).order_by(Payment.id)
            )
        ).all()
        refunds = (
            await session.scalars(
                select(PaymentRefund)
                .where(PaymentRefund.payment_id.in_(payment_ids))
                .order_by(PaymentRefund.notification_id)
            )
        ).all()
        orders = (
            await session.scalars(
                select(SalesOrder).where(SalesOrder.id.in_(order_ids)).order_by(SalesOrder.id)
            )
        ).all()
        audit = (
            await session.scalars(
                select(OrderEvent)
                .where(
                    OrderEvent.order_id.in_(order_ids),
                    OrderEvent.id > since["audit"],
                    OrderEvent.id <= last["audit"],
                )
                .order_by(OrderEvent.order_id, OrderEvent.version)
            )
        ).all()
        events = (
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.id > since["outbox"], OutboxEvent.id <= last["outbox"])
                .order_by(OutboxEvent.id)
            )
        ).all()
        cases = (
            await session.scalars(
                select(ExceptionCase)
                .where(ExceptionCase.id > since["cases"], ExceptionCase.id <= last["cases"])
                .order_by(ExceptionCase.id)
            )
        ).all()
        notes = (
            await session.scalars(
                select(PaymentNotification)
                .where(PaymentNotification.id.in_(w.ids))
                .order_by(PaymentNotification.id)
            )
        ).all()
        stock = (
            await session.execute(
                select(Reservation.order_id, Reservation.sku, Reservation.state)
                .where(Reservation.order_id.in_(order_ids))
                .order_by(Reservation.order_id, Reservation.sku)
            )
        ).all()
    return {
        "payments": [
            scrub(
                {
                    "state": p.state,
                    "paid_amount_minor": p.paid_amount_minor,
                    "refunded_minor": p.refunded_minor,
                    "settles_order": p.settles_order,
                    "provider_txn_id": p.provider_txn_id,
                }
            )
            for p in payments
        ],
        "refunds": [
            scrub(
                {
                    "payment_id": r.payment_id,
                    "provider": r.provider,
                    "out_refund_no": r.out_refund_no,
                    "refund_id": r.refund_id,
                    "amount_minor": r.amount_minor,
                    "status": r.status,
                    "refunded_at": r.refunded_at.isoformat() if r.refunded_at else None,
                    "notification_id": r.notification_id,
                }
            )
            for r in refunds
        ],
        "orders": [(o.status, o.version) for o in orders],
        "audit": [
            scrub(
                {
                    "order_id": e.order_id,
                    "version": e.version,
                    "event": e.event,
                    "from": e.from_status,
                    "to": e.to_status,
                    "actor_kind": e.actor_kind,
                    "actor_id": e.actor_id,
                    "evidence_ref": e.evidence_ref,
                    "note": e.note,
                }
            )
            for e in audit
        ],
        # By aggregate, in each aggregate's order (the batch writes its kinds of rows together,
        # so ids interleave differently across aggregates).
        "events": sorted(
            (
                scrub(
                    {
                        "type": e.event_type,
                        "aggregate": _aggregate(e),
                        "payload": {k: v for k, v in e.payload.items() if k != "case_id"},
                    }
                )
                for e in events
            ),
            key=lambda e: (e["aggregate"], e["payload"].get("version", 0), repr(e)),
        ),
        "cases": sorted(
            (
                scrub(
                    {
                        "order_id": c.order_id,
                        "category": c.category,
                        "type": c.type,
                        "status": c.status,
                        "blocking": c.blocking,
                        "detail": c.detail,
                    }
                )
                for c in cases
            ),
            key=repr,
        ),
        "outcomes": [
            (n.outcome, scrub(n.payment_id, "payment_id"), n.applied_at is not None) for n in notes
        ],
        "stock": [scrub({"order_id": o, "sku": s, "state": st}) for o, s, st in stock],
    }


async def _apply_one_by_one(db: Database, ids: list[int]) -> None:
    for notification_id in ids:
        async with db.transaction() as session:
            await apply.apply_notification(session, notification_id)


async def _apply_as_a_batch(db: Database, ids: list[int]) -> list[str]:
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_a: object) -> None:
        statements.append(statement)

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with db.transaction() as session:
            await apply.apply_notifications(session, ids)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return statements


async def _marks(db: Database) -> dict[str, int]:
    return {
        "audit": await _max_id(db, OrderEvent),
        "outbox": await _max_id(db, OutboxEvent),
        "cases": await _max_id(db, ExceptionCase),
    }


async def test_a_stream_of_refunds_leaves_the_same_tables_as_a_batch_and_one_by_one(
    db: Database,
) -> None:
    # Given stock for the orders' lines, and two copies of the same orders and attempts, each
    # with the same stream of notifications stored (refunds, duplicates, one payment)
    await add_warehouse(db, "WH-REF")
    for sku in SKUS:
        await receive(db, "WH-REF", sku, 1000)
    batch, single = await _world(db, "QQA"), await _world(db, "QQB")
    batch.ids = await _store(db, _stream(batch))
    single.ids = await _store(db, _stream(single))
    # When the first copy is applied as one worker batch
    before_batch = await _marks(db)
    statements = await _apply_as_a_batch(db, batch.ids)
    after_batch = await _marks(db)
    # ...and the second one notification at a time, each in its own transaction
    await _apply_one_by_one(db, single.ids)
    # Then both copies' tables are the same
    got_batch = await _tables(db, batch, before_batch, after_batch)
    got_single = await _tables(db, single, after_batch)
    for table in got_single:
        assert got_batch[table] == got_single[table], table
    # ...and they are what the stream says
    assert [o for o, _, _ in got_single["outcomes"]] == [
        "refund_recorded",
        "duplicate",
        "refund_exceeds_paid",
        "paid",
        "refund_recorded",
        "refund_recorded",
        "unknown_trade",
        "duplicate",
        "refund_full",
        "ignored",
        "ignored",
        "ignored",
        "refund_recorded",
        "refund_recorded",
        "refund_full",
        "refund_recorded",
        "refund_full",
        "refund_exceeds_paid",
        "duplicate",
        "refund_exceeds_paid",
    ]
    assert [o for o, _ in got_single["orders"]] == [
        "refunded",
        "refunded",
        "paid",
        "refunded",
        "paid",
        "shipped",
        "shipped",
        "paid",
    ]
    total = [p.amount_minor for p in single.attempts]
    assert [p["refunded_minor"] for p in got_single["payments"]] == [
        total[0],
        total[1],
        0,
        total[3],
        300,
        total[5],
        total[6],
        50,
    ]
    assert len(got_single["refunds"]) == 9
    assert sorted(c["type"] for c in got_single["cases"] if c["category"] == "payment") == [
        "refund_abnormal",
        "refund_after_fulfilment",
        "refund_exceeds_paid",
        "refund_exceeds_paid",
        "refund_exceeds_paid",
        "unknown_trade",
    ]
    released = [s["state"] for s in got_single["stock"] if s["order_id"] == "<order 0>"]
    assert released == ["released", "released"]
    # ...and the batch never fell back to one by one (which opens a savepoint per refund)
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1


async def test_a_batch_of_partial_refunds_takes_a_fixed_number_of_statements(
    db: Database,
) -> None:
    # Given 40 paid attempts and one partial refund notification for each
    orders = [await make_order(db) for _ in range(40)]
    attempts = [
        await make_attempt(db, o, "alipay" if i % 2 else "wechatpay") for i, o in enumerate(orders)
    ]
    for o, a in zip(orders, attempts, strict=True):
        await _paid_then(db, o, a, [])
    async with db.transaction(write=False) as session:
        paid = [await repository.get_payment(session, a.id) for a in attempts]
    notices = [
        refund(p, f"p-{i}", f"ASR{i:08d}", total=100)
        if p.provider == "alipay"
        else refund(p, f"p-{i}", f"ASR{i:08d}", minor=100)
        for i, p in enumerate(a for a in paid if a is not None)
    ]
    ids = await _store(db, notices)
    marks = await _marks(db)
    # When one batch applies them
    statements = await _apply_as_a_batch(db, ids)
    # Then each is recorded once, in about ten statements for the whole batch
    assert len(statements) <= 12, statements
    async with db.transaction(write=False) as session:
        outcomes = (
            await session.scalars(
                select(PaymentNotification.outcome).where(PaymentNotification.id.in_(ids))
            )
        ).all()
        refunded = (
            await session.scalars(
                select(Payment.refunded_minor).where(Payment.id.in_([a.id for a in attempts]))
            )
        ).all()
    assert outcomes == ["refund_recorded"] * 40
    assert refunded == [100] * 40
    # ...and no order moved, no case was opened, no event was written
    assert await _marks(db) == marks


async def test_a_refund_before_its_payment_waits_in_a_batch_as_it_does_alone(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a paid attempt with a refund, and a refund for an attempt not paid yet, announced
    # to the worker together
    paid_order, early_order = await make_order(db), await make_order(db)
    paid_attempt = await make_attempt(db, paid_order)
    early_attempt = await make_attempt(db, early_order)
    await _paid_then(db, paid_order, paid_attempt, [])
    await dispatcher.drain(db, get_settings())
    async with db.transaction(write=False) as session:
        fresh = await repository.get_payment(session, paid_attempt.id)
    assert fresh is not None
    ids = await _store(
        db,
        [
            refund(fresh, "w-1", "W1", minor=100),
            refund(early_attempt, "w-2", "W2", minor=100),
        ],
        publish=True,
    )
    caplog.set_level(logging.INFO, logger="ordertally.events.dispatcher")
    # When the worker's batch takes them
    result = await dispatcher.dispatch_batch(db, get_settings())
    # Then the refund of the paid attempt is applied and the early one waits for a retry
    assert (result.claimed, result.done, result.retried) == (2, 1, 1)
    assert "PaymentNotYetApplied" in caplog.text
    async with db.transaction(write=False) as session:
        outcomes = dict(
            (
                await session.execute(
                    select(PaymentNotification.id, PaymentNotification.outcome).where(
                        PaymentNotification.id.in_(ids)
                    )
                )
            ).all()
        )
        recorded = await repository.refunds_of(session, [paid_attempt.id, early_attempt.id])
    assert [outcomes[i] for i in ids] == ["refund_recorded", "pending"]
    assert [(r.payment_id, r.out_refund_no) for r in recorded] == [(paid_attempt.id, "W1")]
    # ...and once the payment is applied, the retry records it
    await store_and_apply(db, paid_notice(early_attempt))
    async with db.transaction() as session:
        assert await apply.apply_notification(session, ids[1]) == "refund_recorded"


async def test_a_refund_another_writer_records_meanwhile_is_applied_once(
    db: Database, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two paid attempts with three refunds for the first (one over what is left) and
    # one for the second, whose number another writer is about to record for another attempt
    orders = [await make_order(db) for _ in range(3)]
    attempts = [await make_attempt(db, o) for o in orders]
    for o, a in zip(orders, attempts, strict=True):
        await _paid_then(db, o, a, [])
    async with db.transaction(write=False) as session:
        first, second, other = [await repository.get_payment(session, a.id) for a in attempts]
    assert first is not None and second is not None and other is not None
    ids = await _store(
        db,
        [
            refund(first, "c-1", "C1", minor=100),
            refund(first, "c-2", "C2", minor=first.amount_minor),
            refund(second, "c-3", "CLASH", minor=200),
            refund(first, "c-4", "C4", minor=300),
        ],
    )
    marks = await _marks(db)
    real = repository.recorded_refund_numbers
    foreign = {
        "payment_id": other.id,
        "provider": "wechatpay",
        "out_refund_no": "CLASH",
        "refund_id": None,
        "amount_minor": 1,
        "status": "success",
        "refunded_at": None,
        "notification_id": None,
        "created_at": clock.now(),
    }

    async def read_then_another_writer(session: Any, keys: Any) -> set[tuple[str, str]]:
        found = await real(session, keys)
        if backend == "pg":
            # A real second connection records the number and commits, between the batch's
            # read and its insert (it needs no lock the batch holds: another attempt).
            async with db.transaction() as other_session:
                await repository.insert_refund(other_session, foreign)
        else:
            # SQLite has one writer at a time: no other connection can write while the batch
            # holds the database, so the write comes from within the batch's transaction.
            await repository.insert_refund(session, foreign)
        return found

    # When one batch applies the refunds while that happens
    monkeypatch.setattr(repository, "recorded_refund_numbers", read_then_another_writer)
    async with db.transaction() as session:
        await asyncio.wait_for(apply.apply_notifications(session, ids), 30)
    monkeypatch.undo()
    # Then the batch gave way to one by one: the clashing number is a duplicate, the others
    # are recorded once, and the one over what was left is refused once
    async with db.transaction(write=False) as session:
        outcomes = (
            await session.scalars(
                select(PaymentNotification.outcome)
                .where(PaymentNotification.id.in_(ids))
                .order_by(PaymentNotification.id)
            )
        ).all()
        recorded = await repository.refunds_of(session, [first.id, second.id, other.id])
        totals = [
            (await repository.get_payment(session, p.id)).refunded_minor  # type: ignore[union-attr]
            for p in (first, second, other)
        ]
        cases = (
            await session.scalars(
                select(ExceptionCase.type).where(ExceptionCase.id > marks["cases"])
            )
        ).all()
    assert outcomes == ["refund_recorded", "refund_exceeds_paid", "duplicate", "refund_recorded"]
    assert sorted((r.payment_id, r.out_refund_no, r.amount_minor) for r in recorded) == sorted(
        [(first.id, "C1", 100), (first.id, "C4", 300), (other.id, "CLASH", 1)]
    )
    assert totals == [400, 0, 0]
    assert cases == ["refund_exceeds_paid"]


@ONLY_PG  # SQLite runs one writer at a time: no two workers apply at once
async def test_two_workers_applying_the_same_refund_record_it_once(db: Database) -> None:
    # Given a paid attempt and the same refund announced twice (the provider's notification
    # and the answer to a query), each to another worker, five times over
    for round_ in range(5):
        order = await make_order(db)
        attempt = await make_attempt(db, order)
        await _paid_then(db, order, attempt, [])
        async with db.transaction(write=False) as session:
            paid = await repository.get_payment(session, attempt.id)
        assert paid is not None
        one, two = await _store(
            db,
            [
                refund(paid, f"t-{round_}-1", f"T{round_}", minor=500),
                refund(paid, f"t-{round_}-2", f"T{round_}", minor=500),
            ],
        )

        async def batch(ids: list[int]) -> None:
            async with db.transaction() as session:
                await apply.apply_notifications(session, ids)

        async def alone(notification_id: int) -> None:
            async with db.transaction() as session:
                await apply.apply_notification(session, notification_id)

        # When one worker applies one in a batch while another applies the other alone
        await asyncio.wait_for(asyncio.gather(batch([one]), alone(two)), 30)
        # Then the refund is recorded once and counted once
        async with db.transaction(write=False) as session:
            outcomes = sorted(
                (
                    await session.scalars(
                        select(PaymentNotification.outcome).where(
                            PaymentNotification.id.in_([one, two])
                        )
                    )
                ).all()
            )
            after = await repository.get_payment(session, attempt.id)
            recorded = await repository.refunds_of(session, [attempt.id])
        assert outcomes == ["duplicate", "refund_recorded"]
        assert after is not None and after.refunded_minor == 500
        assert len(recorded) == 1


async def _full_world(db: Database, tag: str) -> World:
    """Seven orders paid by WeChat Pay: 0 paid, 1 allocated, 2 fulfilling, 3 paid (refunded
    in two parts), 4 shipped (our refund), 5 shipped (after-sales' refund), 6 paid (its full
    refund resent)."""
    orders = [await make_order(db) for _ in range(7)]
    attempts = [await make_attempt(db, o) for o in orders]
    paths: list[list[str]] = [[], ["allocate"], ["allocate", "start_fulfillment"], [], _SHIP]
    paths += [_SHIP, []]
    for order, attempt, path in zip(orders, attempts, paths, strict=True):
        await _paid_then(db, order, attempt, path)
    async with db.transaction(write=False) as session:
        fresh = [await repository.get_payment(session, a.id) for a in attempts]
    return World(tag, orders, [a for a in fresh if a is not None])


def _full_stream(w: World) -> list[Notice]:
    """Full refunds before shipment (paid, allocated, fulfilling, one in two parts) and after
    it (ours, after-sales'), and one resent after its order was refunded."""
    a, t = w.attempts, w.tag
    total = [p.amount_minor for p in a]
    return [
        refund(a[0], f"{t}-f1", f"{t}-F1", minor=total[0]),
        refund(a[3], f"{t}-f2", f"{t}-F2", minor=100),
        refund(a[1], f"{t}-f3", f"{t}-F3", minor=total[1], refund_id="5031"),
        refund(a[4], f"{t}-f4", f"{t}-F4", minor=total[4]),
        refund(a[2], f"{t}-f5", f"{t}-F5", minor=total[2]),
        refund(a[5], f"{t}-f6", f"ASR{t}F6", minor=total[5]),
        refund(a[3], f"{t}-f7", f"{t}-F7", minor=total[3] - 100),
        refund(a[6], f"{t}-f8", f"{t}-F8", minor=total[6]),
        refund(a[6], f"{t}-f9", f"{t}-F8", minor=total[6]),  # resent
    ]


async def test_full_refunds_before_and_after_shipment_move_together_in_a_batch(
    db: Database,
) -> None:
    # Given stock, and two copies of orders paid, allocated, fulfilling and shipped, each
    # with the same stream of full refunds stored
    await add_warehouse(db, "WH-FULL")
    for sku in SKUS:
        await receive(db, "WH-FULL", sku, 1000)
    batch, single = await _full_world(db, "QFA"), await _full_world(db, "QFB")
    batch.ids = await _store(db, _full_stream(batch))
    single.ids = await _store(db, _full_stream(single))
    # When the first copy is applied as one worker batch and the second one by one
    before_batch = await _marks(db)
    statements = await _apply_as_a_batch(db, batch.ids)
    after_batch = await _marks(db)
    await _apply_one_by_one(db, single.ids)
    # Then both copies' tables are the same
    got_batch = await _tables(db, batch, before_batch, after_batch)
    got_single = await _tables(db, single, after_batch)
    for table in got_single:
        assert got_batch[table] == got_single[table], table
    # ...and they are what the stream says: the orders before shipment refunded, their
    # reservations released; the shipped ones stay shipped (ours opens a case)
    assert [o for o, _, _ in got_single["outcomes"]] == [
        "refund_full",
        "refund_recorded",
        "refund_full",
        "refund_recorded",
        "refund_full",
        "refund_recorded",
        "refund_full",
        "refund_full",
        "duplicate",
    ]
    assert [o for o, _ in got_single["orders"]] == [
        "refunded",
        "refunded",
        "refunded",
        "refunded",
        "shipped",
        "shipped",
        "refunded",
    ]
    moved = [e for e in got_single["audit"] if e["event"] == "refund"]
    assert [(e["order_id"], e["from"], e["actor_kind"]) for e in moved] == [
        ("<order 0>", "paid", "payment_callback"),
        ("<order 1>", "allocated", "payment_callback"),
        ("<order 2>", "fulfilling", "payment_callback"),
        ("<order 3>", "paid", "payment_callback"),
        ("<order 6>", "paid", "payment_callback"),
    ]
    assert moved[1]["evidence_ref"] == "5031"
    for n in (0, 1, 2, 3, 6):
        states = {s["state"] for s in got_single["stock"] if s["order_id"] == f"<order {n}>"}
        assert states == {"released"}, n
    for n in (4, 5):
        states = {s["state"] for s in got_single["stock"] if s["order_id"] == f"<order {n}>"}
        assert states == {"consumed"}, n
    assert [c["type"] for c in got_single["cases"] if c["category"] == "payment"] == [
        "refund_after_fulfilment"
    ]
    assert [c["detail"]["order_status"] for c in got_single["cases"]] == ["shipped"]
    # ...the five orders moved in one compare-and-set per source status, not one by one
    moves = [s for s in statements if s.lstrip().upper().startswith("UPDATE SALES_ORDER")]
    assert len(moves) == 3, moves
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1


async def _fulls_statements(db: Database, n: int, tag: str) -> tuple[list[str], list[str]]:
    """Statements of one batch of `n` full refunds of paid orders, and its outcomes."""
    orders = [await make_order(db) for _ in range(n)]
    attempts = [await make_attempt(db, o) for o in orders]
    for o, a in zip(orders, attempts, strict=True):
        await _paid_then(db, o, a, [])
    async with db.transaction(write=False) as session:
        paid = [await repository.get_payment(session, a.id) for a in attempts]
    notices = [
        refund(p, f"{tag}-{i}", f"{tag}R{i}", minor=p.amount_minor)
        for i, p in enumerate(p for p in paid if p is not None)
    ]
    ids = await _store(db, notices)
    statements = await _apply_as_a_batch(db, ids)
    async with db.transaction(write=False) as session:
        outcomes = (
            await session.scalars(
                select(PaymentNotification.outcome).where(PaymentNotification.id.in_(ids))
            )
        ).all()
        statuses = (
            await session.scalars(
                select(SalesOrder.status).where(SalesOrder.id.in_([o.id for o in orders]))
            )
        ).all()
    assert list(statuses) == ["refunded"] * n
    return statements, list(outcomes)


async def test_a_batch_of_full_refunds_takes_a_fixed_number_of_statements(db: Database) -> None:
    # Given stock, and paid orders: four, then eight, each refunded in full in one batch
    await add_warehouse(db, "WH-FIX")
    for sku in SKUS:
        await receive(db, "WH-FIX", sku, 1000)
    four, outcomes_four = await _fulls_statements(db, 4, "FX4")
    eight, outcomes_eight = await _fulls_statements(db, 8, "FX8")
    # Then every order is refunded in full, and twice the refunds take no more statements
    assert outcomes_four == ["refund_full"] * 4
    assert outcomes_eight == ["refund_full"] * 8
    assert len(eight) == len(four), (len(four), len(eight))
