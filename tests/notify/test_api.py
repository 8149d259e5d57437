"""The notify API: the send log filtered by order and status, requeueing a dead message, a test
send to a configured target over real HTTP/SMTP/SMS, permissions and problem errors."""

from __future__ import annotations

import subprocess
import sys
import time
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

import ordertally.notify.consumers  # noqa: F401  (registers notify.plan and the sender)
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.notify import service
from ordertally.notify.models import Notification
from ordertally.notify.sms.aliyun import AliyunConfig, signed_params
from ordertally.notify.sms_simulator import SmsSimServer
from tests.factories import auth, make_order
from tests.notify.conftest import Mailbox, Receiver, configure, free_port

pytestmark = pytest.mark.anyio


async def test_the_send_log_filters_pages_and_requeues_dead_messages(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a webhook that refuses everything, one attempt at most, and two paid orders
    configure(
        monkeypatch,
        ops=[{"name": "hook", "url": receiver.apprise_url(), "events": ["OrderPaid"]}],
        notify_max_attempts="1",
    )
    receiver.fail(1)
    first = await make_order(db, status="paid")
    await drain(db, get_settings())
    assert (await service.send_due(db)).dead == 1
    second = await make_order(db, status="paid")
    await drain(db, get_settings())
    assert (await service.send_due(db)).sent == 1
    # When the log is read by customer service, filtered by order and by status
    cs = auth(keys["cs"])
    by_order = await client.get(f"/api/v1/notifications?order_no={first.order_no}", headers=cs)
    dead = await client.get("/api/v1/notifications?status=dead", headers=cs)
    everything = await client.get("/api/v1/notifications?limit=1", headers=cs)
    # Then each answer holds exactly the matching rows, newest first
    assert by_order.status_code == 200
    (row,) = by_order.json()["notifications"]
    assert (row["order_no"], row["status"], row["attempts"], row["target_key"]) == (
        first.order_no,
        "dead",
        1,
        "ops:hook",
    )
    assert "500" in row["last_error"]
    assert [n["id"] for n in dead.json()["notifications"]] == [row["id"]]
    page = everything.json()
    assert [n["order_no"] for n in page["notifications"]] == [second.order_no]
    rest = await client.get(f"/api/v1/notifications?before_id={page['next_before_id']}", headers=cs)
    assert [n["order_no"] for n in rest.json()["notifications"]] == [first.order_no]
    assert rest.json()["next_before_id"] is None
    # When customer service tries to requeue it, it is refused and nothing changes
    refused = await client.post(f"/api/v1/notifications/{row['id']}/retry", headers=cs)
    assert refused.status_code == 403
    assert refused.json()["code"] == "auth.forbidden"
    # When operations requeues it
    ops = auth(keys["ops"])
    retried = await client.post(f"/api/v1/notifications/{row['id']}/retry", headers=ops)
    assert retried.status_code == 200
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    # Then the sender delivers it once
    assert (await service.send_due(db)).sent == 1
    assert sorted(m["title"] for m in receiver.received) == sorted(
        [f"订单已支付：{first.order_no}", f"订单已支付：{second.order_no}"]
    )
    # And a sent message cannot be requeued, an unknown one is not found, bad filters are 422
    again = await client.post(f"/api/v1/notifications/{row['id']}/retry", headers=ops)
    assert (again.status_code, again.json()["code"]) == (409, "notify.not_dead")
    missing = await client.post("/api/v1/notifications/999999/retry", headers=ops)
    assert (missing.status_code, missing.json()["code"]) == (404, "notify.not_found")
    bad = await client.get("/api/v1/notifications?status=lost", headers=cs)
    assert bad.status_code == 422
    assert (await client.get("/api/v1/notifications")).status_code == 401


async def test_a_test_message_reaches_a_configured_target(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    receiver: Receiver,
    mailbox: Mailbox,
    sms_sim: SmsSimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a webhook, an email target and the SMS gateway
    configure(
        monkeypatch,
        ops=[
            {"name": "hook", "url": receiver.apprise_url()},
            {
                "name": "mail",
                "url": f"mailto://127.0.0.1:{mailbox.port}?mode=insecure"
                "&from=ot@shop.example&to=ops@shop.example",
                "lang": "en",
            },
        ],
        sms_url=sms_sim.url,
    )
    ops = auth(keys["ops"])
    # When operations sends a test message to each
    hook = await client.post("/api/v1/notifications/test", json={"target": "ops:hook"}, headers=ops)
    mail = await client.post("/api/v1/notifications/test", json={"target": "ops:mail"}, headers=ops)
    sms = await client.post(
        "/api/v1/notifications/test",
        json={"target": "sms:aliyun", "phone": "13700001111", "lang": "zh"},
        headers=ops,
    )
    # Then each arrived once and was logged as sent
    assert [r.status_code for r in (hook, mail, sms)] == [201, 201, 201]
    assert [r.json()["status"] for r in (hook, mail, sms)] == ["sent", "sent", "sent"]
    assert [m["title"] for m in receiver.received] == ["ordertally 测试消息"]
    assert receiver.headers[0]["x-ordertally-notification-id"].startswith("test-")
    assert mailbox.subjects() == ["ordertally test message"]
    (message,) = sms_sim.sim.messages
    assert (message.phone_numbers, message.template_code) == ("13700001111", "SMS_100009")
    assert sms.json()["recipient"] == "137****1111"
    assert sms.json()["provider_message_id"] == message.biz_id
    # And a test to an unknown target or an SMS test without a phone is refused, nothing sent
    unknown = await client.post(
        "/api/v1/notifications/test", json={"target": "ops:nope"}, headers=ops
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "notify.target_not_found")
    assert unknown.json()["known"] == ["ops:hook", "ops:mail", "sms:aliyun"]
    no_phone = await client.post(
        "/api/v1/notifications/test", json={"target": "sms:aliyun"}, headers=ops
    )
    assert (no_phone.status_code, no_phone.json()["code"]) == (422, "notify.test_phone_required")
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Notification))).all()
    assert len(rows) == 3
    assert len(receiver.received) == 1 and len(sms_sim.sim.messages) == 1
    # And a failing target is logged dead with its error, not retried
    receiver.fail(1)
    failed = await client.post(
        "/api/v1/notifications/test", json={"target": "ops:hook"}, headers=ops
    )
    assert (failed.status_code, failed.json()["status"]) == (201, "dead")
    assert await service.send_due(db) == service.SendResult()
    assert receiver.attempts == 2


def test_smssim_command_serves_a_verifying_gateway() -> None:
    # Given `ordertally smssim` started as an operator would
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "ordertally", "smssim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    http.get("/sim/messages")
                    break
                except httpx.TransportError:
                    assert server.poll() is None, server.stderr.read() if server.stderr else ""
                    assert time.monotonic() < deadline, "smssim did not start"
                    time.sleep(0.1)
            config = AliyunConfig("sim-access-key", "sim-access-secret", "店", base, 5)
            # When a correctly signed and a forged request arrive
            good = signed_params(config, "13812345678", "SMS_1", {"order_no": "OT1"}, "1")
            forged = good | {"Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
            ok = http.post("/", content=urlencode(good))
            bad = http.post("/", content=urlencode(forged))
            # Then the first is accepted and recorded, the second refused
            assert ok.json()["Code"] == "OK"
            assert (bad.status_code, bad.json()["Code"]) == (400, "SignatureDoesNotMatch")
            recorded = http.get("/sim/messages").json()
            assert [m["template_param"] for m in recorded["messages"]] == [{"order_no": "OT1"}]
    finally:
        server.terminate()
        server.wait(timeout=15)
