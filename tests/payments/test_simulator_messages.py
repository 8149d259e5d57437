"""The simulator's keys and messages, checked by code we did not write: PyPI `wechatpayv3`
(WeChatPay.callback verifies and decrypts) and PyPI `python-alipay-sdk` (AliPay.verify)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests
from alipay import AliPay
from alipay.exceptions import AliPayValidationError
from wechatpayv3 import WeChatPay, WeChatPayType

from ordertally.core import clock
from ordertally.core.settings import Settings
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator import messages
from ordertally.payments.simulator.keys import SimKeys

GO_SDK_WINDOW_SECONDS = 300  # wechatpay-go rejects |ts - now| >= 5 min


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDKs must never reach the platforms: any attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network call attempted: {args[:2]}")

    monkeypatch.setattr(requests, "request", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests, "post", refuse)
    yield


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimKeys:
    return sim_keys.generate(tmp_path_factory.mktemp("paysim-keys"), "http://127.0.0.1:8900")


def wechatpay_sdk(
    keys: SimKeys, *, public_pem: str | None = None, serial: str | None = None
) -> Any:
    """wechatpayv3 set up offline: the platform public key given explicitly, and the lookup of
    unknown serials (which would download certificates) answering "none"."""
    client = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=keys.merchant_private_pem(),
        cert_serial_no=keys.merchant_serial,
        appid=keys.appid,
        apiv3_key=keys.apiv3_key,
        public_key=keys.platform_public_pem(),
        public_key_id=keys.platform_serial,
    )
    client._core._update_certificates = lambda: None
    return client


def alipay_sdk(keys: SimKeys) -> AliPay:
    return AliPay(
        appid=keys.alipay_app_id,
        app_notify_url=None,
        app_private_key_string=keys.app_private_pem(),
        alipay_public_key_string=keys.alipay_public_pem(),
        sign_type="RSA2",
    )


def alipay_verifies(keys: SimKeys, fields: dict[str, str]) -> bool:
    data = dict(fields)
    signature = data.pop("sign")
    return bool(alipay_sdk(keys).verify(data, signature))


# --- keys -------------------------------------------------------------------------------------


def test_generate_writes_the_agreed_layout_and_env(sim: SimKeys) -> None:
    # Given a generated key set
    root = sim.directory
    # Then the files are where ordertally's settings point, and nothing else is needed
    assert sorted(p.name for p in (root / "wechatpay/platform").iterdir()) == [
        f"{sim.platform_serial}.pem"
    ]
    assert (
        (root / "wechatpay/merchant_private.pem")
        .read_text()
        .startswith("-----BEGIN PRIVATE KEY-----")
    )
    assert (root / "alipay/alipay_public.pem").read_text().startswith("-----BEGIN PUBLIC KEY")
    assert (root / "alipay/app_private.pem").read_text().startswith("-----BEGIN PRIVATE KEY")
    assert (root / "sim/wechatpay_platform_private.pem").stat().st_mode & 0o077 == 0
    env = sim_keys.read_env(root / "ordertally.env")
    assert env == sim.settings_env()
    assert list(env) == [
        "ORDERTALLY_WECHATPAY_MCHID",
        "ORDERTALLY_WECHATPAY_APPID",
        "ORDERTALLY_WECHATPAY_APIV3_KEY",
        "ORDERTALLY_WECHATPAY_PLATFORM_KEYS_DIR",
        "ORDERTALLY_WECHATPAY_MERCHANT_KEY_FILE",
        "ORDERTALLY_WECHATPAY_MERCHANT_SERIAL",
        "ORDERTALLY_WECHATPAY_API_BASE",
        "ORDERTALLY_ALIPAY_APP_ID",
        "ORDERTALLY_ALIPAY_SELLER_ID",
        "ORDERTALLY_ALIPAY_PUBLIC_KEY_FILE",
        "ORDERTALLY_ALIPAY_APP_PRIVATE_KEY_FILE",
        "ORDERTALLY_ALIPAY_GATEWAY",
    ]
    assert env["ORDERTALLY_WECHATPAY_MCHID"] == "1900000109"
    assert env["ORDERTALLY_WECHATPAY_APPID"] == "wxd678efh567hg6787"
    assert len(env["ORDERTALLY_WECHATPAY_APIV3_KEY"]) == 32
    assert env["ORDERTALLY_WECHATPAY_APIV3_KEY"].isalnum()
    assert env["ORDERTALLY_WECHATPAY_API_BASE"] == "http://127.0.0.1:8900"
    assert env["ORDERTALLY_ALIPAY_GATEWAY"] == "http://127.0.0.1:8900/gateway.do"
    assert env["ORDERTALLY_ALIPAY_APP_ID"] == "2021000000000000"
    assert env["ORDERTALLY_ALIPAY_SELLER_ID"] == "2088000000000000"


def test_settings_read_the_env_file(sim: SimKeys) -> None:
    # When ordertally's settings read the generated file
    settings = Settings(_env_file=sim.env_file)
    # Then every payment setting comes from it
    assert settings.wechatpay_merchant_serial == sim.merchant_serial
    assert settings.wechatpay_platform_keys_dir == str(sim.platform_keys_dir)
    assert settings.alipay_gateway == "http://127.0.0.1:8900/gateway.do"


def test_load_round_trips(sim: SimKeys) -> None:
    again = SimKeys.load(sim.directory)
    assert again.settings_env() == sim.settings_env()
    assert again.platform_serial == sim.platform_serial
    assert again.platform_public_pem() == sim.platform_public_pem()
    assert again.app_private_pem() == sim.app_private_pem()


def test_rotation_keeps_the_old_public_key(tmp_path: Path) -> None:
    # Given a key set, rotated once
    first = sim_keys.generate(tmp_path, "http://127.0.0.1:8900")
    second = sim_keys.rotate_platform_key(tmp_path)
    # Then both public keys are in the directory and the new serial signs from now on
    names = sorted(p.stem for p in second.platform_keys_dir.glob("*.pem"))
    assert names == sorted([first.platform_serial, second.platform_serial])
    assert SimKeys.load(tmp_path).platform_serial == second.platform_serial
    headers, body = messages.wechat_notification(
        second, messages.wechat_transaction(second, "OT0000000001P01", 100)
    )
    assert headers["Wechatpay-Serial"] == second.platform_serial
    assert wechatpay_sdk(second).callback(headers, body) is not None
    # And a notification still signed with the retired key verifies with its own serial
    old_headers, old_body = messages.wechat_notification(
        second,
        messages.wechat_transaction(second, "OT0000000001P01", 100),
        serial=first.platform_serial,
        sign_key=second.retired_platform_keys[first.platform_serial],
    )
    assert wechatpay_sdk(first).callback(old_headers, old_body) is not None


# --- WeChat Pay notifications ----------------------------------------------------------------


def test_wechat_notification_is_accepted_by_wechatpayv3(sim: SimKeys) -> None:
    # Given a paid transaction notified by the simulator
    transaction = messages.wechat_transaction(
        sim, "OT2611230001P01", 12_345, transaction_id="4200000991202611236853086457"
    )
    headers, body = messages.wechat_notification(sim, transaction)
    # When the independent SDK verifies and decrypts it
    result = wechatpay_sdk(sim).callback(headers, body)
    # Then it is accepted and the resource is exactly the transaction
    assert result is not None
    assert result["event_type"] == "TRANSACTION.SUCCESS"
    assert result["resource_type"] == "encrypt-resource"
    assert result["summary"] == "支付成功"
    assert result["resource"] == transaction
    assert transaction["amount"] == {
        "total": 12_345,
        "payer_total": 12_345,
        "currency": "CNY",
        "payer_currency": "CNY",
    }
    assert transaction["trade_state"] == "SUCCESS"
    assert transaction["success_time"].endswith("+08:00")
    assert headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    assert headers["Content-Type"] == "application/json"
    raw = json.loads(body)
    assert raw["create_time"].endswith("+08:00")
    assert raw["resource"]["original_type"] == "transaction"
    assert raw["resource"]["algorithm"] == "AEAD_AES_256_GCM"
    assert len(raw["resource"]["nonce"]) == 12


def test_refund_notification_is_accepted_by_wechatpayv3(sim: SimKeys) -> None:
    refund = messages.wechat_refund(
        sim, "OT2611230001P01", "4200000991202611236853086457", 12_345, 345
    )
    headers, body = messages.wechat_notification(sim, refund, event_type="REFUND.SUCCESS")
    result = wechatpay_sdk(sim).callback(headers, body)
    assert result is not None
    assert result["resource"] == refund
    assert json.loads(body)["resource"]["original_type"] == "refund"
    assert refund["amount"] == {
        "total": 12_345,
        "refund": 345,
        "payer_total": 12_345,
        "payer_refund": 345,
    }
    assert refund["refund_status"] == "SUCCESS"


def test_forged_wechat_notifications_are_refused_by_wechatpayv3(sim: SimKeys) -> None:
    sdk = wechatpay_sdk(sim)
    transaction = messages.wechat_transaction(sim, "OT2611230001P01", 100)
    # A signature made with a key nobody trusts
    headers, body = messages.wechat_notification(sim, transaction, sign_key=messages.forger_key())
    assert sdk.callback(headers, body) is None
    # A serial nobody published
    headers, body = messages.wechat_notification(sim, transaction, serial=sim_keys.new_serial())
    assert sdk.callback(headers, body) is None
    # A body changed after signing
    headers, body = messages.wechat_notification(sim, transaction)
    tampered = body.replace(b'"summary":"', b'"summary":"X')
    assert sdk.callback(headers, tampered) is None
    # A signature probe
    assert sdk.callback(messages.wechat_probe_headers(sim, body), body) is None
    # A body encrypted under another APIv3 key does not decrypt
    other = dataclasses.replace(sim, apiv3_key="0" * 32)
    headers, body = messages.wechat_notification(other, transaction)
    assert sdk.callback(headers, body) is None
    # While the genuine one passes (the checks above can fail)
    assert sdk.callback(*messages.wechat_notification(sim, transaction)) is not None


def test_stale_wechat_notification_cannot_be_freshened(sim: SimKeys) -> None:
    # Given a notification signed ten minutes ago (a replay)
    now = int(time.time())
    transaction = messages.wechat_transaction(sim, "OT2611230001P01", 100)
    headers, body = messages.wechat_notification(sim, transaction, timestamp=now - 600)
    # Then its timestamp is outside the platform's 5-minute replay window
    assert now - int(headers["Wechatpay-Timestamp"]) >= GO_SDK_WINDOW_SECONDS
    # And moving the timestamp into the window breaks the signature (wechatpayv3 itself checks
    # no skew, which is why ordertally checks the window)
    fresh = dict(headers, **{"Wechatpay-Timestamp": str(now)})
    assert wechatpay_sdk(sim).callback(fresh, body) is None
    assert wechatpay_sdk(sim).callback(headers, body) is not None


def test_signed_api_answer_is_accepted_by_wechatpayv3(sim: SimKeys) -> None:
    body = messages.compact_json({"code_url": "weixin://wxpay/bizpayurl?pr=abc"}).encode()
    headers = messages.wechat_sign_headers(sim, body)
    core = wechatpay_sdk(sim)._core
    assert core._verify_signature(headers, body.decode()) is True
    assert core._verify_signature(headers, body.decode().replace("abc", "abd")) is False


def test_merchant_authorization_round_trip(sim: SimKeys) -> None:
    path = "/v3/pay/transactions/out-trade-no/OT2611230001P01?mchid=1900000109"
    header = messages.wechat_authorization(sim, "GET", path, "")
    assert messages.verify_wechat_authorization(sim, "GET", path, b"", header) is None
    assert messages.verify_wechat_authorization(sim, "GET", path + "9", b"", header) is not None
    forged = messages.wechat_authorization(sim, "GET", path, "", sign_key=messages.forger_key())
    assert messages.verify_wechat_authorization(sim, "GET", path, b"", forged) is not None
    old = messages.wechat_authorization(sim, "GET", path, "", timestamp=int(time.time()) - 600)
    assert messages.verify_wechat_authorization(sim, "GET", path, b"", old) == "timestamp expired"


# --- Alipay ------------------------------------------------------------------------------------


def test_alipay_notification_is_accepted_by_python_alipay_sdk(sim: SimKeys) -> None:
    fields = messages.alipay_notification(sim, "OT2611230001P01", "123.45")
    assert alipay_verifies(sim, fields)
    assert fields["notify_type"] == "trade_status_sync"
    assert fields["trade_status"] == "TRADE_SUCCESS"
    assert fields["app_id"] == sim.alipay_app_id
    assert fields["seller_id"] == sim.alipay_seller_id
    assert fields["sign_type"] == "RSA2"
    assert fields["charset"] == "utf-8"
    assert fields["version"] == "1.0"
    assert fields["total_amount"] == fields["receipt_amount"] == fields["buyer_pay_amount"]
    assert json.loads(fields["fund_bill_list"]) == [
        {"amount": "123.45", "fundChannel": "ALIPAYACCOUNT"}
    ]
    assert len(fields["gmt_payment"]) == len("2026-11-23 10:00:00")
    assert all(v != "" for v in fields.values())


def test_alipay_refund_notification_is_accepted(sim: SimKeys) -> None:
    fields = messages.alipay_refund_notification(
        sim,
        "OT2611230001P01",
        "123.45",
        "123.45",
        out_biz_no="RF01",
        trade_no="2026112322001400000000000001",
        gmt_payment=clock.now(),
        fully_refunded=True,
    )
    assert alipay_verifies(sim, fields)
    assert fields["trade_status"] == "TRADE_CLOSED"
    assert fields["refund_fee"] == "123.45"
    assert fields["out_biz_no"] == "RF01"


def test_forged_alipay_notifications_are_refused(sim: SimKeys) -> None:
    assert not alipay_verifies(
        sim,
        messages.alipay_notification(
            sim, "OT2611230001P01", "1.00", sign_key=messages.forger_key()
        ),
    )
    tampered = messages.alipay_notification(sim, "OT2611230001P01", "1.00")
    tampered["total_amount"] = "0.01"
    assert not alipay_verifies(sim, tampered)
    # A stale one keeps a valid signature only with its old notify_time
    ten_minutes_ago = clock.now() - timedelta(minutes=10)
    stale = messages.alipay_notification(
        sim, "OT2611230001P01", "1.00", notify_time=ten_minutes_ago
    )
    assert alipay_verifies(sim, stale)
    assert stale["notify_time"] == messages.alipay_time(ten_minutes_ago)
    assert not alipay_verifies(sim, dict(stale, notify_time=messages.alipay_time(clock.now())))
    # Overrides: None removes a field, a value replaces it, and the signature covers both
    custom = messages.alipay_notification(
        sim, "OT2611230001P01", "1.00", fund_bill_list=None, seller_id="2088999999999999"
    )
    assert "fund_bill_list" not in custom and custom["seller_id"] == "2088999999999999"
    assert alipay_verifies(sim, custom)


def test_alipay_gateway_answer_is_accepted_by_python_alipay_sdk(sim: SimKeys) -> None:
    payload = {"code": "10000", "msg": "Success", "out_trade_no": "OT1", "qr_code": "https://x"}
    text = messages.alipay_response(sim, "alipay.trade.precreate", payload)
    sdk = alipay_sdk(sim)
    assert sdk._verify_and_return_sync_response(text, "alipay_trade_precreate_response") == payload
    assert text.startswith('{"alipay_trade_precreate_response":{')
    with pytest.raises(AliPayValidationError):
        sdk._verify_and_return_sync_response(
            text.replace("OT1", "OT2"), "alipay_trade_precreate_response"
        )


def test_alipay_request_signature_is_the_sdks(sim: SimKeys) -> None:
    # Given the same parameters signed by us and by the SDK
    params = messages.alipay_request(sim, "alipay.trade.query", {"out_trade_no": "OT1"})
    data = {k: v for k, v in params.items() if k != "sign"}
    sdk_signed = dict(
        item.split("=", 1) for item in alipay_sdk(sim).sign_data(dict(data)).split("&")
    )
    # Then the signatures are identical (PKCS#1 v1.5 is deterministic)
    assert unquote_plus(sdk_signed["sign"]) == params["sign"]
