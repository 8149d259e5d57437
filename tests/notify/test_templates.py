"""Templates render every event in Simplified Chinese and English, and targets read from
settings keep their secrets out of the send log."""

from __future__ import annotations

import re
from typing import Any

import apprise
import pytest

from ordertally.core.settings import Settings
from ordertally.notify import service, targets, templates
from ordertally.notify.errors import TargetsInvalid

BASE = {
    "shipment_id": 7,
    "order_id": 3,
    "order_no": "OT2603010001",
    "warehouse": "WH-SH",
    "carrier": "zhongtong",
    "waybill_no": "ZT778899",
    "tracking_url": "https://shop.example/t/tok",
}
PAYLOADS: dict[str, dict[str, Any]] = {
    "OrderPaid": {"order_no": "OT2603010001", "occurred_at": "2026-03-01T08:00:00Z"},
    "ShipmentShipped": BASE | {"shipped_at": "2026-03-01T08:00:00Z"},
    "ShipmentDelivered": BASE | {"delivered_at": "2026-03-01T08:00:00Z"},
    "ShipmentTrackingException": BASE
    | {"reason": "tracking_stale", "detail": "24 h no news", "occurred_at": "2026-03-01T08:00:00Z"},
    "NotificationTest": {"occurred_at": "2026-03-01T08:00:00Z"},
    **{
        e: {
            "order_no": "OT2603010001",
            "case_no": "AS2603011234567890",
            "occurred_at": "2026-03-01T08:00:00Z",
        }
        for e in ("AftersaleApproved", "AftersaleRejected", "AftersaleReturned")
    },
    "AftersaleRefundConfirmed": {
        "order_no": "OT2603010001",
        "amount_minor": 3990,
        "currency": "CNY",
        "occurred_at": "2026-03-01T08:00:00Z",
    },
}
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("event_type", [*templates.EVENTS, templates.TEST_EVENT])
def test_every_event_renders_in_chinese_and_english(event_type: str) -> None:
    payload = PAYLOADS[event_type]
    zh = templates.render_ops(event_type, payload, "zh", "Asia/Shanghai")
    en = templates.render_ops(event_type, payload, "en", "Asia/Shanghai")
    sms_zh, params_zh = templates.render_sms(event_type, payload, "zh", "Asia/Shanghai")
    sms_en, params_en = templates.render_sms(event_type, payload, "en", "Asia/Shanghai")
    # Chinese texts are Chinese, English ones are not, and no placeholder is left
    for text in (zh.title + zh.body, sms_zh):
        assert CJK.search(text)
    for text in (en.title + en.body, sms_en):
        assert not CJK.search(text), text
    for text in (zh.title, zh.body, en.title, en.body, sms_zh, sms_en):
        assert "{" not in text and "}" not in text
    # The local time is labelled with its zone
    assert "2026-03-01 16:00 (Asia/Shanghai)" in zh.body
    assert "2026-03-01 16:00 (Asia/Shanghai)" in en.body
    # SMS variables are plain strings, per the gateway's TemplateParam rules
    assert set(params_zh) == set(templates.SMS_PARAMS[event_type])
    assert all(isinstance(v, str) and v for v in params_zh.values())
    assert set(params_en) == set(params_zh)


def test_shipped_names_carrier_waybill_and_tracking_link_in_both_languages() -> None:
    payload = PAYLOADS["ShipmentShipped"]
    zh = templates.render_ops("ShipmentShipped", payload, "zh", "Asia/Shanghai")
    en = templates.render_ops("ShipmentShipped", payload, "en", "Asia/Shanghai")
    assert zh.body == (
        "订单 OT2603010001 已于 2026-03-01 16:00 (Asia/Shanghai) 从 WH-SH 发出，"
        "中通快递 运单号 ZT778899。\n物流跟踪：https://shop.example/t/tok"
    )
    assert en.body == (
        "Order OT2603010001 left WH-SH at 2026-03-01 16:00 (Asia/Shanghai) with ZTO Express, "
        "waybill ZT778899.\nTracking: https://shop.example/t/tok"
    )
    exc = templates.render_ops(
        "ShipmentTrackingException", PAYLOADS["ShipmentTrackingException"], "en", "UTC"
    )
    assert exc.title == "Tracking exception: OT2603010001 (no tracking news for too long)"
    assert "2026-03-01 08:00 (UTC)" in exc.body
    # An unknown carrier code is shown as it is
    other = templates.render_sms("ShipmentShipped", payload | {"carrier": "acme"}, "zh", "UTC")
    assert other[1]["carrier_name"] == "acme"


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def test_targets_cover_wecom_dingtalk_email_and_json_without_secrets_in_keys() -> None:
    urls = [
        "wecombot://a1b2c3d4-0000-4000-8000-1234567890ab",
        "dingtalk://SECabcdef0123456789@0123456789abcdef0123456789abcdef/",
        "mailtos://user:app-password@smtp.example.com?to=ops@shop.example",
        "jsons://hooks.example.com/ordertally?+X-Token=s3cr3t-t0ken",
    ]
    settings = _settings(
        notify_ops_targets=[{"url": u, "events": ["*"]} for u in urls[:3]]
        + [{"name": "bi-hook", "url": urls[3], "events": ["OrderPaid"], "lang": "en"}]
    )
    found = targets.ops_targets(settings)
    assert [(t.kind, t.lang) for t in found] == [
        ("wecombot", "zh"),
        ("dingtalk", "zh"),
        ("email", "zh"),
        ("json", "en"),
    ]
    assert found[3].key == "ops:bi-hook"
    assert found[3].events == frozenset({"OrderPaid"})
    assert found[0].events == frozenset(templates.EVENTS)
    for target, url in zip(found, urls, strict=True):
        # Apprise itself accepts every URL
        assert apprise.Apprise.instantiate(url) is not None, url
        secret_parts = [p for p in re.split(r"[/:@?&=+]+", url.partition("://")[2]) if len(p) > 6]
        assert not any(p in target.key for p in secret_parts), target.key
    # A DingTalk URL with a secret signs its requests
    dingtalk = apprise.Apprise.instantiate(urls[1])
    assert dingtalk is not None and getattr(dingtalk, "secret", None) == "SECabcdef0123456789"


@pytest.mark.parametrize(
    "entry",
    [
        {"url": "not a url"},
        {"url": "json://x/y", "events": ["OrderShipped"]},
        {"url": "json://x/y", "lang": "fr"},
        {"url": "json://x/y", "name": "bad name!"},
    ],
)
def test_a_bad_target_is_refused_with_its_position(entry: dict[str, Any]) -> None:
    with pytest.raises(TargetsInvalid) as refused:
        targets.ops_targets(_settings(notify_ops_targets=[{"url": "json://ok/1"}, entry]))
    assert "notify_ops_targets[1]" in str(refused.value)


def test_sms_is_off_until_fully_configured() -> None:
    assert targets.sms_target(_settings(notify_sms_provider="aliyun")) is None
    full = {
        "notify_sms_provider": "aliyun",
        "aliyun_sms_access_key_id": "id",
        "aliyun_sms_access_key_secret": "secret",
        "aliyun_sms_sign_name": "店",
        "aliyun_sms_template_codes": {"OrderPaid": "SMS_1", "Nope": "SMS_2"},
    }
    sms = targets.sms_target(_settings(**full))
    assert sms is not None
    assert (sms.key, sms.wants("OrderPaid"), sms.wants("ShipmentShipped")) == (
        "sms:aliyun",
        True,
        False,
    )
    assert targets.sms_target(_settings(**(full | {"notify_sms_provider": "off"}))) is None


def test_error_texts_lose_the_targets_secrets() -> None:
    url = "dingtalk://SECabcdef0123456789@0123456789abcdef0123456789abcdef/"
    text = (
        "Failed to send to https://oapi.dingtalk.com/robot/send?access_token="
        "0123456789abcdef0123456789abcdef&sign=abc: 403 SECabcdef0123456789"
    )
    redacted = service.redact(text, url)
    assert "0123456789abcdef0123456789abcdef" not in redacted
    assert "SECabcdef0123456789" not in redacted
    assert "access_token=***" in redacted
