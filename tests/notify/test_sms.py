"""The Aliyun SMS adapter against the simulator over real HTTP: the signature matches Aliyun's
documented example, the simulator verifies it exactly and refuses forged, tampered, replayed
and stale requests, and each failure mode maps to retry or give up; through the sender a
throttled SMS is retried and an illegal number dies at once; the clear phone never lands in the
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

import ordertally.notify.consumers  # noqa: F401  (registers notify.plan and the sender)
from ordertally.core import clock
from ordertally.core.db import Base, Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.notify import service
from ordertally.notify.models import Notification
from ordertally.notify.service import SendResult
from ordertally.notify.sms import SmsFailed, SmsMessage
from ordertally.notify.sms.aliyun import (
    AliyunConfig,
    AliyunSms,
    sign,
    signed_batch_params,
    signed_params,
)
from ordertally.notify.sms_simulator import SmsSimServer, expected_signature
from tests.factories import make_order
from tests.notify.conftest import SMS_KEY_ID, SMS_SECRET, configure, free_port

pytestmark = pytest.mark.anyio

# The example in Aliyun's SMS signature documentation (GET, AccessKeySecret "testSecret").
DOC_PARAMS = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}
DOC_SIGNATURE = "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def _config(url: str, secret: str = SMS_SECRET, key_id: str = SMS_KEY_ID) -> AliyunConfig:
    return AliyunConfig(key_id, secret, "茶叶小铺", url, timeout=5)


def test_signature_matches_aliyuns_documented_example() -> None:
    # Given Aliyun's documented request; When both our client and the simulator sign it
    # Then both give the documented signature, and any change of a value changes it
    assert sign("GET", DOC_PARAMS, "testSecret") == DOC_SIGNATURE
    assert expected_signature("GET", DOC_PARAMS, "testSecret") == DOC_SIGNATURE
    assert sign("GET", DOC_PARAMS | {"OutId": "124"}, "testSecret") != DOC_SIGNATURE
    assert sign("POST", DOC_PARAMS, "testSecret") != DOC_SIGNATURE
    assert sign("GET", DOC_PARAMS | {"Signature": "x"}, "testSecret") == DOC_SIGNATURE


async def test_a_signed_sms_is_accepted_and_recorded(sms_sim: SmsSimServer) -> None:
    # When the adapter sends one message to the simulator
    gateway = AliyunSms(_config(sms_sim.url))
    sent = await gateway.send("+8613812345678", "SMS_1", {"order_no": "OT1 2*~"}, out_id="42")
    # Then it was verified and recorded exactly as sent
    (message,) = sms_sim.sim.messages
    assert (message.phone_numbers, message.sign_name, message.template_code) == (
        "13812345678",
        "茶叶小铺",
        "SMS_1",
    )
    assert (message.template_param, message.out_id) == ({"order_no": "OT1 2*~"}, "42")
    assert sent.message_id == message.biz_id
    assert sent.request_id
    assert sms_sim.sim.rejections == []


async def test_forged_tampered_replayed_and_stale_requests_are_refused(
    sms_sim: SmsSimServer,
) -> None:
    # Given a request signed with the wrong secret
    forged = AliyunSms(_config(sms_sim.url, secret="not-the-secret"))
    # When it is sent; Then the simulator refuses it and nothing is retried or recorded
    with pytest.raises(SmsFailed) as refused:
        await forged.send("13812345678", "SMS_1", {}, out_id="1")
    assert (refused.value.code, refused.value.retryable) == ("SignatureDoesNotMatch", False)
    # And an unknown key id is refused too
    with pytest.raises(SmsFailed) as unknown:
        await AliyunSms(_config(sms_sim.url, key_id="LTAI-nobody")).send(
            "13812345678", "SMS_1", {}, out_id="1"
        )
    assert (unknown.value.code, unknown.value.retryable) == ("InvalidAccessKeyId.NotFound", False)

    async with httpx.AsyncClient(base_url=sms_sim.url, trust_env=False) as http:
        form = signed_params(_config(sms_sim.url), "13812345678", "SMS_1", {"a": "1"}, "7")
        # When a correctly signed request has its phone number changed in transit
        tampered = await http.post("/", content=urlencode(form | {"PhoneNumbers": "13900000000"}))
        # Then the signature no longer matches
        assert tampered.status_code == 400
        assert tampered.json()["Code"] == "SignatureDoesNotMatch"
        # When the genuine request is sent, then replayed with the same nonce
        assert (await http.post("/", content=urlencode(form))).json()["Code"] == "OK"
        replay = await http.post("/", content=urlencode(form))
        assert (replay.status_code, replay.json()["Code"]) == (400, "SignatureNonceUsed")
        # When a request signed 16 minutes ago arrives
        old = signed_params(
            _config(sms_sim.url),
            "13812345678",
            "SMS_1",
            {},
            "8",
            at=clock.now() - timedelta(minutes=16),
        )
        stale = await http.post("/", content=urlencode(old))
        assert (stale.status_code, stale.json()["Code"]) == (400, "InvalidTimeStamp.Expired")
        # When a GET request is signed as GET it is accepted too (the API takes both)
        got = signed_params(_config(sms_sim.url), "13812345678", "SMS_1", {}, "9")
        got["Signature"] = sign("GET", got, SMS_SECRET)
        assert (await http.get("/?" + urlencode(got))).json()["Code"] == "OK"
    # Then only the two genuine requests were recorded
    assert [m.out_id for m in sms_sim.sim.messages] == ["7", "9"]
    assert [r["code"] for r in sms_sim.sim.rejections] == [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "SignatureDoesNotMatch",
        "SignatureNonceUsed",
        "InvalidTimeStamp.Expired",
    ]


@pytest.mark.parametrize(
    ("mode", "code", "retryable"),
    [
        ("throttle", "isv.BUSINESS_LIMIT_CONTROL", True),
        ("illegal", "isv.MOBILE_NUMBER_ILLEGAL", False),
        ("500", "InternalError", True),
        ("down", "http_503", True),
    ],
)
async def test_failure_modes_map_to_retry_or_give_up(
    sms_sim: SmsSimServer, mode: str, code: str, retryable: bool
) -> None:
    # Given the simulator told to fail the next request
    async with httpx.AsyncClient(base_url=sms_sim.url, trust_env=False) as http:
        assert (await http.post("/sim/fail", json={"mode": mode, "count": 1})).status_code == 200
    gateway = AliyunSms(_config(sms_sim.url))
    # When a message is sent; Then it fails with the platform's code and the right decision
    with pytest.raises(SmsFailed) as failed:
        await gateway.send("13812345678", "SMS_1", {}, out_id="1")
    assert (failed.value.code, failed.value.retryable) == (code, retryable)
    assert sms_sim.sim.messages == []
    # And the next one goes through
    await gateway.send("13812345678", "SMS_1", {}, out_id="2")
    assert [m.out_id for m in sms_sim.sim.messages] == ["2"]


async def test_a_gateway_that_is_not_listening_is_a_retryable_failure() -> None:
    gateway = AliyunSms(_config(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(SmsFailed) as failed:
        await gateway.send("13812345678", "SMS_1", {}, out_id="1")
    assert (failed.value.code, failed.value.retryable) == ("network", True)


async def test_throttled_sms_is_retried_and_an_illegal_number_dies_at_once(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Aliyun SMS for the buyer only, and a gateway that throttles the first request
    configure(monkeypatch, sms_url=sms_sim.url, notify_backoff_base_seconds="5")
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    with clock.frozen(t0):
        await make_order(db, status="paid")
        await drain(db, get_settings())
        sms_sim.sim.fail("throttle", 1)
        # When the sender runs twice, the backoff apart
        assert await service.send_due(db) == SendResult(claimed=1, retried=1)
        async with db.transaction(write=False) as session:
            row = (await session.scalars(select(Notification))).one()
        assert row.status == "failed"
        assert row.last_error == "aliyun isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控Permits:1"
        clock.advance(timedelta(seconds=5))
        assert await service.send_due(db) == SendResult(claimed=1, sent=1)
        # Then the buyer got exactly one SMS
        assert len(sms_sim.sim.messages) == 1

        # When the gateway calls the next number illegal
        await make_order(db, status="paid")
        await drain(db, get_settings())
        sms_sim.sim.fail("illegal", 1)
        # Then that message is dead after one attempt; no retry can fix it
        assert await service.send_due(db) == SendResult(claimed=1, dead=1)
        clock.advance(timedelta(days=1))
        assert await service.send_due(db) == SendResult()
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Notification).order_by(Notification.id))).all()
    assert [(r.status, r.attempts) for r in rows] == [("sent", 2), ("dead", 1)]
    assert rows[1].last_error == "aliyun isv.MOBILE_NUMBER_ILLEGAL: 非法手机号"
    assert len(sms_sim.sim.messages) == 1


async def test_the_clear_phone_never_lands_in_the_database(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SMS on, an order paid and shipped, one SMS throttled once then sent
    configure(monkeypatch, sms_url=sms_sim.url, notify_backoff_base_seconds="1")
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        order = await make_order(db, status="paid")
        await drain(db, get_settings())
        sms_sim.sim.fail("throttle", 1)
        await service.send_due(db)
        clock.advance(timedelta(seconds=2))
        await service.send_due(db)
    # Then the gateway got the clear number
    assert [m.phone_numbers for m in sms_sim.sim.messages] == ["13812345678"]
    # And no column of any table holds it, in any form; the send log holds it masked
    clear = ("13812345678", "8613812345678", "+8613812345678")
    async with db.transaction(write=False) as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                text = repr(tuple(row))
                assert not any(c in text for c in clear), (table.name, text)
        masked = (await session.scalars(select(Notification.recipient_masked))).all()
    assert masked == ["138****5678"]
    assert order.customer_phone_masked == "138****5678"


# --- SendBatchSms: a round's messages of one template in one call (issue 21, ADR 0054) ---------


async def test_a_signed_batch_is_one_call_recorded_per_number(sms_sim: SmsSimServer) -> None:
    # Given three messages of one template, each number with its own variables
    gateway = AliyunSms(_config(sms_sim.url))
    messages = [
        SmsMessage("+8613812345678", {"order_no": "A1"}, "11"),
        SmsMessage("+8613912345678", {"order_no": "A2"}, "12"),
        SmsMessage("+85291234567", {"order_no": "A3"}, "13"),
    ]
    # When they are sent as one batch
    sent = await gateway.send_batch("SMS_100001", messages)
    # Then the simulator verified one signed SendBatchSms and took the three under its BizId
    assert (sms_sim.sim.requests, sms_sim.sim.calls) == (1, {"SendBatchSms": 1})
    assert [
        (m.biz_id, m.phone_numbers, m.sign_name, m.template_code, m.template_param, m.out_id)
        for m in sms_sim.sim.messages
    ] == [
        (sent.message_id, "13812345678", "茶叶小铺", "SMS_100001", {"order_no": "A1"}, "11"),
        (sent.message_id, "13912345678", "茶叶小铺", "SMS_100001", {"order_no": "A2"}, "11"),
        (sent.message_id, "85291234567", "茶叶小铺", "SMS_100001", {"order_no": "A3"}, "11"),
    ]
    assert sms_sim.sim.rejections == []


def test_batch_params_are_the_platforms_json_arrays_signed_like_any_call() -> None:
    # Given a batch of two, signed at a fixed time and nonce
    config = _config("http://sms.test")
    form = signed_batch_params(
        config,
        "SMS_1",
        [SmsMessage("+8613812345678", {"a": "1"}, "5"), SmsMessage("+8613912345678", {}, "6")],
        "5",
        at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
        nonce="n-1",
    )
    # Then the arrays have one entry per number, in one order, and the signature is the
    # platform's (recomputed by the simulator's own encoder)
    assert form["Action"] == "SendBatchSms"
    assert form["PhoneNumberJson"] == '["13812345678","13912345678"]'
    assert form["SignNameJson"] == '["茶叶小铺","茶叶小铺"]'
    assert form["TemplateParamJson"] == '[{"a":"1"},{}]'
    assert form["Signature"] == expected_signature("POST", form, SMS_SECRET)
    assert "PhoneNumbers" not in form and "TemplateParam" not in form


async def _paid_orders_with_sms(db: Database, count: int) -> None:
    for _ in range(count):
        await make_order(db, status="paid")
    await drain(db, get_settings())


async def _sms_rows(db: Database) -> list[Notification]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(Notification).order_by(Notification.id))).all())


async def test_a_rounds_sms_of_one_template_go_in_one_batch_call(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Aliyun SMS for the buyer only, and five paid orders (five OrderPaid SMS)
    configure(monkeypatch, sms_url=sms_sim.url)
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        await _paid_orders_with_sms(db, 5)
        # When the sender runs
        assert await service.send_due(db) == SendResult(claimed=5, sent=5)
    # Then the gateway got one SendBatchSms call carrying the five messages
    assert (sms_sim.sim.requests, sms_sim.sim.calls) == (1, {"SendBatchSms": 1})
    assert len(sms_sim.sim.messages) == 5
    assert {m.template_code for m in sms_sim.sim.messages} == {"SMS_100001"}
    # And each row is sent once, with the call's BizId as its provider id
    rows = await _sms_rows(db)
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1)] * 5
    assert {r.provider_message_id for r in rows} == {sms_sim.sim.messages[0].biz_id}
    # And each number got its own order's variables
    assert sorted(m.template_param["order_no"] for m in sms_sim.sim.messages) == sorted(
        r.order_no for r in rows
    )


async def test_batch_size_one_sends_each_message_alone(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the batch call turned off
    configure(monkeypatch, sms_url=sms_sim.url, aliyun_sms_batch_size="1")
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        await _paid_orders_with_sms(db, 3)
        # When the sender runs; Then each message is its own SendSms call
        assert await service.send_due(db) == SendResult(claimed=3, sent=3)
    assert sms_sim.sim.calls == {"SendSms": 3}
    assert len({r.provider_message_id for r in await _sms_rows(db)}) == 3


async def test_a_batch_refused_for_a_number_is_sent_one_by_one(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four SMS due, and a gateway that calls a number illegal twice: the batch (which it
    # refuses whole), then the first message sent alone
    configure(monkeypatch, sms_url=sms_sim.url)
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        await _paid_orders_with_sms(db, 4)
        sms_sim.sim.fail("illegal", 2)
        # When the sender runs
        result = await service.send_due(db)
    # Then each message got its own verdict: three sent alone, one dead at once
    assert result == SendResult(claimed=4, sent=3, dead=1)
    assert (sms_sim.sim.requests, sms_sim.sim.calls) == (1 + 4, {"SendSms": 3})
    rows = await _sms_rows(db)
    assert sorted((r.status, r.attempts) for r in rows) == [("dead", 1)] + [("sent", 1)] * 3
    assert len(sms_sim.sim.messages) == 3


async def test_a_batch_the_gateway_failed_is_retried_whole_and_never_doubled(
    db: Database, sms_sim: SmsSimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four SMS due, and a gateway that answers its next request with its own error
    configure(monkeypatch, sms_url=sms_sim.url, notify_backoff_base_seconds="5")
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        await _paid_orders_with_sms(db, 4)
        sms_sim.sim.fail("500", 1)
        # When the sender runs: the batch fails, and no message is tried alone
        assert await service.send_due(db) == SendResult(claimed=4, retried=4)
        assert (sms_sim.sim.requests, sms_sim.sim.messages) == (1, [])
        rows = await _sms_rows(db)
        assert {(r.status, r.attempts, r.last_error) for r in rows} == {
            ("failed", 1, "aliyun InternalError: The request processing has failed.")
        }
        # And after the backoff the four go again in one call, each once
        clock.advance(timedelta(seconds=5))
        assert await service.send_due(db) == SendResult(claimed=4, sent=4)
    assert (sms_sim.sim.requests, sms_sim.sim.calls) == (2, {"SendBatchSms": 1})
    assert len(sms_sim.sim.messages) == 4
    assert [(r.status, r.attempts) for r in await _sms_rows(db)] == [("sent", 2)] * 4


async def test_a_batch_to_a_gateway_that_is_down_stops_the_rounds_other_sms(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 2 x 3 SMS due with a batch size of 3, and a gateway nobody listens on
    configure(monkeypatch, sms_url=f"http://127.0.0.1:{free_port()}", aliyun_sms_batch_size="3")
    with clock.frozen(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)):
        await _paid_orders_with_sms(db, 6)
        # When the sender runs
        result = await service.send_due(db)
    # Then one batch costs the connection failure; the other is not attempted this round
    # (the per-round breaker), unless both were under way at once
    assert result.claimed == 6 and result.sent == 0 and result.dead == 0
    assert (result.retried, result.skipped) in ((3, 3), (6, 0))
    rows = await _sms_rows(db)
    assert {r.status for r in rows} <= {"failed", "pending"}
