"""Aliyun SMS (Dysmsapi 2017-05-25) `SendSms` and `SendBatchSms` over the RPC API with
signature version 1.0.

The request is a form POST to the API base; the signature is base64 HMAC-SHA1, keyed with
AccessKeySecret + "&", over "POST&%2F&" + the percent-encoded, sorted, percent-encoded query
(POP rules: RFC 3986 unreserved characters kept, everything else %XY, space as %20).

`SendBatchSms` sends one template to up to 100 numbers in one call, each number with its own
sign name and template variables (`PhoneNumberJson`, `SignNameJson`, `TemplateParamJson`: JSON
arrays of one length); it answers like `SendSms`, one `Code` and one `BizId` for the call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import httpx
import orjson

from ordertally.core import clock, outbound
from ordertally.core.settings import Settings
from ordertally.notify.sms import SmsFailed, SmsMessage, SmsSent

ACTION = "SendSms"
BATCH_ACTION = "SendBatchSms"
VERSION = "2017-05-25"
# Numbers one SendBatchSms call may carry (the platform's bound).
BATCH_LIMIT = 100

# Codes that no retry can fix: the message goes dead at once (an operator may requeue it).
PERMANENT = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.MOBILE_COUNT_OVER_LIMIT",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.INVALID_PARAMETERS",
        "isv.INVALID_JSON_PARAM",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_SIGN_ILLEGAL",
        "isv.BLACK_KEY_CONTROL_LIMIT",
        "isv.DENY_IP_RANGE",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.ACCOUNT_ABNORMAL",
        "InvalidAccessKeyId.NotFound",
        "SignatureDoesNotMatch",
        "MissingParameter",
    }
)


def percent_encode(value: str) -> str:
    """POP percent-encoding: unreserved characters kept, others %XY (space is %20)."""
    return quote(value, safe="~")


def timestamp(at: datetime) -> str:
    """ISO 8601 UTC to the second, as the API wants it."""
    return clock.as_utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    """The canonical string: METHOD&%2F&encode(sorted k=v joined by &)."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in sorted(params.items())
        if k != "Signature"
    )
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def sign(method: str, params: dict[str, str], secret: str) -> str:
    """Signature version 1.0: base64(HMAC-SHA1(secret + "&", string to sign))."""
    digest = hmac.new(
        f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def phone_number(e164: str) -> str:
    """PhoneNumbers as Dysmsapi takes it: mainland numbers bare, others with their country code."""
    digits = e164.lstrip("+")
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


@dataclass(frozen=True, slots=True)
class AliyunConfig:
    access_key_id: str
    access_key_secret: str
    sign_name: str
    endpoint: str
    timeout: float
    # Messages of one template sent in one SendBatchSms call at most (1: SendSms only).
    batch_size: int = BATCH_LIMIT

    @classmethod
    def from_settings(cls, settings: Settings) -> AliyunConfig | None:
        """The configuration, or None while any credential is missing."""
        if not (
            settings.aliyun_sms_access_key_id
            and settings.aliyun_sms_access_key_secret
            and settings.aliyun_sms_sign_name
            and settings.aliyun_sms_endpoint
        ):
            return None
        return cls(
            settings.aliyun_sms_access_key_id,
            settings.aliyun_sms_access_key_secret,
            settings.aliyun_sms_sign_name,
            settings.aliyun_sms_endpoint.rstrip("/"),
            settings.notify_http_timeout_seconds,
            settings.aliyun_sms_batch_size,
        )


def signed_params(
    config: AliyunConfig,
    phone: str,
    template_code: str,
    params: dict[str, str],
    out_id: str,
    *,
    at: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Every form field of one SendSms request, Signature included."""
    form = {
        "AccessKeyId": config.access_key_id,
        "Action": ACTION,
        "Format": "JSON",
        "OutId": out_id,
        "PhoneNumbers": phone_number(phone),
        "RegionId": "cn-hangzhou",
        "SignName": config.sign_name,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "TemplateCode": template_code,
        "TemplateParam": orjson.dumps(params).decode(),
        "Timestamp": timestamp(at or clock.now()),
        "Version": VERSION,
    }
    form["Signature"] = sign("POST", form, config.access_key_secret)
    return form


def signed_batch_params(
    config: AliyunConfig,
    template_code: str,
    messages: Sequence[SmsMessage],
    out_id: str,
    *,
    at: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Every form field of one SendBatchSms request, Signature included: the numbers, their
    sign names (ours, once per number) and their template variables as JSON arrays in one
    order."""
    form = {
        "AccessKeyId": config.access_key_id,
        "Action": BATCH_ACTION,
        "Format": "JSON",
        "OutId": out_id,
        "PhoneNumberJson": orjson.dumps([phone_number(m.phone) for m in messages]).decode(),
        "RegionId": "cn-hangzhou",
        "SignNameJson": orjson.dumps([config.sign_name] * len(messages)).decode(),
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "TemplateCode": template_code,
        "TemplateParamJson": orjson.dumps([m.params for m in messages]).decode(),
        "Timestamp": timestamp(at or clock.now()),
        "Version": VERSION,
    }
    form["Signature"] = sign("POST", form, config.access_key_secret)
    return form


class AliyunSms:
    """The Aliyun SMS gateway."""

    name = "aliyun"

    def __init__(self, config: AliyunConfig) -> None:
        self.config = config
        self.batch_limit = max(1, min(config.batch_size, BATCH_LIMIT))

    async def send(
        self, phone: str, template_code: str, params: dict[str, str], out_id: str
    ) -> SmsSent:
        """POST one SendSms; OK gives the BizId, anything else raises SmsFailed."""
        return await self._call(signed_params(self.config, phone, template_code, params, out_id))

    async def send_batch(self, template_code: str, messages: Sequence[SmsMessage]) -> SmsSent:
        """POST one SendBatchSms for `messages` (at most `batch_limit`); OK gives the call's
        BizId. The call's OutId is its first message's. A refusal with a business code
        (`isv.*`) is `per_message`: none was taken, and each may fare differently alone."""
        if not 0 < len(messages) <= self.batch_limit:
            raise ValueError(f"a batch holds 1 to {self.batch_limit} messages")
        form = signed_batch_params(self.config, template_code, messages, messages[0].out_id)
        return await self._call(form, batch=True)

    async def _call(self, form: dict[str, str], *, batch: bool = False) -> SmsSent:
        body = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in form.items())
        try:
            response = await outbound.client("aliyun-sms", trust_env=True).post(
                f"{self.config.endpoint}/",
                content=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                timeout=self.config.timeout,
            )
        except httpx.HTTPError as exc:
            raise SmsFailed("network", f"{type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise SmsFailed(
                f"http_{response.status_code}",
                response.text[:200] or "empty answer",
                retryable=response.status_code >= 500 or response.status_code == 429,
            )
        code = str(doc.get("Code", f"http_{response.status_code}"))
        message = str(doc.get("Message", ""))
        if code == "OK" and response.status_code == 200:
            return SmsSent(str(doc.get("BizId", "")), str(doc.get("RequestId", "")))
        raise SmsFailed(
            code,
            message,
            retryable=code not in PERMANENT,
            per_message=batch and response.status_code == 200 and code.startswith("isv."),
        )
