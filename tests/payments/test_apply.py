"""Applying stored notifications: exactly once, amounts checked to the fen, duplicates and
double payments, payments after close, unknown trades, refunds within what was paid."""

from __future__ import annotations

import pytest

from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import dispatcher
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.closing import DueOrder
from ordertally.orders.models import OrderEvent
from ordertally.payments import (
    apply,
    compensation,
    consumers,  # noqa: F401  (registers the apply consumer)
    inbox,
)
from ordertally.payments.models import PaymentNotification, PaymentRefund
from tests.factories import make_order
from tests.payments.helpers import (
    cases,
    count,
    make_attempt,
    order_state,
    paid_notice,
    payment_row,
    refund_notice,
    store_and_apply,
    trail,
)

pytestmark = pytest.mark.anyio


async def test_a_payment_is_applied_once_with_its_evidence(db: Database) -> None:
    # Given a pending order with a WeChat attempt
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    notice = paid_notice(attempt, txn="4200000001")
    # When its notification is stored and applied
    _, outcome = await store_and_apply(db, notice)
    # Then the order is paid by the payment callback, with the transaction id as evidence
    assert outcome == "paid"
    assert await order_state(db, order.order_no) == ("paid", 2)
    assert await trail(db, order.id) == [
        ("payment_succeeded", "payment_callback", "wechatpay:notify", "4200000001")
    ]
    stored = await payment_row(db, attempt.id)
    assert (
        stored.state,
        stored.provider_txn_id,
        stored.paid_amount_minor,
        stored.settles_order,
    ) == (
        "paid",
        "4200000001",
        order.total_minor,
        True,
    )
    assert stored.next_query_at is None
    # When the platform resends it (same notification id): the inbox absorbs it
    assert await store_and_apply(db, notice) == (None, None)
    # And when the same payment arrives under another notification id: a no-op
    _, again = await store_and_apply(db, paid_notice(attempt, txn="4200000001"))
    assert again == "duplicate"
    assert await order_state(db, order.order_no) == ("paid", 2)
    assert await count(db, OrderEvent, OrderEvent.order_id == order.id) == 2
    assert await count(db, PaymentNotification) == 2
    assert await cases(db) == []


async def test_a_wrong_amount_moves_nothing_and_opens_a_case(db: Database) -> None:
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    # When the platform reports one fen less than the order total
    _, outcome = await store_and_apply(db, paid_notice(attempt, amount_minor=order.total_minor - 1))
    # Then the order stays pending, the attempt is flagged, and finance gets a case
    assert outcome == "amount_mismatch"
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    assert (await payment_row(db, attempt.id)).state == "mismatch"
    [case] = await cases(db, "amount_mismatch")
    assert (case.order_id, case.detail["expected_minor"], case.detail["received_minor"]) == (
        order.id,
        order.total_minor,
        order.total_minor - 1,
    )
    # And the timeout will not close an order whose buyer paid (a wrong amount)
    due = DueOrder(order.id, order.order_no, order.payment_deadline_at)
    assert await compensation.keep_open_if_paid(db, [due]) == {order.id}


async def test_a_second_payment_for_a_paid_order_is_a_double_payment(db: Database) -> None:
    order = await make_order(db)
    first = await make_attempt(db, order, "wechatpay")
    second = await make_attempt(db, order, "alipay")
    assert (await store_and_apply(db, paid_notice(first, txn="W-1")))[1] == "paid"
    # When the buyer also pays the Alipay attempt
    _, outcome = await store_and_apply(db, paid_notice(second, txn="A-1"))
    # Then the money is recorded, the order is untouched, and a refund case is opened
    assert outcome == "double_payment"
    assert await order_state(db, order.order_no) == ("paid", 2)
    assert (await payment_row(db, second.id)).state == "paid"
    assert (await payment_row(db, second.id)).settles_order is False
    [case] = await cases(db, "double_payment")
    assert case.detail["to_refund_minor"] == order.total_minor
    assert case.detail["out_trade_no"] == second.out_trade_no


async def test_payment_after_close_is_flagged_for_refund_by_default(db: Database) -> None:
    order = await make_order(db, "closed")
    attempt = await make_attempt(db, order)
    _, outcome = await store_and_apply(db, paid_notice(attempt))
    assert outcome == "paid_after_close"
    assert await order_state(db, order.order_no) == ("closed", 2)
    [case] = await cases(db, "paid_after_close")
    assert (case.order_id, case.detail["policy"]) == (order.id, "refund")


async def test_unknown_out_trade_no_is_stored_and_flagged(db: Database) -> None:
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    notice = paid_notice(attempt, out_trade_no="NOT-OURS-1")
    notification_id, outcome = await store_and_apply(db, notice)
    assert outcome == "unknown_trade"
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    [case] = await cases(db, "unknown_trade")
    assert (case.order_id, case.detail["notification_id"]) == (None, notification_id)


async def test_refunds_partial_then_full_never_more_than_paid(db: Database) -> None:
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    await store_and_apply(db, paid_notice(attempt))
    total = order.total_minor
    # A partial refund is recorded; the order stays paid
    _, outcome = await store_and_apply(
        db, refund_notice(attempt, refund_minor=1000, out_refund_no="R1")
    )
    assert outcome == "refund_recorded"
    assert await order_state(db, order.order_no) == ("paid", 2)
    # The same refund again (another notification id) changes nothing
    _, outcome = await store_and_apply(
        db, refund_notice(attempt, refund_minor=1000, out_refund_no="R1")
    )
    assert outcome == "duplicate"
    # A refund that would exceed what was paid is refused and flagged
    _, outcome = await store_and_apply(
        db, refund_notice(attempt, refund_minor=total, out_refund_no="R2")
    )
    assert outcome == "refund_exceeds_paid"
    assert (await payment_row(db, attempt.id)).refunded_minor == 1000
    assert len(await cases(db, "refund_exceeds_paid")) == 1
    # The rest refunds it fully: the order moves to refunded
    _, outcome = await store_and_apply(
        db, refund_notice(attempt, refund_minor=total - 1000, out_refund_no="R3")
    )
    assert outcome == "refund_full"
    assert await order_state(db, order.order_no) == ("refunded", 3)
    assert (await payment_row(db, attempt.id)).refunded_minor == total
    assert await count(db, PaymentRefund) == 2
    assert [t[0] for t in await trail(db, order.id)] == ["payment_succeeded", "refund"]


async def test_alipay_refunds_report_a_running_total(db: Database) -> None:
    order = await make_order(db)
    attempt = await make_attempt(db, order, "alipay")
    await store_and_apply(db, paid_notice(attempt))
    _, first = await store_and_apply(
        db, refund_notice(attempt, refund_minor=500, out_refund_no="B1", cumulative=True)
    )
    # A late resend of a smaller running total is a no-op
    _, stale = await store_and_apply(
        db, refund_notice(attempt, refund_minor=500, out_refund_no="B1", cumulative=True)
    )
    _, full = await store_and_apply(
        db,
        refund_notice(attempt, refund_minor=order.total_minor, out_refund_no="B2", cumulative=True),
    )
    assert (first, stale, full) == ("refund_recorded", "duplicate", "refund_full")
    assert await order_state(db, order.order_no) == ("refunded", 3)


async def test_a_refund_before_its_payment_waits_for_it(db: Database) -> None:
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    async with db.transaction() as session:
        refund_id = await inbox.store_notice(
            session,
            refund_notice(attempt, refund_minor=100, out_refund_no="R9"),
            source="callback",
            received_at=order.created_at,
            publish=False,
        )
    assert refund_id is not None
    with pytest.raises(apply.PaymentNotYetApplied):
        async with db.transaction() as session:
            await apply.apply_notification(session, refund_id)
    await store_and_apply(db, paid_notice(attempt))
    async with db.transaction() as session:
        assert await apply.apply_notification(session, refund_id) == "refund_recorded"


async def test_the_worker_applies_what_the_inbox_announced(db: Database) -> None:
    # Given 3 stored notifications (one event each) and a resend of the first
    orders = [await make_order(db) for _ in range(3)]
    attempts = [await make_attempt(db, o) for o in orders]
    notices = [paid_notice(a) for a in attempts]
    async with db.transaction() as session:
        ids = [
            await inbox.store_notice(
                session, n, source="callback", received_at=orders[0].created_at
            )
            for n in [*notices, notices[0]]
        ]
    assert ids[3] is None
    # When the dispatcher drains the outbox
    await dispatcher.drain(db, get_settings())
    # Then every order is paid once and every notification is applied
    assert [await order_state(db, o.order_no) for o in orders] == [("paid", 2)] * 3
    assert await count(db, PaymentNotification, PaymentNotification.outcome == "paid") == 3
    assert await count(db, ExceptionCase) == 0


async def test_reopen_policy_pays_a_closed_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.orders.state_machine import find

    if find("reopen_paid") is None:
        pytest.skip("the reopen_paid transition is not in the table")
    monkeypatch.setenv("ORDERTALLY_PAYMENT_PAID_AFTER_CLOSE_POLICY", "reopen")
    reset_settings()
    order = await make_order(db, "closed")
    attempt = await make_attempt(db, order)
    _, outcome = await store_and_apply(db, paid_notice(attempt, txn="LATE-1"))
    assert outcome == "paid_after_close"
    assert await order_state(db, order.order_no) == ("paid", 3)
    assert (await trail(db, order.id))[-1] == (
        "reopen_paid",
        "payment_callback",
        "wechatpay:notify",
        "LATE-1",
    )
    [case] = await cases(db, "paid_after_close")
    assert case.detail["policy"] == "reopen"
