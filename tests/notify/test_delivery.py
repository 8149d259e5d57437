"""Notifications end to end over real HTTP and SMTP: events through the outbox become exactly
one message per (event, target) — an Apprise JSON webhook, an Apprise email and an Aliyun SMS
to the buyer — even when an event is dispatched twice or two senders run at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

import ordertally.notify.consumers  # noqa: F401  (registers notify.plan and the sender)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.events import service as events_service
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.notify import service, templates
from ordertally.notify.models import Notification
from ordertally.notify.service import SendResult
from ordertally.notify.sms_simulator import SmsSimServer
from tests.factories import make_order
from tests.notify.conftest import Mailbox, Receiver, configure
from tests.statements import Statements

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # 16:00 in Asia/Shanghai


def _ops(receiver: Receiver, mailbox: Mailbox) -> list[dict[str, Any]]:
    return [
        {"name": "ops-json", "url": receiver.apprise_url("ops"), "events": ["*"], "lang": "zh"},
        {
            "name": "ops-mail",
            "url": (
                f"mailto://127.0.0.1:{mailbox.port}?mode=insecure"
                "&from=ordertally@shop.example&to=ops@shop.example"
            ),
            "events": ["OrderPaid", "ShipmentTrackingException"],
            "lang": "en",
        },
    ]


async def _rows(db: Database) -> list[Notification]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(Notification).order_by(Notification.id))).all())


async def _publish(db: Database, event_type: str, payload: dict[str, Any]) -> str:
    async with db.transaction() as session:
        return await outbox.publish(
            session, event_type, payload, aggregate_type="shipment", aggregate_id="1"
        )


def shipped(order_no: str, order_id: int) -> dict[str, Any]:
    return {
        "shipment_id": 1,
        "order_id": order_id,
        "order_no": order_no,
        "warehouse": "WH-TEST",
        "carrier": "shunfeng",
        "waybill_no": "SF1234567890",
        "tracking_url": "https://shop.example/t/abc123",
        "shipped_at": "2026-03-01T09:30:00Z",
    }


async def test_paid_order_gets_one_webhook_one_email_and_one_sms(
    db: Database,
    receiver: Receiver,
    mailbox: Mailbox,
    sms_sim: SmsSimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a JSON webhook and an email for operations, and Aliyun SMS for the buyer
    configure(monkeypatch, ops=_ops(receiver, mailbox), sms_url=sms_sim.url)
    with clock.frozen(T0):
        order = await make_order(db, status="paid")
        # When the outbox is drained and the sender runs
        await drain(db, get_settings())
        result = await service.send_due(db)
    # Then three messages were planned and sent, one per target
    assert result == SendResult(claimed=3, sent=3, retried=0, dead=0)
    rows = await _rows(db)
    assert [(r.event_type, r.target_kind, r.target_key, r.status, r.attempts) for r in rows] == [
        ("OrderPaid", "json", "ops:ops-json", "sent", 1),
        ("OrderPaid", "email", "ops:ops-mail", "sent", 1),
        ("OrderPaid", "sms", "sms:aliyun", "sent", 1),
    ]
    assert {r.order_no for r in rows} == {order.order_no}
    # And the webhook received the Chinese message once, with our id header
    assert receiver.received == [
        {
            "version": "1.0",
            "title": f"订单已支付：{order.order_no}",
            "message": (
                f"订单 {order.order_no} 已于 2026-03-01 16:00 (Asia/Shanghai) "
                "完成支付，请安排发货。"
            ),
            "type": "info",
            "attachments": [],
        }
    ]
    assert receiver.headers[0]["x-ordertally-notification-id"] == str(rows[0].id)
    # And the mailbox received the English email once
    assert mailbox.subjects() == [f"Order paid: {order.order_no}"]
    assert mailbox.envelopes == [("ordertally@shop.example", ["ops@shop.example"])]
    assert (
        f"Order {order.order_no} was paid at 2026-03-01 16:00 (Asia/Shanghai)"
        in (mailbox.bodies()[0])
    )
    # And the buyer got one SMS on the clear number, with the template's variables
    messages = sms_sim.sim.messages
    assert [
        (m.phone_numbers, m.sign_name, m.template_code, m.template_param) for m in messages
    ] == [("13812345678", "茶叶小铺", "SMS_100001", {"order_no": order.order_no})]
    assert messages[0].out_id == str(rows[2].id)
    assert rows[2].provider_message_id == messages[0].biz_id
    assert rows[2].recipient_masked == "138****5678"

    # When everything runs again, and the event itself is dispatched a second time
    async with db.transaction() as session:
        await session.execute(update(OutboxEvent).values(status="pending", done_at=None))
        await session.execute(text("DELETE FROM processed_event WHERE consumer = 'notify.plan'"))
    await drain(db, get_settings())
    again = await service.send_due(db)
    # Then nothing new was planned or sent
    assert again == SendResult()
    assert len(await _rows(db)) == 3
    assert len(receiver.received) == 1
    assert len(mailbox.messages) == 1
    assert len(sms_sim.sim.messages) == 1


async def test_shipping_events_reach_only_the_targets_that_want_them(
    db: Database,
    receiver: Receiver,
    mailbox: Mailbox,
    sms_sim: SmsSimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the webhook wants every event, the email only paid and tracking exceptions
    configure(monkeypatch, ops=_ops(receiver, mailbox), sms_url=sms_sim.url)
    order = await make_order(db, status="paid")
    async with db.transaction() as session:
        await session.execute(update(OutboxEvent).values(status="done"))
    # When shipped, delivered and a tracking exception are published and sent
    await _publish(db, "ShipmentShipped", shipped(order.order_no, order.id))
    await _publish(
        db,
        "ShipmentDelivered",
        {
            **{k: v for k, v in shipped(order.order_no, order.id).items() if k != "shipped_at"},
            "delivered_at": "2026-03-03T02:00:00Z",
        },
    )
    await _publish(
        db,
        "ShipmentTrackingException",
        {
            **{k: v for k, v in shipped(order.order_no, order.id).items() if k != "shipped_at"},
            "reason": "rejected",
            "detail": "收件人拒收",
            "occurred_at": "2026-03-02T05:00:00Z",
        },
    )
    await drain(db, get_settings())
    result = await service.send_due(db)
    # Then the webhook got three, the email one (the exception), the buyer three SMS
    assert result == SendResult(claimed=7, sent=7)
    rows = await _rows(db)
    assert sorted((r.event_type, r.target_kind) for r in rows) == [
        ("ShipmentDelivered", "json"),
        ("ShipmentDelivered", "sms"),
        ("ShipmentShipped", "json"),
        ("ShipmentShipped", "sms"),
        ("ShipmentTrackingException", "email"),
        ("ShipmentTrackingException", "json"),
        ("ShipmentTrackingException", "sms"),
    ]
    titles = sorted(m["title"] for m in receiver.received)
    assert titles == [
        f"已发货：{order.order_no}",
        f"已签收：{order.order_no}",
        f"物流异常：{order.order_no}（收件人拒签）",
    ]
    shipped_msg = next(m for m in receiver.received if m["title"].startswith("已发货"))
    assert shipped_msg["message"] == (
        f"订单 {order.order_no} 已于 2026-03-01 17:30 (Asia/Shanghai) 从 WH-TEST 发出，"
        "顺丰速运 运单号 SF1234567890。\n物流跟踪：https://shop.example/t/abc123"
    )
    assert mailbox.subjects() == [
        f"Tracking exception: {order.order_no} (refused by the recipient)"
    ]
    params = sorted(
        (m.template_code, sorted(m.template_param.items())) for m in sms_sim.sim.messages
    )
    assert params == [
        (
            "SMS_100002",
            [
                ("carrier_name", "顺丰速运"),
                ("order_no", order.order_no),
                ("tracking_url", "https://shop.example/t/abc123"),
                ("waybill_no", "SF1234567890"),
            ],
        ),
        (
            "SMS_100003",
            [
                ("carrier_name", "顺丰速运"),
                ("order_no", order.order_no),
                ("waybill_no", "SF1234567890"),
            ],
        ),
        (
            "SMS_100004",
            [
                ("order_no", order.order_no),
                ("reason_text", "收件人拒签"),
                ("waybill_no", "SF1234567890"),
            ],
        ),
    ]


async def test_two_senders_at_once_send_each_message_once(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 30 paid orders whose messages are planned for one webhook
    configure(
        monkeypatch,
        ops=[{"url": receiver.apprise_url(), "events": ["OrderPaid"]}],
        notify_send_batch="10",
    )
    for _ in range(30):
        await make_order(db, status="paid")
    await drain(db, get_settings())
    assert len(await _rows(db)) == 30
    # When two senders (each with its own connections on PostgreSQL) run side by side until done
    other = Database(db.url, pool_size=5)
    try:
        totals: list[SendResult] = []

        async def run(database: Database) -> None:
            while (result := await service.send_due(database)).claimed:
                totals.append(result)

        await asyncio.gather(run(db), run(other))
    finally:
        await other.dispose()
    # Then every message was sent exactly once
    assert sum(r.sent for r in totals) == 30
    assert sum(r.claimed for r in totals) == 30
    assert len(receiver.received) == 30
    ids = [h["x-ordertally-notification-id"] for h in receiver.headers]
    assert len(set(ids)) == 30
    rows = await _rows(db)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}


async def test_a_failing_webhook_is_retried_with_backoff_until_it_recovers(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a webhook that answers 500 twice, backoff base 10 s
    configure(
        monkeypatch,
        ops=[{"name": "hook", "url": receiver.apprise_url(), "events": ["OrderPaid"]}],
        notify_backoff_base_seconds="10",
    )
    receiver.fail(2)
    with clock.frozen(T0):
        await make_order(db, status="paid")
        await drain(db, get_settings())
        # When the sender runs: the first attempt fails
        assert await service.send_due(db) == SendResult(claimed=1, retried=1)
        (row,) = await _rows(db)
        assert (row.status, row.attempts, row.next_attempt_at) == (
            "failed",
            1,
            T0 + timedelta(seconds=10),
        )
        assert row.last_error and "500" in row.last_error
        # Then nothing is due before the backoff has passed
        clock.advance(timedelta(seconds=9))
        assert await service.send_due(db) == SendResult()
        # When the backoff has passed the second attempt fails and the backoff doubles
        clock.advance(timedelta(seconds=1))
        assert await service.send_due(db) == SendResult(claimed=1, retried=1)
        (row,) = await _rows(db)
        assert (row.status, row.attempts, row.next_attempt_at) == (
            "failed",
            2,
            T0 + timedelta(seconds=30),
        )
        # When the receiver has recovered, the third attempt delivers it
        clock.advance(timedelta(seconds=20))
        assert await service.send_due(db) == SendResult(claimed=1, sent=1)
    (row,) = await _rows(db)
    assert (row.status, row.attempts, row.last_error, row.sent_at) == (
        "sent",
        3,
        None,
        T0 + timedelta(seconds=30),
    )
    assert receiver.attempts == 3
    assert len(receiver.received) == 1
    # And a sent message is never sent again
    with clock.frozen(T0 + timedelta(days=1)):
        assert await service.send_due(db) == SendResult()
    assert receiver.attempts == 3


async def test_a_message_dies_after_max_attempts_and_can_be_requeued(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a webhook that keeps failing and three attempts at most
    configure(
        monkeypatch,
        ops=[{"name": "hook", "url": receiver.apprise_url(), "events": ["OrderPaid"]}],
        notify_max_attempts="3",
        notify_backoff_base_seconds="1",
    )
    receiver.fail(1000, status=503)
    with clock.frozen(T0):
        await make_order(db, status="paid")
        await drain(db, get_settings())
        # When the sender runs as each backoff passes
        outcomes = []
        for _ in range(3):
            outcomes.append(await service.send_due(db))
            clock.advance(timedelta(seconds=10))
        # Then two attempts are retried and the third makes it dead
        assert outcomes == [
            SendResult(claimed=1, retried=1),
            SendResult(claimed=1, retried=1),
            SendResult(claimed=1, dead=1),
        ]
        (row,) = await _rows(db)
        assert (row.status, row.attempts, row.next_attempt_at) == ("dead", 3, None)
        # And a dead message is never claimed again
        clock.advance(timedelta(days=1))
        assert await service.send_due(db) == SendResult()
        assert receiver.attempts == 3
        # When an operator requeues it after the receiver recovered
        receiver.fail(0)
        async with db.transaction() as session:
            requeued = await service.requeue(session, row.id)
        assert (requeued.status, requeued.attempts) == ("pending", 0)
        assert await service.send_due(db) == SendResult(claimed=1, sent=1)
    (row,) = await _rows(db)
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(receiver.received) == 1


async def test_nothing_is_planned_when_no_target_is_configured(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no ops target and SMS off
    configure(monkeypatch)
    # When an order is paid and its events dispatched
    await make_order(db, status="paid")
    await drain(db, get_settings())
    # Then the send log is empty and the sender has nothing to do
    assert await _rows(db) == []
    assert await service.send_due(db) == SendResult()
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 0


async def test_unreachable_webhook_is_retried_not_lost(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a webhook on a port nobody listens on
    from tests.notify.conftest import free_port

    port = free_port()
    configure(
        monkeypatch,
        ops=[{"url": f"json://127.0.0.1:{port}/hook?cto=1&rto=1", "events": ["OrderPaid"]}],
    )
    await make_order(db, status="paid")
    await drain(db, get_settings())
    # When the sender runs
    assert await service.send_due(db) == SendResult(claimed=1, retried=1)
    # Then the row waits for its next attempt with the error recorded
    (row,) = await _rows(db)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error
    assert row.target_key.startswith("json:")
    assert str(port) not in row.target_key


async def test_a_message_whose_target_was_removed_dies_without_blocking_others(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given messages planned for two webhooks
    gone = {"name": "gone", "url": receiver.apprise_url("gone"), "events": ["OrderPaid"]}
    kept = {"name": "kept", "url": receiver.apprise_url("kept"), "events": ["OrderPaid"]}
    configure(monkeypatch, ops=[gone, kept])
    await make_order(db, status="paid")
    await drain(db, get_settings())
    # When one target is removed from the settings before the sender runs
    configure(monkeypatch, ops=[kept])
    # Then its message is dead with the reason, and the other one is sent
    assert await service.send_due(db) == SendResult(claimed=2, sent=1, dead=1)
    rows = await _rows(db)
    assert [(r.target_key, r.status, r.last_error) for r in rows] == [
        ("ops:gone", "dead", "target no longer configured"),
        ("ops:kept", "sent", None),
    ]
    assert len(receiver.received) == 1


@pytest.fixture
def every_target(
    receiver: Receiver, mailbox: Mailbox, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook and the email for operations, and the buyer SMS."""
    configure(monkeypatch, ops=_ops(receiver, mailbox), sms_url=sms_sim.url)


async def test_a_worker_batch_plans_its_events_messages_in_one_insert(
    db: Database, every_target: None
) -> None:
    # Given the webhook, the email and the buyer SMS, and five orders paid (their events, the
    # OrderPaid ones among them, waiting in the outbox)
    with clock.frozen(T0):
        orders = [await make_order(db, status="paid", external_id=f"batch-{i}") for i in range(5)]
    async with db.transaction(write=False) as session:
        logged = await events_service.replay_log(session, sorted(templates.EVENTS), 0, 1000)
    envelopes = [envelope for _, envelope in logged]
    assert len(envelopes) == 5
    # When notify plans them as one worker batch
    with clock.frozen(T0), Statements(db) as batch:
        async with db.transaction() as session:
            added = await service.plan_many(session, envelopes)
    # Then each paid order has its three messages, the SMS with the order's masked phone
    rows = await _rows(db)
    assert added == len(rows) == 15
    assert sorted((r.order_no, r.target_key, r.recipient_masked) for r in rows) == sorted(
        (o.order_no, key, masked)
        for o in orders
        for key, masked in (
            ("ops:ops-json", None),
            ("ops:ops-mail", None),
            ("sms:aliyun", "138****5678"),
        )
    )
    # And they were written by one INSERT after one read of the five orders' phones
    assert [s.split()[0] for s in batch.on("notification")] == ["INSERT"]
    assert [s.split()[0] for s in batch.on("sales_order")] == ["SELECT"]
    # When the same batch is planned again, then nothing new is written
    async with db.transaction() as session:
        assert await service.plan_many(session, envelopes) == 0
    assert len(await _rows(db)) == 15
