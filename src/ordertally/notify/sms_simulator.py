"""A local Aliyun SMS (Dysmsapi `SendSms`, `SendBatchSms`) for tests and the demo
(`ordertally smssim`).

It takes the real request (form POST or GET query, RPC signature version 1.0), checks it the way
the platform does — the signature recomputed with its own encoder, the timestamp within 15
minutes, the nonce never seen before, the parameters' shapes — records every accepted message
(a batch's numbers one message each, under the call's one BizId) and answers in the platform's
JSON. A batch is taken whole or refused whole (one `Code` for the call). Control endpoints
under /sim list the messages and make the next requests fail on command (throttled, illegal
number, HTTP 500, gateway down).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from ordertally.core import clock
from ordertally.simkit.app import simulator_app
from ordertally.simkit.misbehaviour import Outage
from ordertally.simkit.server import BackgroundServer

COMMON = (
    "AccessKeyId",
    "Action",
    "Format",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
)
# Each action's own mandatory parameters.
REQUIRED = {
    "SendSms": ("PhoneNumbers", "SignName", "TemplateCode"),
    "SendBatchSms": ("PhoneNumberJson", "SignNameJson", "TemplateCode"),
}
BATCH_LIMIT = 100
TIMESTAMP_WINDOW = timedelta(minutes=15)
_MAINLAND = re.compile(r"^1[3-9]\d{9}$")
_INTERNATIONAL = re.compile(r"^(00)?[1-9]\d{7,14}$")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")

FailMode = Literal["throttle", "illegal", "500", "down"]


def pop_encode(value: str) -> str:
    """Percent-encode byte by byte, keeping only RFC 3986 unreserved characters."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def expected_signature(method: str, params: dict[str, str], secret: str) -> str:
    """What the platform computes for a request (everything but Signature, sorted by name)."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{pop_encode(k)}={pop_encode(v)}" for k, v in pairs)
    to_sign = f"{method}&{pop_encode('/')}&{pop_encode(canonical)}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class SimMessage:
    biz_id: str
    phone_numbers: str
    sign_name: str
    template_code: str
    template_param: dict[str, Any]
    out_id: str | None
    received_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "biz_id": self.biz_id,
            "phone_numbers": self.phone_numbers,
            "sign_name": self.sign_name,
            "template_code": self.template_code,
            "template_param": self.template_param,
            "out_id": self.out_id,
            "received_at": self.received_at.isoformat(),
        }


@dataclass
class SmsSim:
    """The simulator's state: credentials, accepted messages, rejections and scripted failures."""

    access_key_id: str
    access_key_secret: str
    messages: list[SimMessage] = field(default_factory=list)
    rejections: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    # Accepted calls per action ({"SendSms": 3, "SendBatchSms": 1}).
    calls: dict[str, int] = field(default_factory=dict)
    failures: Outage = field(default_factory=Outage)  # scripted failures, by FailMode
    _nonces: dict[str, datetime] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, mode: FailMode | None, count: int | None = None) -> None:
        """Make the next `count` requests (all, when None) fail in `mode`; None heals."""
        with self.lock:
            self.failures.heal()
            if mode is not None and count is None:
                self.failures.fail_until_healed(mode)
            elif mode is not None and count is not None:
                self.failures.fail_next(count, mode)

    def reset(self) -> None:
        """Forget messages, rejections, nonces and scripted failures."""
        with self.lock:
            self.messages.clear()
            self.rejections.clear()
            self._nonces.clear()
            self.failures.heal()
            self.requests = 0
            self.calls.clear()

    def handle(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        """Check and apply one API request; returns the HTTP status and the answer."""
        with self.lock:
            self.requests += 1
            request_id = str(uuid.uuid4()).upper()
            failure = self.failures.take()
            if failure == "down":
                return 503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            if failure == "500":
                return 500, _error(
                    request_id, "InternalError", "The request processing has failed."
                )
            refused = self._verify(method, params, request_id)
            if refused is not None:
                return refused
            if failure == "throttle":
                return 200, _error(
                    request_id, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"
                )
            if failure == "illegal":
                return 200, _error(request_id, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
            if params["Action"] == "SendBatchSms":
                status, answer = self._accept_batch(params, request_id)
            else:
                status, answer = self._accept(params, request_id)
            if answer.get("Code") == "OK":
                self.calls[params["Action"]] = self.calls.get(params["Action"], 0) + 1
            return status, answer

    def _reject(self, request_id: str, status: int, code: str, message: str) -> tuple[int, Any]:
        self.rejections.append({"code": code, "message": message})
        return status, _error(request_id, code, message)

    def _verify(
        self, method: str, params: dict[str, str], request_id: str
    ) -> tuple[int, Any] | None:
        wanted = COMMON + REQUIRED.get(params.get("Action", ""), ())
        missing = [name for name in wanted if not params.get(name)]
        if missing:
            return self._reject(
                request_id, 400, "MissingParameter", f"{missing[0]} is mandatory for this action."
            )
        if params["AccessKeyId"] != self.access_key_id:
            return self._reject(
                request_id, 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return self._reject(
                request_id, 400, "InvalidParameter", "Signature method or version not supported."
            )
        expected = expected_signature(method, params, self.access_key_secret)
        if not hmac.compare_digest(expected, params["Signature"]):
            return self._reject(
                request_id,
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
            )
        try:
            sent = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return self._reject(
                request_id, 400, "InvalidTimeStamp.Format", "Specified time stamp is not valid."
            )
        now = clock.now()
        if abs(now - sent) > TIMESTAMP_WINDOW:
            return self._reject(
                request_id, 400, "InvalidTimeStamp.Expired", "Specified time stamp has expired."
            )
        self._nonces = {n: at for n, at in self._nonces.items() if now - at <= TIMESTAMP_WINDOW}
        if params["SignatureNonce"] in self._nonces:
            return self._reject(
                request_id, 400, "SignatureNonceUsed", "Specified signature nonce was used already."
            )
        self._nonces[params["SignatureNonce"]] = now
        if params["Action"] not in REQUIRED or params["Version"] != "2017-05-25":
            return self._reject(request_id, 400, "InvalidAction.NotFound", "Unknown action.")
        return None

    def _accept(self, params: dict[str, str], request_id: str) -> tuple[int, dict[str, Any]]:
        phones = params["PhoneNumbers"].split(",")
        if len(phones) > 1000:
            return 200, _error(request_id, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if not all(_MAINLAND.match(p) or _INTERNATIONAL.match(p) for p in phones):
            return 200, _error(request_id, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        template_param = _template_param(params.get("TemplateParam") or "{}")
        if template_param is None:
            return 200, _error(
                request_id, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值"
            )
        biz_id = self._biz_id()
        self.messages.append(
            SimMessage(
                biz_id=biz_id,
                phone_numbers=params["PhoneNumbers"],
                sign_name=params["SignName"],
                template_code=params["TemplateCode"],
                template_param=template_param,
                out_id=params.get("OutId"),
                received_at=clock.now(),
            )
        )
        return 200, {"Message": "OK", "RequestId": request_id, "Code": "OK", "BizId": biz_id}

    def _accept_batch(self, params: dict[str, str], request_id: str) -> tuple[int, dict[str, Any]]:
        phones = _string_list(params["PhoneNumberJson"])
        signs = _string_list(params["SignNameJson"])
        try:
            raw_params = orjson.loads(params.get("TemplateParamJson") or "null")
        except orjson.JSONDecodeError:
            raw_params = []
        if phones is None or signs is None or not phones:
            return 200, _error(request_id, "isv.INVALID_PARAMETERS", "参数异常")
        if len(phones) > BATCH_LIMIT:
            return 200, _error(request_id, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if raw_params is None:
            raw_params = [{} for _ in phones]
        if not isinstance(raw_params, list) or len({len(phones), len(signs), len(raw_params)}) > 1:
            return 200, _error(request_id, "isv.INVALID_PARAMETERS", "参数异常")
        template_params = [_template_param(orjson.dumps(p).decode()) for p in raw_params]
        if any(p is None for p in template_params):
            return 200, _error(
                request_id, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值"
            )
        if not all(_MAINLAND.match(p) or _INTERNATIONAL.match(p) for p in phones):
            return 200, _error(request_id, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        biz_id = self._biz_id()
        now = clock.now()
        for phone, sign_name, template_param in zip(phones, signs, template_params, strict=True):
            assert template_param is not None
            self.messages.append(
                SimMessage(
                    biz_id=biz_id,
                    phone_numbers=phone,
                    sign_name=sign_name,
                    template_code=params["TemplateCode"],
                    template_param=template_param,
                    out_id=params.get("OutId"),
                    received_at=now,
                )
            )
        return 200, {"Message": "OK", "RequestId": request_id, "Code": "OK", "BizId": biz_id}

    def _biz_id(self) -> str:
        return f"{int(time.time() * 1000)}^{next(self._ids):010d}"


def _template_param(text: str) -> dict[str, Any] | None:
    """A template's variables: a JSON object of strings, else None."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        return None
    return doc


def _string_list(text: str) -> list[str] | None:
    """A JSON array of strings, else None."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, list) or not all(isinstance(v, str) for v in doc):
        return None
    return doc


def _error(request_id: str, code: str, message: str) -> dict[str, Any]:
    return {"RequestId": request_id, "Code": code, "Message": message}


def _sim(request: Request) -> SmsSim:
    sim: SmsSim = request.app.state.sim
    return sim


def _answer(status: int, answer: dict[str, Any] | str) -> Response:
    if isinstance(answer, str):
        return PlainTextResponse(answer, status_code=status, media_type="text/html")
    return JSONResponse(answer, status_code=status)


class FailIn(BaseModel):
    mode: FailMode | None
    count: int | None = Field(default=None, ge=1, le=1_000_000)


control = APIRouter(prefix="/sim")


@control.get("/messages")
async def control_messages(request: Request) -> Response:
    """Every accepted message, oldest first."""
    sim = _sim(request)
    with sim.lock:
        return JSONResponse(
            {
                "messages": [m.as_json() for m in sim.messages],
                "rejections": list(sim.rejections),
                "requests": sim.requests,
                "calls": dict(sim.calls),
            }
        )


@control.post("/fail")
async def control_fail(request: Request, body: FailIn) -> Response:
    """Fail the next `count` requests (all when omitted) as `mode`; mode null heals."""
    _sim(request).fail(body.mode, body.count)
    return JSONResponse({"mode": body.mode, "count": body.count})


@control.post("/reset")
async def control_reset(request: Request) -> Response:
    """Forget everything."""
    _sim(request).reset()
    return JSONResponse({"reset": True})


api = APIRouter()


@api.api_route("/", methods=["GET", "POST"], include_in_schema=False)
async def api_call(request: Request) -> Response:
    """One Dysmsapi request: parameters from the form (POST) or the query (GET)."""
    if request.method == "POST":
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    else:
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    status, answer = _sim(request).handle(request.method, params)
    return _answer(status, answer)


def create_sms_sim_app(sim: SmsSim) -> FastAPI:
    """The ASGI app: the API at / and the control endpoints under /sim."""
    return simulator_app(
        sim,
        [api, control],
        title="Aliyun SMS simulator",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )


class SmsSimServer(BackgroundServer):
    """The simulator on a real port in a background thread (tests, the demo). `stop()` then
    `start()` again listens on the same port: while stopped the gateway is really down
    (connections are refused)."""

    def __init__(self, sim: SmsSim, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        super().__init__(
            lambda: create_sms_sim_app(self.sim),
            host=host,
            port=port,
            name="smssim",
            lifespan="off",
        )
