"""WeChat Pay API v3: notification verification and decryption, signed requests (Native
payments, query by out_trade_no) and verification of the platform's signed answers."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ordertally.core import clock, outbound
from ordertally.core.settings import Settings
from ordertally.payments.providers import (
    Notice,
    ProviderCallFailed,
    QueryResult,
    RefundResult,
    RefundStatus,
    Rejected,
    TradeStatus,
)

log = logging.getLogger(__name__)

NAME = "wechatpay"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
BEIJING = ZoneInfo("Asia/Shanghai")
# trade_state -> our reading; REFUND means it was paid and a refund followed.
TRADE_STATES: dict[str, TradeStatus] = {
    "SUCCESS": "paid",
    "REFUND": "paid",
    "NOTPAY": "pending",
    "USERPAYING": "pending",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "closed",
}
# The refund API's `status` (申请退款 / 查询单笔退款 answers) -> our reading.
REFUND_API_STATES: dict[str, RefundStatus] = {
    "SUCCESS": "succeeded",
    "PROCESSING": "processing",
    "CLOSED": "closed",
    "ABNORMAL": "abnormal",
}
REFUND_STATES = {
    "REFUND.SUCCESS": "success",
    "REFUND.ABNORMAL": "abnormal",
    "REFUND.CLOSED": "closed",
}


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key or certificate."""
    key: Any
    if b"CERTIFICATE" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#8 or PKCS#1)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


@dataclass(slots=True)
class PlatformKeys:
    """The platform's verification keys by serial; the directory is read again when an unknown
    serial shows up and the directory changed since (a rotation: the new key file was added)."""

    directory: Path
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    seen_mtime: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _mtime(self) -> int:
        try:
            return self.directory.stat().st_mtime_ns
        except OSError:
            return -1

    def scan(self) -> None:
        """(Re)load every `<serial>.pem` of the directory."""
        mtime = self._mtime()
        found: dict[str, rsa.RSAPublicKey] = {}
        for path in sorted(self.directory.glob("*.pem")):
            try:
                found[path.stem] = load_public_key(path.read_bytes())
            except (ValueError, OSError) as exc:
                log.error("platform key %s unreadable: %s", path.name, exc)
        with self.lock:
            self.keys = found
            self.seen_mtime = mtime

    def get(self, serial: str) -> rsa.RSAPublicKey | None:
        """The key for a serial, rescanning first if the directory changed."""
        key = self.keys.get(serial)
        if key is None and self._mtime() != self.seen_mtime:
            self.scan()
            key = self.keys.get(serial)
        return key


@dataclass(slots=True)
class Config:
    mchid: str
    appid: str
    apiv3_key: bytes
    platform: PlatformKeys
    merchant_key: rsa.RSAPrivateKey
    merchant_serial: str
    api_base: str
    window_seconds: int
    timeout: float


def settings_fields(settings: Settings) -> tuple[str, ...]:
    """The settings a configuration is made of (all required)."""
    return (
        settings.wechatpay_mchid,
        settings.wechatpay_appid,
        settings.wechatpay_apiv3_key,
        settings.wechatpay_platform_keys_dir,
        settings.wechatpay_merchant_key_file,
        settings.wechatpay_merchant_serial,
        settings.wechatpay_api_base,
    )


def problems(settings: Settings) -> list[str]:
    """Why the provider is off although some of it is configured (empty: fine or fully off)."""
    given = [bool(v) for v in settings_fields(settings)[:6]]
    if not any(given):
        return []
    if not all(given):
        return ["wechatpay is partly configured; set every ORDERTALLY_WECHATPAY_* or none"]
    try:
        config = load(settings)
    except (ValueError, OSError) as exc:
        return [f"wechatpay configuration invalid: {exc}"]
    if config is not None and not config.platform.keys:
        return ["wechatpay platform keys directory holds no readable <serial>.pem"]
    return []


def configured(settings: Settings) -> Config | None:
    """The configuration, or None when the provider is off (not or not fully configured)."""
    try:
        return load(settings)
    except (ValueError, OSError) as exc:
        log.error("wechatpay is off: %s", exc)
        return None


def load(settings: Settings) -> Config | None:
    """Read keys and settings once per distinct configuration."""
    return _load(
        *settings_fields(settings),
        settings.payment_signature_window_seconds,
        settings.payment_http_timeout_seconds,
    )


@functools.lru_cache(maxsize=4)
def _load(
    mchid: str,
    appid: str,
    apiv3_key: str,
    keys_dir: str,
    merchant_key_file: str,
    merchant_serial: str,
    api_base: str,
    window: int,
    timeout: float,
) -> Config | None:
    if not all((mchid, appid, apiv3_key, keys_dir, merchant_key_file, merchant_serial)):
        return None
    key = apiv3_key.encode()
    if len(key) != 32:
        raise ValueError("ORDERTALLY_WECHATPAY_APIV3_KEY must be 32 characters")
    platform = PlatformKeys(Path(keys_dir))
    if not platform.directory.is_dir():
        raise ValueError(f"platform keys directory {keys_dir!r} does not exist")
    platform.scan()
    return Config(
        mchid=mchid,
        appid=appid,
        apiv3_key=key,
        platform=platform,
        merchant_key=load_private_key(Path(merchant_key_file).read_bytes()),
        merchant_serial=merchant_serial,
        api_base=api_base.rstrip("/"),
        window_seconds=window,
        timeout=timeout,
    )


# --- signatures ------------------------------------------------------------------------------


def _verify_signed(
    config: Config, headers: Mapping[str, str], body: bytes, now: datetime
) -> tuple[str, str]:
    """Check the Wechatpay-* signature headers over a body; returns (serial, nonce)."""
    serial = headers.get("wechatpay-serial", "")
    signature = headers.get("wechatpay-signature", "")
    timestamp = headers.get("wechatpay-timestamp", "")
    nonce = headers.get("wechatpay-nonce", "")
    if not (serial and signature and timestamp and nonce):
        raise Rejected("malformed", "Wechatpay-* signature headers are missing", status=400)
    if signature.startswith(PROBE_PREFIX):
        raise Rejected("probe", "signature probe refused")
    sig_type = headers.get("wechatpay-signature-type", SIGNATURE_TYPE)
    if sig_type != SIGNATURE_TYPE:
        raise Rejected("malformed", f"unsupported signature type {sig_type!r}", status=400)
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) >= config.window_seconds:
        raise Rejected("stale", "timestamp outside the replay window")
    key = config.platform.get(serial)
    if key is None:
        raise Rejected("unknown_serial", f"no platform key with serial {serial!r}")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("bad_signature", "signature is not base64") from None
    message = b"%s\n%s\n%s\n" % (timestamp.encode(), nonce.encode(), body)
    try:
        key.verify(raw_signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Rejected("bad_signature", "signature does not verify") from None
    return serial, nonce


def _decrypt(config: Config, resource: Mapping[str, Any]) -> dict[str, Any]:
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise Rejected("malformed", "resource algorithm is not AEAD_AES_256_GCM", status=400)
    try:
        plain = AESGCM(config.apiv3_key).decrypt(
            str(resource["nonce"]).encode(),
            base64.b64decode(str(resource["ciphertext"])),
            str(resource.get("associated_data") or "").encode(),
        )
        doc = orjson.loads(plain)
    except (InvalidTag, KeyError, ValueError, binascii.Error, orjson.JSONDecodeError):
        raise Rejected("undecryptable", "resource does not decrypt with the APIv3 key") from None
    if not isinstance(doc, dict):
        raise Rejected("malformed", "resource is not an object", status=400)
    return doc


def _time(value: Any) -> str | None:
    if not value:
        return None
    try:
        return clock.as_utc(datetime.fromisoformat(str(value))).isoformat()
    except ValueError:
        return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def verify_notification(
    config: Config, headers: Mapping[str, str], body: bytes, now: datetime
) -> Notice:
    """Verify, decrypt and read a notification; raises Rejected with the reason."""
    _, nonce = _verify_signed(config, headers, body, now)
    try:
        doc = orjson.loads(body)
        notification_id = str(doc["id"])
        event_type = str(doc["event_type"])
        resource = doc["resource"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Rejected("malformed", "body is not a v3 notification", status=400) from None
    if not isinstance(resource, dict) or not notification_id or len(notification_id) > 64:
        raise Rejected("malformed", "body is not a v3 notification", status=400)
    plain = _decrypt(config, resource)
    kept = {k: headers[k] for k in sorted(headers) if k.startswith("wechatpay-")}
    amount = _object(plain.get("amount"))
    out_trade_no = plain.get("out_trade_no")
    facts: dict[str, Any] = {"resource": plain}
    if event_type.startswith("REFUND."):
        kind = "refund"
        facts.update(
            status=REFUND_STATES.get(event_type, "abnormal"),
            out_refund_no=plain.get("out_refund_no"),
            refund_id=plain.get("refund_id"),
            refund_minor=_int(amount.get("refund")),
            total_minor=_int(amount.get("total")),
            refunded_at=_time(plain.get("success_time")),
        )
        trade_state = str(plain.get("refund_status") or event_type)
    else:
        kind = "payment" if event_type.startswith("TRANSACTION.") else "other"
        trade_state = str(plain.get("trade_state") or "")
        facts.update(
            status=TRADE_STATES.get(trade_state, "pending"),
            amount_minor=_int(amount.get("total")),
            currency=str(amount.get("currency") or "CNY"),
            paid_at=_time(plain.get("success_time")),
        )
    notice = Notice(
        provider=NAME,
        dedupe_key=notification_id,
        event_type=event_type,
        kind=kind,  # type: ignore[arg-type]
        out_trade_no=str(out_trade_no) if out_trade_no else None,
        provider_txn_id=str(plain["transaction_id"]) if plain.get("transaction_id") else None,
        trade_state=trade_state[:32] or None,
        facts=facts,
        headers=kept,
        body=body.decode("utf-8", "replace"),
        nonce=nonce,
    )
    if plain.get("mchid") != config.mchid:
        raise Rejected("mismatch", "mchid is not this merchant's", status=400, notice=notice)
    if kind == "payment" and plain.get("appid") != config.appid:
        raise Rejected("mismatch", "appid is not this merchant's", status=400, notice=notice)
    return notice


def authorization(config: Config, method: str, path: str, body: str) -> str:
    """The merchant-signed `Authorization` header of an API request."""
    timestamp = str(int(clock.now().timestamp()))
    nonce = secrets.token_hex(16).upper()
    message = f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n".encode()
    signature = base64.b64encode(
        config.merchant_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    return (
        f'{SIGNATURE_TYPE} mchid="{config.mchid}",nonce_str="{nonce}",'
        f'signature="{signature}",timestamp="{timestamp}",serial_no="{config.merchant_serial}"'
    )


# --- API calls -------------------------------------------------------------------------------


async def _call(
    config: Config, method: str, path: str, payload: dict[str, Any] | None
) -> tuple[dict[str, Any], str] | None:
    """Send a signed request; the answer's signature is checked. None for 404."""
    body = orjson.dumps(payload).decode() if payload is not None else ""
    headers = {
        "Authorization": authorization(config, method, path, body),
        "Accept": "application/json",
        "User-Agent": "ordertally",
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        response = await outbound.client("wechatpay").request(
            method,
            config.api_base + path,
            content=body or None,
            headers=headers,
            timeout=config.timeout,
        )
    except httpx.HTTPError as exc:
        raise ProviderCallFailed(f"wechatpay {method} {path}: {exc!r}") from exc
    lowered = {k.lower(): v for k, v in response.headers.items()}
    if response.status_code == 404:
        return None
    try:
        _verify_signed(config, lowered, response.content, clock.now())
    except Rejected as exc:
        raise ProviderCallFailed(f"wechatpay answer not verified: {exc.detail}") from exc
    if response.status_code >= 300:
        raise ProviderCallFailed(
            f"wechatpay {method} {path}: HTTP {response.status_code} {response.text[:200]}"
        )
    try:
        doc = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError as exc:
        raise ProviderCallFailed("wechatpay answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise ProviderCallFailed("wechatpay answer is not an object")
    return doc, response.text


def time_expire(at: datetime) -> str:
    """A moment as WeChat Pay's `time_expire`: RFC 3339 to the second, in Beijing time."""
    return clock.as_utc(at).astimezone(BEIJING).isoformat(timespec="seconds")


async def create_native(
    config: Config,
    out_trade_no: str,
    amount_minor: int,
    description: str,
    notify_url: str,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Open a Native (QR code) payment; returns the parameters a client needs.

    `expires_at` (the order's payment deadline) is sent as `time_expire`, RFC 3339 in Beijing
    time (WeChat Pay's example: 2018-06-08T10:34:56+08:00): past it the platform refuses to take
    the money, so a buyer cannot pay an order that is closing."""
    payload: dict[str, Any] = {
        "appid": config.appid,
        "mchid": config.mchid,
        "description": description[:127],
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "amount": {"total": amount_minor, "currency": "CNY"},
    }
    if expires_at is not None:
        payload["time_expire"] = time_expire(expires_at)
    answer = await _call(config, "POST", "/v3/pay/transactions/native", payload)
    if answer is None or "code_url" not in answer[0]:
        raise ProviderCallFailed("wechatpay native: no code_url in the answer")
    return {"trade_type": "NATIVE", "code_url": str(answer[0]["code_url"])}


async def query(config: Config, out_trade_no: str) -> QueryResult:
    """Ask what became of an out_trade_no; the answer's signature is verified."""
    path = (
        f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        f"?mchid={quote(config.mchid, safe='')}"
    )
    answer = await _call(config, "GET", path, None)
    if answer is None:
        return QueryResult(NAME, out_trade_no, "not_found", "NOT_FOUND")
    doc, raw = answer
    trade_state = str(doc.get("trade_state") or "")
    amount = _object(doc.get("amount"))
    if doc.get("mchid") not in (None, config.mchid) or doc.get("appid") not in (
        None,
        config.appid,
    ):
        raise ProviderCallFailed("wechatpay query answer names another merchant")
    paid_at = _time(doc.get("success_time"))
    return QueryResult(
        provider=NAME,
        out_trade_no=out_trade_no,
        status=TRADE_STATES.get(trade_state, "pending"),
        trade_state=trade_state,
        provider_txn_id=str(doc["transaction_id"]) if doc.get("transaction_id") else None,
        amount_minor=_int(amount.get("total")),
        currency=str(amount.get("currency") or "CNY"),
        paid_at=datetime.fromisoformat(paid_at) if paid_at else None,
        raw=raw,
    )


def _refund_result(out_refund_no: str, doc: dict[str, Any], raw: str) -> RefundResult:
    status = str(doc.get("status") or "")
    if doc.get("out_refund_no") not in (None, out_refund_no):
        raise ProviderCallFailed("wechatpay refund answer names another refund")
    return RefundResult(
        provider=NAME,
        out_refund_no=out_refund_no,
        status=REFUND_API_STATES.get(status, "processing"),
        state=status,
        refund_id=str(doc["refund_id"]) if doc.get("refund_id") else None,
        amount_minor=_int(_object(doc.get("amount")).get("refund")),
        raw=raw,
    )


async def refund(
    config: Config,
    out_trade_no: str,
    out_refund_no: str,
    amount_minor: int,
    total_minor: int,
    notify_url: str,
    reason: str,
) -> RefundResult:
    """Apply for a refund (POST /v3/refund/domestic/refunds). The same out_refund_no sent
    again refunds once: WeChat Pay keys refunds by it."""
    payload = {
        "out_trade_no": out_trade_no,
        "out_refund_no": out_refund_no,
        "reason": reason[:80],
        "notify_url": notify_url,
        "amount": {"refund": amount_minor, "total": total_minor, "currency": "CNY"},
    }
    answer = await _call(config, "POST", "/v3/refund/domestic/refunds", payload)
    if answer is None:
        raise ProviderCallFailed(f"wechatpay refund {out_refund_no}: the trade does not exist")
    return _refund_result(out_refund_no, *answer)


async def query_refund(config: Config, out_refund_no: str) -> RefundResult:
    """Ask what became of a refund (GET /v3/refund/domestic/refunds/{out_refund_no})."""
    path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
    answer = await _call(config, "GET", path, None)
    if answer is None:
        return RefundResult(NAME, out_refund_no, "not_found", "RESOURCE_NOT_EXISTS")
    return _refund_result(out_refund_no, *answer)
