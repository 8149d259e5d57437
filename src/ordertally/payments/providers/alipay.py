"""Alipay (open platform, RSA2): notification verification, signed gateway requests
(alipay.trade.precreate, alipay.trade.query) and verification of the signed answers."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ordertally.core import clock, money, outbound
from ordertally.core.settings import Settings
from ordertally.payments.providers import (
    Notice,
    ProviderCallFailed,
    ProviderRefused,
    QueryResult,
    RefundResult,
    Rejected,
    TradeStatus,
)
from ordertally.payments.providers.wechatpay import load_private_key, load_public_key

log = logging.getLogger(__name__)

NAME = "alipay"
BEIJING = ZoneInfo("Asia/Shanghai")
TRADE_STATES: dict[str, TradeStatus] = {
    "TRADE_SUCCESS": "paid",
    "TRADE_FINISHED": "paid",
    "WAIT_BUYER_PAY": "pending",
    "TRADE_CLOSED": "closed",
}
SUCCESS_CODE = "10000"
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?", re.ASCII)
_DECODER = json.JSONDecoder()


@dataclass(slots=True)
class Config:
    app_id: str
    seller_id: str
    alipay_key: rsa.RSAPublicKey
    app_key: rsa.RSAPrivateKey
    gateway: str
    notify_max_age: int
    timeout: float


def settings_fields(settings: Settings) -> tuple[str, ...]:
    """The settings a configuration is made of (all required)."""
    return (
        settings.alipay_app_id,
        settings.alipay_seller_id,
        settings.alipay_public_key_file,
        settings.alipay_app_private_key_file,
        settings.alipay_gateway,
    )


def problems(settings: Settings) -> list[str]:
    """Why the provider is off although some of it is configured."""
    given = [bool(v) for v in settings_fields(settings)[:4]]
    if not any(given):
        return []
    if not all(given):
        return ["alipay is partly configured; set every ORDERTALLY_ALIPAY_* or none"]
    try:
        load(settings)
    except (ValueError, OSError) as exc:
        return [f"alipay configuration invalid: {exc}"]
    return []


def configured(settings: Settings) -> Config | None:
    """The configuration, or None when the provider is off."""
    try:
        return load(settings)
    except (ValueError, OSError) as exc:
        log.error("alipay is off: %s", exc)
        return None


def load(settings: Settings) -> Config | None:
    """Read keys and settings once per distinct configuration."""
    return _load(
        *settings_fields(settings),
        settings.alipay_notify_max_age_seconds,
        settings.payment_http_timeout_seconds,
    )


@functools.lru_cache(maxsize=4)
def _load(
    app_id: str,
    seller_id: str,
    public_key_file: str,
    app_private_key_file: str,
    gateway: str,
    notify_max_age: int,
    timeout: float,
) -> Config | None:
    if not all((app_id, seller_id, public_key_file, app_private_key_file)):
        return None
    return Config(
        app_id=app_id,
        seller_id=seller_id,
        alipay_key=load_public_key(Path(public_key_file).read_bytes()),
        app_key=load_private_key(Path(app_private_key_file).read_bytes()),
        gateway=gateway,
        notify_max_age=notify_max_age,
        timeout=timeout,
    )


def sign_content(params: Mapping[str, str], *, drop_sign_type: bool) -> str:
    """The string Alipay signs: non-empty params except sign (and sign_type for notifications),
    sorted by key, joined as k=v with &."""
    skip = {"sign", "sign_type"} if drop_sign_type else {"sign"}
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in skip and params[k] != "")


def _verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            content.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sign(config: Config, content: str) -> str:
    """RSA2 (SHA256withRSA) with the app's private key, base64."""
    raw = config.app_key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def parse_local(value: str | None) -> datetime | None:
    """Alipay's `yyyy-MM-dd HH:mm:ss[.SSS]` (Beijing, no offset) as an aware datetime."""
    if not value:
        return None
    if _LOCAL_TIME.fullmatch(value):
        # The zero-padded form Alipay sends: read as strptime would, about 20x faster.
        try:
            return datetime.fromisoformat(value).replace(tzinfo=BEIJING)
        except ValueError:
            return None
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"):
        try:
            return datetime.strptime(value, layout).replace(tzinfo=BEIJING)
        except ValueError:
            continue
    return None


def _minor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return money.to_minor(value, "CNY")
    except money.MoneyError:
        return None


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat() if value else None


def verify_notification(config: Config, form: Mapping[str, str], now: datetime) -> Notice:
    """Verify an async notification (form fields, already URL-decoded); raises Rejected."""
    signature = form.get("sign", "")
    if not signature:
        raise Rejected("malformed", "sign is missing", status=400)
    if form.get("sign_type", "RSA2") != "RSA2":
        raise Rejected("malformed", "only RSA2 notifications are accepted", status=400)
    if not _verify(config.alipay_key, sign_content(form, drop_sign_type=True), signature):
        raise Rejected("bad_signature", "signature does not verify")
    notify_id = form.get("notify_id", "")
    trade_status = form.get("trade_status", "")
    out_trade_no = form.get("out_trade_no") or None
    if not notify_id or len(notify_id) > 128:
        raise Rejected("malformed", "notify_id is missing", status=400)
    if config.notify_max_age:
        sent = parse_local(form.get("notify_time"))
        if sent is None or abs((now - sent).total_seconds()) >= config.notify_max_age:
            raise Rejected("stale", "notify_time outside the accepted window")
    refund_fee = form.get("refund_fee")
    is_refund = bool(refund_fee) or bool(form.get("out_biz_no") and form.get("gmt_refund"))
    facts: dict[str, Any] = {
        "status": TRADE_STATES.get(trade_status, "pending"),
        "amount_minor": _minor(form.get("total_amount")),
        "currency": "CNY",
        "paid_at": _iso(parse_local(form.get("gmt_payment"))),
        "total_amount": form.get("total_amount"),
    }
    if is_refund:
        facts.update(
            status="success",
            out_refund_no=form.get("out_biz_no") or f"{form.get('trade_no')}:{refund_fee}",
            refund_id=None,
            # Alipay reports the total refunded so far, not this refund alone.
            refunded_total_minor=_minor(refund_fee),
            total_minor=_minor(form.get("total_amount")),
            refunded_at=_iso(parse_local(form.get("gmt_refund"))),
        )
    notice = Notice(
        provider=NAME,
        dedupe_key=f"{notify_id}:{trade_status}",
        event_type=str(form.get("notify_type") or "trade_status_sync")[:40],
        kind="refund" if is_refund else "payment",
        out_trade_no=out_trade_no,
        provider_txn_id=form.get("trade_no") or None,
        trade_state=trade_status[:32] or None,
        facts=facts,
        headers={},
        body="",
    )
    if form.get("app_id") != config.app_id:
        raise Rejected("mismatch", "app_id is not this app's", status=400, notice=notice)
    if form.get("seller_id") and form.get("seller_id") != config.seller_id:
        raise Rejected("mismatch", "seller_id is not this merchant's", status=400, notice=notice)
    return notice


def response_object(text: str, key: str) -> tuple[dict[str, Any], str, str]:
    """The `<method>_response` object of a gateway answer, its exact JSON text and the sign."""
    marker = f'"{key}"'
    at = text.find(marker)
    if at < 0:
        raise ProviderCallFailed(f"alipay answer has no {key}")
    colon = text.index(":", at + len(marker))
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        decoded, end = _DECODER.raw_decode(text, start)
    except ValueError as exc:
        raise ProviderCallFailed(f"alipay answer's {key} is not JSON") from exc
    raw = text[start:end]
    doc = orjson.loads(text)
    signature = doc.get("sign") if isinstance(doc, dict) else None
    if not isinstance(decoded, dict) or not isinstance(signature, str):
        raise ProviderCallFailed("alipay answer is not signed")
    return decoded, raw, signature


def _refused(config: Config, method: str, text: str) -> NoReturn:
    """Raise the gateway's own error for an answer under the top-level `error_response` key
    (public errors such as an invalid app id or signature); a signed one must verify."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProviderCallFailed(f"alipay {method}: answer is not JSON") from exc
    error = doc.get("error_response") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        raise ProviderCallFailed(f"alipay {method}: error_response is not an object")
    if isinstance(doc.get("sign"), str):
        _, raw, signature = response_object(text, "error_response")
        if not _verify(config.alipay_key, raw, signature):
            raise ProviderCallFailed(f"alipay {method}: answer signature does not verify")
    code, sub_code = str(error.get("code") or ""), str(error.get("sub_code") or "")
    sub_msg = str(error.get("sub_msg") or error.get("msg") or "")
    raise ProviderRefused(
        f"alipay {method} refused: {code} {sub_code} {sub_msg}".strip(),
        code=code,
        sub_code=sub_code,
        sub_msg=sub_msg,
    )


async def _gateway(
    config: Config, method: str, biz: dict[str, Any], extra: dict[str, str] | None = None
) -> dict[str, Any]:
    params = {
        "app_id": config.app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": clock.now().astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "biz_content": orjson.dumps(biz).decode(),
        **(extra or {}),
    }
    params["sign"] = sign(config, sign_content(params, drop_sign_type=False))
    try:
        response = await outbound.client("alipay").post(
            config.gateway, data=params, timeout=config.timeout
        )
    except httpx.HTTPError as exc:
        raise ProviderCallFailed(f"alipay {method}: {exc!r}") from exc
    if response.status_code != 200:
        raise ProviderCallFailed(f"alipay {method}: HTTP {response.status_code}")
    key = method.replace(".", "_") + "_response"
    if f'"{key}"' not in response.text and '"error_response"' in response.text:
        _refused(config, method, response.text)
    doc, raw, signature = response_object(response.text, key)
    if not _verify(config.alipay_key, raw, signature):
        raise ProviderCallFailed(f"alipay {method}: answer signature does not verify")
    doc["_raw"] = response.text
    return doc


def time_expire(at: datetime) -> str:
    """A moment as Alipay's `time_expire`: yyyy-MM-dd HH:mm:ss in Beijing time."""
    return clock.as_utc(at).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


async def precreate(
    config: Config,
    out_trade_no: str,
    amount_minor: int,
    subject: str,
    notify_url: str,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Open a face-to-face (QR code) payment; returns the parameters a client needs.

    `expires_at` (the order's payment deadline) is sent as the absolute `time_expire`, not the
    relative `timeout_express`, whose clock starts only when the buyer scans."""
    biz = {
        "out_trade_no": out_trade_no,
        "total_amount": money.format_minor(amount_minor, "CNY"),
        "subject": subject[:256],
    }
    if expires_at is not None:
        biz["time_expire"] = time_expire(expires_at)
    doc = await _gateway(config, "alipay.trade.precreate", biz, {"notify_url": notify_url})
    if doc.get("code") != SUCCESS_CODE or not doc.get("qr_code"):
        raise ProviderCallFailed(
            f"alipay precreate refused: {doc.get('code')} {doc.get('sub_code')} {doc.get('msg')}"
        )
    return {"trade_type": "PRECREATE", "qr_code": str(doc["qr_code"])}


async def query(config: Config, out_trade_no: str) -> QueryResult:
    """Ask what became of an out_trade_no; the answer's signature is verified."""
    doc = await _gateway(config, "alipay.trade.query", {"out_trade_no": out_trade_no})
    raw = str(doc.pop("_raw", ""))
    if doc.get("code") != SUCCESS_CODE:
        if doc.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            # A precreated trade exists at Alipay only once the buyer scanned it.
            return QueryResult(NAME, out_trade_no, "not_found", "TRADE_NOT_EXIST", raw=raw)
        raise ProviderCallFailed(
            f"alipay query refused: {doc.get('code')} {doc.get('sub_code')} {doc.get('msg')}"
        )
    trade_status = str(doc.get("trade_status") or "")
    return QueryResult(
        provider=NAME,
        out_trade_no=out_trade_no,
        status=TRADE_STATES.get(trade_status, "pending"),
        trade_state=trade_status,
        provider_txn_id=str(doc["trade_no"]) if doc.get("trade_no") else None,
        amount_minor=_minor(str(doc["total_amount"])) if doc.get("total_amount") else None,
        paid_at=parse_local(doc.get("send_pay_date")),
        raw=raw,
    )


async def refund(
    config: Config, out_trade_no: str, out_refund_no: str, amount_minor: int, reason: str
) -> RefundResult:
    """alipay.trade.refund with `out_request_no` = our refund number (Alipay refunds one
    out_request_no once); a `code` 10000 answer with fund_change means the money moved."""
    doc = await _gateway(
        config,
        "alipay.trade.refund",
        {
            "out_trade_no": out_trade_no,
            "refund_amount": money.format_minor(amount_minor, "CNY"),
            "out_request_no": out_refund_no,
            "refund_reason": reason[:256],
        },
    )
    raw = str(doc.pop("_raw", ""))
    if doc.get("code") != SUCCESS_CODE:
        raise ProviderCallFailed(
            f"alipay refund refused: {doc.get('code')} {doc.get('sub_code')} {doc.get('msg')}"
        )
    return RefundResult(
        NAME, out_refund_no, "succeeded", "SUCCESS", amount_minor=amount_minor, raw=raw
    )


async def query_refund(config: Config, out_trade_no: str, out_refund_no: str) -> RefundResult:
    """alipay.trade.fastpay.refund.query: `refund_status` REFUND_SUCCESS when the refund was
    made; an answer without it means Alipay has no such refund (opendocs.alipay.com/apis/0287wc)."""
    doc = await _gateway(
        config,
        "alipay.trade.fastpay.refund.query",
        {"out_trade_no": out_trade_no, "out_request_no": out_refund_no},
    )
    raw = str(doc.pop("_raw", ""))
    if doc.get("code") != SUCCESS_CODE:
        if doc.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return RefundResult(NAME, out_refund_no, "not_found", "TRADE_NOT_EXIST", raw=raw)
        raise ProviderCallFailed(
            f"alipay refund query refused: {doc.get('code')} {doc.get('sub_code')}"
        )
    if doc.get("refund_status") != "REFUND_SUCCESS":
        return RefundResult(NAME, out_refund_no, "not_found", "", raw=raw)
    amount = _minor(str(doc["refund_amount"])) if doc.get("refund_amount") else None
    return RefundResult(
        NAME, out_refund_no, "succeeded", "REFUND_SUCCESS", amount_minor=amount, raw=raw
    )
