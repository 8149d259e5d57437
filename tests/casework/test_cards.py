"""Case notices as the platforms' structured cards, posted to a real local webhook sink standing
in for the robots' webhook URLs: a WeCom group robot `template_card` (`text_notice`) and a signed
DingTalk robot `actionCard`, each the exact JSON body the platform documents.

Sources of the expected shapes: WeCom "群机器人配置说明" (developer.work.weixin.qq.com,
document path 91770, 模版卡片类型 / 文本通知模版卡片: fields, required card_action, the
"建议不超过 N 个字" lengths); DingTalk "自定义机器人发送群消息" (open.dingtalk.com, custom robot
access: actionCard 整体跳转 with title, text, btnOrientation, singleTitle, singleURL; 加签
timestamp + sign = urlencode(base64(HmacSHA256(secret, timestamp + "\\n" + secret))))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ordertally.casework import sla
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.notify import cards
from ordertally.notify import service as notify_service
from tests.factories import make_order
from tests.notify.conftest import Receiver, configure, receiver

pytestmark = pytest.mark.anyio
__all__ = ["receiver"]  # fixture, imported to be used here

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
BASE = "https://ot.shop.example"
DING_SECRET = "SEC-test-secret"  # a made-up 加签 secret of the sink's "robot"


def assert_wecom_lengths(body: dict[str, Any]) -> None:
    """Every text_notice field within the length the WeCom document gives it."""
    card = body["template_card"]
    lim = cards.WECOM_LIMITS
    assert len(card["source"]["desc"]) <= lim["source.desc"]
    for name in ("main_title", "emphasis_content"):
        for field in ("title", "desc"):
            assert len(card[name][field]) <= lim[f"{name}.{field}"], (name, field)
    assert len(card["sub_title_text"]) <= lim["sub_title_text"]
    assert len(card["horizontal_content_list"]) <= lim["horizontal_content_list"]
    for row in card["horizontal_content_list"]:
        assert len(row["keyname"]) <= lim["horizontal_content_list.keyname"]
        assert len(row["value"]) <= lim["horizontal_content_list.value"]
    assert len(card["jump_list"]) <= lim["jump_list"]
    assert all(len(j["title"]) <= lim["jump_list.title"] for j in card["jump_list"])


async def test_breach_reaches_wecom_and_dingtalk_as_their_cards(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a WeCom robot and a signing DingTalk robot (their webhooks on the local sink) that
    # ask for breaches, and a double payment case (SLA 4 h) opened at T0
    configure(
        monkeypatch,
        ops=[
            {
                "name": "wecom",
                "url": "wecombot://wecom-test-key",
                "webhook": f"{receiver.url}/cgi-bin/webhook/send?key=wecom-test-key",
                "events": ["CaseSlaBreached"],
            },
            {
                "name": "ding",
                "url": f"dingtalk://{DING_SECRET}@ding-test-token/",
                "webhook": f"{receiver.url}/robot/send?access_token=ding-test-token",
                "events": ["CaseSlaBreached"],
            },
        ],
        public_base_url=BASE,
    )
    order = await make_order(db, "paid")
    with clock.frozen(T0):
        async with db.transaction() as session:
            case_id = await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="payment",
                type="double_payment",
                blocking=False,
                detail={},
            )
    # When the clock passes the due time and the sender runs
    at = T0 + timedelta(hours=4, minutes=1)
    with clock.frozen(at):
        assert (await sla.tick(db, at))["breached"] == 1
        result = await notify_service.send_due(db)
    # Then each robot got one card, taken (errcode 0) and logged as sent
    assert (result.claimed, result.sent) == (2, 2)
    by_type = {
        body["msgtype"]: (body, url)
        for body, url in zip(receiver.received, receiver.urls, strict=True)
    }
    assert sorted(by_type) == ["actionCard", "template_card"]
    link = f"{BASE}/api/v1/cases/{case_id}"
    label = "重复支付 / Double payment"
    # And WeCom's is the documented text_notice: exact fields, within the documented lengths
    wecom, wecom_url = by_type["template_card"]
    assert wecom == {
        "msgtype": "template_card",
        "template_card": {
            "card_type": "text_notice",
            "source": {"desc": "ordertally 异常", "desc_color": 0},
            "main_title": {"title": f"已超时 SLA breached #{case_id}", "desc": label},
            "emphasis_content": {"title": "4h01m", "desc": "已开 Age"},
            "sub_title_text": f"Order {order.order_no} · {label} · owner finance",
            "horizontal_content_list": [
                {"keyname": "订单", "value": order.order_no},
                {"keyname": "类型", "value": label},
                {"keyname": "负责人", "value": "finance"},
                {"keyname": "严重度", "value": "high"},
                {"keyname": "时限UTC", "value": "2026-12-04T12:00:00+00:00"},
            ],
            "jump_list": [{"type": 1, "url": link, "title": "查看 Open case"}],
            "card_action": {"type": 1, "url": link},
        },
    }
    assert_wecom_lengths(wecom)
    assert parse_qs(urlsplit(wecom_url).query) == {"key": ["wecom-test-key"]}
    # And DingTalk's is the documented whole-card actionCard, on a correctly signed URL
    ding, ding_url = by_type["actionCard"]
    assert set(ding) == {"msgtype", "actionCard"}
    action = ding["actionCard"]
    assert set(action) == {"title", "text", "btnOrientation", "singleTitle", "singleURL"}
    assert action["title"] == f"已超时 SLA breached #{case_id}"
    assert (action["btnOrientation"], action["singleURL"]) == ("0", link)
    assert action["singleTitle"] == "查看 Open case"
    for line in (f"订单 Order: **{order.order_no}**", "已开 Age: 4h01m", "负责 Owner: finance"):
        assert line in action["text"]
    query = parse_qs(urlsplit(ding_url).query)
    assert query["access_token"] == ["ding-test-token"]
    to_sign = f"{query['timestamp'][0]}\n{DING_SECRET}".encode()
    digest = hmac.new(DING_SECRET.encode(), to_sign, hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]


async def test_refused_card_is_retried_and_a_long_type_still_fits(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a WeCom robot whose webhook fails once with HTTP 502
    configure(
        monkeypatch,
        ops=[
            {
                "name": "wecom",
                "url": "wecombot://wecom-test-key",
                "webhook": f"{receiver.url}/cgi-bin/webhook/send?key=wecom-test-key",
                "events": ["CaseOpened"],
            }
        ],
        public_base_url=BASE,
    )
    receiver.fail(1, 502)
    long_label = "一个名字非常非常长的异常类型 / A case type with a very long name indeed"
    facts = cards.CaseFacts(
        case_id=7,
        heading_zh="新异常",
        heading_en="New case",
        order_no="OT20261204000001",
        type_label=long_label,
        side="system",
        severity="high",
        age="0h00m",
        owner="ops someone-with-a-long-assignee-name",
        due="-",
        link=f"{BASE}/api/v1/cases/7",
        markdown="### 新异常 New case",
    )
    async with db.transaction() as session:
        added = await notify_service.plan_case_notice(
            session,
            key="case:7:CaseOpened",
            event_type="CaseOpened",
            order_no=None,
            title="新异常 New case",
            body=facts.markdown,
            card=facts,
        )
    assert added == 1
    # When the sender runs, then again after the backoff
    first = await notify_service.send_due(db)
    second = await notify_service.send_due(db, now=clock.now() + timedelta(hours=1))
    # Then the 502 was retried and the card went through the second time, cut to the lengths
    assert (first.retried, second.sent) == (1, 1)
    (body,) = receiver.received
    assert_wecom_lengths(body)
    assert body["template_card"]["main_title"]["desc"] == long_label[:29] + "…"


async def test_a_card_the_robot_refuses_is_dead_without_its_key_in_the_log(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a WeCom robot that answers HTTP 200 with a refusal (errcode 40058, invalid field)
    configure(
        monkeypatch,
        ops=[
            {
                "name": "wecom",
                "url": "wecombot://wecom-secret-key-1234",
                "webhook": f"{receiver.url}/cgi-bin/webhook/send?key=wecom-secret-key-1234",
                "events": ["CaseEscalated"],
            }
        ],
    )
    receiver.answer = {"errcode": 40058, "errmsg": "invalid field, key wecom-secret-key-1234"}
    facts = cards.CaseFacts(
        7,
        "已升级",
        "Escalated",
        None,
        "x",
        "system",
        "low",
        "1h00m",
        "admin",
        "-",
        f"{BASE}/api/v1/cases/7",
        "### 已升级",
    )
    async with db.transaction() as session:
        await notify_service.plan_case_notice(
            session,
            key="case:7:CaseEscalated",
            event_type="CaseEscalated",
            order_no=None,
            title="已升级 Escalated",
            body=facts.markdown,
            card=facts,
        )
    # When the sender runs
    result = await notify_service.send_due(db)
    # Then the message is dead at once (a refusal does not get better), its key redacted
    assert (result.sent, result.retried, result.dead) == (0, 0, 1)
    async with db.transaction(write=False) as session:
        (row,) = await notify_service.list_notifications(session)
    assert row.status == "dead"
    assert row.last_error is not None and row.last_error.startswith("wecombot: errcode 40058")
    assert "wecom-secret-key-1234" not in row.last_error
