"""Signed messages of WeChat Pay v3 and Alipay, built the way the platforms build them. Pure
functions (no I/O): the simulator, the tests and the benchmarks share them.

WeChat Pay v3:

- `wechat_transaction(keys, out_trade_no, total_fen, *, trade_state=...)` -> the transaction
  object (notification resource and query answer); `wechat_refund(...)` -> a refund resource.
- `wechat_notification(keys, resource, *, event_type="TRANSACTION.SUCCESS", timestamp=None,
  nonce=None, serial=None, sign_key=None)` -> (headers, raw body): resource encrypted with
  AEAD_AES_256_GCM under the APIv3 key, body signed SHA256withRSA with the platform key.
  Variants for tests: `sign_key=forger_key()` (bad signature), `serial="..."` (unknown serial),
  `timestamp=now - 600` (stale), `wechat_probe_headers(...)` (`WECHATPAY/SIGNTEST/` probe).
- `wechat_sign_headers(keys, body)` signs any body (notifications, API answers);
  `wechat_authorization(keys, method, path, body)` is a merchant-signed `Authorization` header
  and `verify_wechat_authorization(...)` checks one.

Alipay (RSA2):

- `alipay_notification(keys, out_trade_no, total_amount, *, trade_status="TRADE_SUCCESS",
  notify_id=None, gmt_payment=None, **overrides)` -> the form fields with `sign`; an override of
  None removes a field. `alipay_refund_notification(...)` -> the trade_status_sync of a refund.
- `alipay_sign_content(params)` is the sorted `k=v&...` string; `alipay_sign` / `alipay_verify`.
- `alipay_response(keys, method, payload)` -> the gateway's answer text
  `{"<method>_response":{...},"sign":"..."}`, signing the exact JSON text of the object;
  `alipay_request(keys, method, biz_content)` -> signed gateway parameters as ordertally sends.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import secrets
import string
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ordertally.core import clock
from ordertally.payments.simulator.keys import SimKeys, new_rsa_key

BEIJING = ZoneInfo("Asia/Shanghai")
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
STALE_SECONDS = 600

TRADE_STATE_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "订单发生过退款",
    "NOTPAY": "订单未支付",
    "CLOSED": "订单已关闭",
    "REVOKED": "已撤销（刷卡支付）",
    "USERPAYING": "用户支付中（刷卡支付）",
    "PAYERROR": "支付失败",
}
EVENT_SUMMARY = {
    "TRANSACTION.SUCCESS": "支付成功",
    "REFUND.SUCCESS": "退款成功",
    "REFUND.ABNORMAL": "退款异常",
    "REFUND.CLOSED": "退款关闭",
}
_ALNUM = string.ascii_letters + string.digits
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')


# --- formats ----------------------------------------------------------------------------------


def rfc3339(at: datetime) -> str:
    """WeChat's time format: RFC 3339 in Beijing time, `2026-11-23T10:00:00+08:00`."""
    return clock.as_utc(at).astimezone(BEIJING).isoformat(timespec="seconds")


def alipay_time(at: datetime) -> str:
    """Alipay's time format: `yyyy-MM-dd HH:mm:ss`, Beijing time, no offset."""
    return clock.as_utc(at).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def alipay_refund_time(at: datetime) -> str:
    """Alipay's gmt_refund: `yyyy-MM-dd HH:mm:ss.SSS`, Beijing time."""
    local = clock.as_utc(at).astimezone(BEIJING)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def yuan(minor: int) -> str:
    """Minor units (fen) as Alipay's yuan string: 1234 -> `12.34`."""
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 100)
    return f"{sign}{units}.{cents:02d}"


def _digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_nonce() -> str:
    """A request/notification nonce: 32 upper-case hex digits."""
    return secrets.token_hex(16).upper()


def new_transaction_id(at: datetime | None = None) -> str:
    """A WeChat transaction_id: 28 digits, the date in the middle."""
    day = clock.as_utc(at or clock.now()).astimezone(BEIJING).strftime("%Y%m%d")
    return f"42000{_digits(5)}{day}{_digits(10)}"


def new_refund_id(at: datetime | None = None) -> str:
    """A WeChat refund_id: 29 digits starting 50."""
    day = clock.as_utc(at or clock.now()).astimezone(BEIJING).strftime("%Y%m%d")
    return f"50{_digits(8)}{day}{_digits(11)}"


def new_openid() -> str:
    """A payer openid (28 characters)."""
    return "o" + secrets.token_urlsafe(21)[:27]


def new_trade_no(at: datetime | None = None) -> str:
    """An Alipay trade_no: 28 digits, the date first."""
    day = clock.as_utc(at or clock.now()).astimezone(BEIJING).strftime("%Y%m%d")
    return f"{day}22001{_digits(15)}"


def new_buyer_id() -> str:
    """An Alipay user id: 16 digits starting 2088."""
    return "2088" + _digits(12)


def new_notify_id() -> str:
    """An Alipay notify_id (constant across the resends of one notification)."""
    return secrets.token_hex(18)[:35]


@functools.cache
def forger_key() -> rsa.RSAPrivateKey:
    """A key nobody trusts: signatures made with it must fail verification."""
    return new_rsa_key()


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def compact_json(doc: Any) -> str:
    """JSON as the platforms send it: compact, UTF-8 characters kept."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


# --- WeChat Pay v3 --------------------------------------------------------------------------


def wechat_transaction(
    keys: SimKeys,
    out_trade_no: str,
    total_fen: int,
    *,
    trade_state: str = "SUCCESS",
    transaction_id: str | None = None,
    success_time: datetime | None = None,
    openid: str | None = None,
    trade_type: str = "NATIVE",
    bank_type: str = "OTHERS",
    attach: str = "",
    payer_total: int | None = None,
    currency: str = "CNY",
    appid: str | None = None,
    mchid: str | None = None,
) -> dict[str, Any]:
    """A v3 transaction object; an unpaid one (NOTPAY, CLOSED) carries no payer and no times."""
    doc: dict[str, Any] = {
        "appid": appid or keys.appid,
        "mchid": mchid or keys.mchid,
        "out_trade_no": out_trade_no,
    }
    paid = trade_state in ("SUCCESS", "REFUND")
    if paid or transaction_id:
        doc["transaction_id"] = transaction_id or new_transaction_id(success_time)
    if paid:
        doc["trade_type"] = trade_type
    doc["trade_state"] = trade_state
    doc["trade_state_desc"] = TRADE_STATE_DESC.get(trade_state, trade_state)
    if paid:
        doc["bank_type"] = bank_type
    doc["attach"] = attach
    if paid:
        doc["success_time"] = rfc3339(success_time or clock.now())
        doc["payer"] = {"openid": openid or new_openid()}
    amount: dict[str, Any] = {"total": total_fen}
    if paid:
        amount["payer_total"] = total_fen if payer_total is None else payer_total
    amount["currency"] = currency
    amount["payer_currency"] = currency
    doc["amount"] = amount
    return doc


def wechat_refund(
    keys: SimKeys,
    out_trade_no: str,
    transaction_id: str,
    total_fen: int,
    refund_fen: int,
    *,
    out_refund_no: str | None = None,
    refund_id: str | None = None,
    refund_status: str = "SUCCESS",
    success_time: datetime | None = None,
    user_received_account: str = "支付用户零钱",
    payer_total: int | None = None,
    payer_refund: int | None = None,
    mchid: str | None = None,
) -> dict[str, Any]:
    """A refund resource of a REFUND.* notification."""
    doc: dict[str, Any] = {
        "mchid": mchid or keys.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "out_refund_no": out_refund_no or f"R{out_trade_no}"[:64],
        "refund_id": refund_id or new_refund_id(success_time),
        "refund_status": refund_status,
    }
    if refund_status == "SUCCESS":
        doc["success_time"] = rfc3339(success_time or clock.now())
    doc["user_received_account"] = user_received_account
    doc["amount"] = {
        "total": total_fen,
        "refund": refund_fen,
        "payer_total": total_fen if payer_total is None else payer_total,
        "payer_refund": refund_fen if payer_refund is None else payer_refund,
    }
    return doc


def wechat_sign_headers(
    keys: SimKeys,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    serial: str | None = None,
    sign_key: rsa.RSAPrivateKey | None = None,
) -> dict[str, str]:
    """The Wechatpay-* headers signing a body (notification or API answer) with the platform
    key: SHA256withRSA over "{timestamp}\\n{nonce}\\n{body}\\n"."""
    ts = str(int(clock.now().timestamp()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    message = ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": _sign(sign_key or keys.platform_private, message),
        "Wechatpay-Serial": serial or keys.platform_serial,
        "Wechatpay-Signature-Type": SIGNATURE_TYPE,
    }


def wechat_encrypt(
    keys: SimKeys, plaintext: dict[str, Any], associated_data: str, nonce: str | None = None
) -> dict[str, str]:
    """An AEAD_AES_256_GCM resource: base64(ciphertext || tag) under the APIv3 key."""
    nonce = nonce or _alnum(12)
    sealed = AESGCM(keys.apiv3_key.encode()).encrypt(
        nonce.encode(), compact_json(plaintext).encode(), associated_data.encode()
    )
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode(),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def wechat_notification_body(
    keys: SimKeys,
    resource: dict[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    notification_id: str | None = None,
    create_time: datetime | None = None,
    summary: str | None = None,
) -> bytes:
    """The raw JSON body of a notification, the resource encrypted."""
    original_type = "refund" if event_type.startswith("REFUND.") else "transaction"
    encrypted = wechat_encrypt(keys, resource, original_type)
    doc = {
        "id": notification_id or str(uuid.uuid4()),
        "create_time": rfc3339(create_time or clock.now()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary or EVENT_SUMMARY.get(event_type, event_type),
        "resource": {
            "original_type": original_type,
            "algorithm": encrypted["algorithm"],
            "ciphertext": encrypted["ciphertext"],
            "associated_data": encrypted["associated_data"],
            "nonce": encrypted["nonce"],
        },
    }
    return compact_json(doc).encode()


def wechat_notification(
    keys: SimKeys,
    transaction: dict[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    timestamp: int | None = None,
    nonce: str | None = None,
    serial: str | None = None,
    sign_key: rsa.RSAPrivateKey | None = None,
    notification_id: str | None = None,
    create_time: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """A complete notification: the exact headers and the raw body WeChat Pay would POST."""
    body = wechat_notification_body(
        keys,
        transaction,
        event_type=event_type,
        notification_id=notification_id,
        create_time=create_time,
    )
    headers = wechat_sign_headers(
        keys, body, timestamp=timestamp, nonce=nonce, serial=serial, sign_key=sign_key
    )
    headers["Content-Type"] = "application/json"
    return headers, body


def wechat_probe_headers(keys: SimKeys, body: bytes) -> dict[str, str]:
    """Headers of a WeChat signature probe: the signature starts `WECHATPAY/SIGNTEST/`."""
    headers = wechat_sign_headers(keys, body)
    headers["Wechatpay-Signature"] = PROBE_PREFIX + _alnum(32)
    headers["Content-Type"] = "application/json"
    return headers


def wechat_authorization(
    keys: SimKeys,
    method: str,
    path: str,
    body: str | bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    sign_key: rsa.RSAPrivateKey | None = None,
) -> str:
    """A merchant-signed Authorization header over "{METHOD}\\n{path?query}\\n{ts}\\n{nonce}\\n
    {body}\\n" (what ordertally sends to the API)."""
    ts = str(int(clock.now().timestamp()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    raw = body.encode() if isinstance(body, str) else body
    message = f"{method}\n{path}\n{ts}\n{nonce}\n".encode() + raw + b"\n"
    signature = _sign(sign_key or keys.merchant_private, message)
    return (
        f'{SIGNATURE_TYPE} mchid="{keys.mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{ts}",serial_no="{keys.merchant_serial}"'
    )


def verify_wechat_authorization(
    keys: SimKeys,
    method: str,
    path: str,
    body: bytes,
    header: str,
    *,
    now: datetime | None = None,
    window_seconds: int = 300,
) -> str | None:
    """Check a request's Authorization header; None when it is good, else why it is not."""
    scheme, _, rest = header.partition(" ")
    if scheme != SIGNATURE_TYPE:
        return "unsupported authorization scheme"
    fields = dict(_AUTH_FIELD.findall(rest))
    for name in ("mchid", "nonce_str", "signature", "timestamp", "serial_no"):
        if not fields.get(name):
            return f"authorization lacks {name}"
    if fields["mchid"] != keys.mchid:
        return "mchid is not this merchant"
    if fields["serial_no"] != keys.merchant_serial:
        return "unknown merchant certificate serial"
    ts = fields["timestamp"]
    current = (now or clock.now()).timestamp()
    if not ts.isdigit() or abs(current - int(ts)) > window_seconds:
        return "timestamp expired"
    message = f"{method}\n{path}\n{ts}\n{fields['nonce_str']}\n".encode() + body + b"\n"
    if not _verify(keys.merchant_public, message, fields["signature"]):
        return "signature does not verify"
    return None


def verify_wechat_headers(
    public_key: rsa.RSAPublicKey, headers: Mapping[str, str], body: bytes
) -> bool:
    """True when Wechatpay-* headers (any case) sign the body with this platform key."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message = (
        lowered.get("wechatpay-timestamp", "").encode()
        + b"\n"
        + lowered.get("wechatpay-nonce", "").encode()
        + b"\n"
        + body
        + b"\n"
    )
    return _verify(public_key, message, lowered.get("wechatpay-signature", ""))


# --- Alipay ---------------------------------------------------------------------------------


def alipay_sign_content(
    params: Mapping[str, str], *, exclude: tuple[str, ...] = ("sign", "sign_type")
) -> str:
    """Alipay's string to sign: non-empty fields except `exclude`, keys sorted, `k=v&...`.
    Notifications exclude sign and sign_type; gateway requests exclude only sign."""
    return "&".join(
        f"{k}={params[k]}" for k in sorted(params) if k not in exclude and params[k] != ""
    )


def alipay_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    """RSA2: SHA256withRSA, base64."""
    return _sign(key, content.encode())


def alipay_verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    """Check an RSA2 signature."""
    return _verify(key, content.encode(), signature)


def alipay_notification(
    keys: SimKeys,
    out_trade_no: str,
    total_amount: str,
    *,
    trade_status: str = "TRADE_SUCCESS",
    notify_id: str | None = None,
    gmt_payment: datetime | None = None,
    trade_no: str | None = None,
    buyer_id: str | None = None,
    notify_time: datetime | None = None,
    gmt_create: datetime | None = None,
    subject: str = "ordertally order",
    sign_key: rsa.RSAPrivateKey | None = None,
    **overrides: str | None,
) -> dict[str, str]:
    """An asynchronous notification (trade_status_sync) as form fields, signed RSA2 with
    Alipay's key. Overrides set (or, with None, remove) fields before signing."""
    return _alipay_notification(
        keys,
        out_trade_no,
        total_amount,
        trade_status=trade_status,
        notify_id=notify_id,
        gmt_payment=gmt_payment,
        trade_no=trade_no,
        buyer_id=buyer_id,
        notify_time=notify_time,
        gmt_create=gmt_create,
        subject=subject,
        sign_key=sign_key,
        overrides=overrides,
    )


def _alipay_notification(
    keys: SimKeys,
    out_trade_no: str,
    total_amount: str,
    *,
    trade_status: str,
    notify_id: str | None,
    gmt_payment: datetime | None,
    trade_no: str | None,
    buyer_id: str | None,
    notify_time: datetime | None,
    gmt_create: datetime | None,
    subject: str,
    sign_key: rsa.RSAPrivateKey | None,
    overrides: Mapping[str, str | None],
) -> dict[str, str]:
    now = clock.now()
    paid_at = gmt_payment or now
    created = gmt_create or (paid_at - timedelta(seconds=7))
    fields: dict[str, str] = {
        "notify_time": alipay_time(notify_time or now),
        "notify_type": "trade_status_sync",
        "notify_id": notify_id or new_notify_id(),
        "app_id": keys.alipay_app_id,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "trade_no": trade_no or new_trade_no(created),
        "out_trade_no": out_trade_no,
        "buyer_id": buyer_id or new_buyer_id(),
        "buyer_logon_id": "159****5620",
        "seller_id": keys.alipay_seller_id,
        "seller_email": "merchant@example.com",
        "trade_status": trade_status,
        "total_amount": total_amount,
        "subject": subject,
        "gmt_create": alipay_time(created),
    }
    if trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED") or gmt_payment is not None:
        fields.update(
            receipt_amount=total_amount,
            invoice_amount=total_amount,
            buyer_pay_amount=total_amount,
            point_amount="0.00",
            gmt_payment=alipay_time(paid_at),
            fund_bill_list=compact_json([{"amount": total_amount, "fundChannel": "ALIPAYACCOUNT"}]),
        )
    if trade_status == "TRADE_CLOSED":
        fields["gmt_close"] = alipay_time(now)
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = str(value)
    fields["sign"] = alipay_sign(sign_key or keys.alipay_private, alipay_sign_content(fields))
    return fields


def alipay_refund_notification(
    keys: SimKeys,
    out_trade_no: str,
    total_amount: str,
    refund_fee: str,
    *,
    out_biz_no: str,
    trade_no: str,
    gmt_payment: datetime,
    fully_refunded: bool,
    gmt_refund: datetime | None = None,
    notify_id: str | None = None,
    notify_time: datetime | None = None,
    buyer_id: str | None = None,
    sign_key: rsa.RSAPrivateKey | None = None,
    **overrides: str | None,
) -> dict[str, str]:
    """The notification of a refund: trade_status TRADE_CLOSED once fully refunded (else
    TRADE_SUCCESS), refund_fee the total refunded so far, out_biz_no the refund request."""
    refunded_at = gmt_refund or clock.now()
    extra: dict[str, str | None] = {
        "refund_fee": refund_fee,
        "out_biz_no": out_biz_no,
        "gmt_refund": alipay_refund_time(refunded_at),
        "gmt_close": alipay_time(refunded_at) if fully_refunded else None,
    }
    extra.update(overrides)
    return _alipay_notification(
        keys,
        out_trade_no,
        total_amount,
        trade_status="TRADE_CLOSED" if fully_refunded else "TRADE_SUCCESS",
        notify_id=notify_id,
        gmt_payment=gmt_payment,
        trade_no=trade_no,
        buyer_id=buyer_id,
        notify_time=notify_time,
        gmt_create=None,
        subject="ordertally order",
        sign_key=sign_key,
        overrides=extra,
    )


def alipay_response(
    keys: SimKeys,
    method: str,
    payload: dict[str, Any],
    *,
    sign_key: rsa.RSAPrivateKey | None = None,
) -> str:
    """The gateway's answer text: the `<method>_response` object first, then the RSA2
    signature of that object's exact JSON text."""
    inner = compact_json(payload)
    signature = alipay_sign(sign_key or keys.alipay_private, inner)
    return f'{{"{method.replace(".", "_")}_response":{inner},"sign":"{signature}"}}'


def alipay_request(
    keys: SimKeys,
    method: str,
    biz_content: dict[str, Any],
    *,
    timestamp: datetime | None = None,
    sign_key: rsa.RSAPrivateKey | None = None,
    **extra: str,
) -> dict[str, str]:
    """Signed gateway parameters (what ordertally posts to /gateway.do)."""
    params = {
        "app_id": keys.alipay_app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": alipay_time(timestamp or clock.now()),
        "version": "1.0",
        "biz_content": compact_json(biz_content),
        **extra,
    }
    params["sign"] = alipay_sign(
        sign_key or keys.app_private, alipay_sign_content(params, exclude=("sign",))
    )
    return params
