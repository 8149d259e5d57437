"""Kuaidi100 (快递100): electronic waybills, tracking subscriptions, real-time queries and pushes.

Wire formats (see PROTOCOLS.md "Logistics: Kuaidi100"):
- waybill: `POST {base}/label/order` form method=order, key, t (ms), sign = upper MD5(param + t +
  key + secret), param JSON;
- subscribe: `POST {base}/poll` form schema=json, param JSON with parameters{callbackurl, salt};
- query: `POST {base}/poll/query.do` form customer, param, sign = upper MD5(param + key + customer);
- push: form param (JSON) + sign = upper MD5(param + salt); times are Beijing time.

Per-event state rule: an event's state comes from its own `statusCode` (resultv2; sub-states
such as "301" or "1002" are folded into their main state), else from its `status` name ("在途",
"签收", ...), else the overall `lastResult.state` for the newest event and 在途 (0) for older ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from ordertally.core import clock, outbound
from ordertally.fulfillment.carriers.base import (
    CarrierRejected,
    CarrierUnavailable,
    PushRejected,
    Subscription,
    TrackingEvent,
    TrackingStatus,
    TrackingUpdate,
    Waybill,
    WaybillRequest,
)

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Kuaidi100's main state codes, their names and our status for each.
STATE_NAMES: dict[str, str] = {
    "0": "在途",
    "1": "揽收",
    "2": "疑难",
    "3": "签收",
    "4": "退签",
    "5": "派件",
    "6": "退回",
    "7": "转投",
    "8": "清关",
    "10": "待清关",
    "11": "清关中",
    "12": "已清关",
    "13": "清关异常",
    "14": "拒签",
}
STATE_MAP: dict[str, TrackingStatus] = {
    "0": TrackingStatus.IN_TRANSIT,
    "1": TrackingStatus.IN_TRANSIT,
    "7": TrackingStatus.IN_TRANSIT,
    "8": TrackingStatus.IN_TRANSIT,
    "10": TrackingStatus.IN_TRANSIT,
    "11": TrackingStatus.IN_TRANSIT,
    "12": TrackingStatus.IN_TRANSIT,
    "5": TrackingStatus.OUT_FOR_DELIVERY,
    "3": TrackingStatus.DELIVERED,
    "2": TrackingStatus.EXCEPTION,
    "4": TrackingStatus.EXCEPTION,
    "6": TrackingStatus.EXCEPTION,
    "13": TrackingStatus.EXCEPTION,
    "14": TrackingStatus.EXCEPTION,
}
_CODE_BY_NAME = {name: code for code, name in STATE_NAMES.items()}

# Subscription answers (/poll): 501 = already subscribed (fine); 500 = their server error.
_SUBSCRIBE_RETRY = frozenset({"500", "502", "503"})
# Query answers (/poll/query.do): 500 = no tracking yet; 501/502 = their server is busy;
# 400 bad data, 408 phone check failed, 503 bad sign, 601 key expired are never retried.
_QUERY_RETRY = frozenset({"501", "502"})

ACCEPT_BODY = '{"result":true,"returnCode":"200","message":"成功"}'


def md5_upper(text: str) -> str:
    """Upper-case hex MD5 of a UTF-8 text: every Kuaidi100 sign."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


def push_sign(param: str, salt: str) -> str:
    """The sign of a push: upper MD5(param + salt)."""
    return md5_upper(param + salt)


def query_sign(param: str, key: str, customer: str) -> str:
    """The sign of a real-time query: upper MD5(param + key + customer)."""
    return md5_upper(param + key + customer)


def label_sign(param: str, t: str, key: str, secret: str) -> str:
    """The sign of an electronic waybill request: upper MD5(param + t + key + secret)."""
    return md5_upper(param + t + key + secret)


def compact_json(doc: Any) -> str:
    """JSON as Kuaidi100's samples send it: no spaces, Chinese kept as is."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def parse_beijing_time(text: str) -> datetime:
    """A Beijing wall-clock "YYYY-MM-DD HH:MM:SS" as an aware UTC datetime."""
    naive = datetime.strptime(text.strip(), TIME_FORMAT)
    return naive.replace(tzinfo=BEIJING).astimezone(UTC)


def format_beijing_time(value: datetime) -> str:
    """An aware datetime as Kuaidi100 writes it (Beijing wall clock)."""
    return clock.as_utc(value).astimezone(BEIJING).strftime(TIME_FORMAT)


def main_state(code: str) -> str | None:
    """Fold a state or resultv2 sub-state code into its main state code; None when unknown."""
    code = code.strip()
    if code in STATE_MAP:
        return code
    if len(code) == 4 and code.startswith("10"):  # 1001-1099: sub-states of 在途
        return "0"
    if len(code) == 3 and code[0] in STATE_MAP:  # 101 已下单, 301 本人签收, 501 投柜 ...
        return code[0]
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_last_result(doc: Mapping[str, Any], *, finished: bool = False) -> TrackingUpdate:
    """Turn a push's `lastResult` (or a query answer, same shape) into our tracking update."""
    overall = main_state(_text(doc.get("state")))
    raw_items = doc.get("data") or []
    if not isinstance(raw_items, list):
        raise ValueError("data is not a list")
    events: list[TrackingEvent] = []
    for index, item in enumerate(raw_items):
        if not isinstance(item, Mapping):
            raise ValueError("data item is not an object")
        stamp = _text(item.get("time")) or _text(item.get("ftime"))
        code = main_state(_text(item.get("statusCode"))) or _CODE_BY_NAME.get(
            _text(item.get("status")).strip()
        )
        if code is None:
            code = overall if index == 0 and overall is not None else "0"
        events.append(
            TrackingEvent(
                occurred_at=parse_beijing_time(stamp),
                status=STATE_MAP[code],
                state_code=code,
                description=_text(item.get("context")),
                location=_text(item.get("areaName")) or _text(item.get("location")),
            )
        )
    return TrackingUpdate(
        company=_text(doc.get("com")),
        waybill_no=_text(doc.get("nu")),
        events=tuple(events),
        state=STATE_MAP[overall] if overall is not None else None,
        state_code=overall or "",
        finished=finished,
        message=_text(doc.get("message")),
    )


def _json_answer(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 500 or response.status_code == 429:
        raise CarrierUnavailable(f"kuaidi100 answered HTTP {response.status_code}")
    try:
        doc = response.json()
    except ValueError as exc:
        if response.status_code >= 400:
            raise CarrierRejected(f"kuaidi100 answered HTTP {response.status_code}") from exc
        raise CarrierUnavailable("kuaidi100 answered something that is not JSON") from exc
    if not isinstance(doc, dict):
        raise CarrierUnavailable("kuaidi100 answered JSON that is not an object")
    return doc


class Kuaidi100Adapter:
    """`CarrierAdapter` over Kuaidi100's HTTP APIs (the process's pooled client for Kuaidi100)."""

    code = "kuaidi100"

    def __init__(
        self,
        *,
        api_base: str,
        customer: str,
        key: str,
        salt: str,
        secret: str = "",
        timeout_seconds: float = 5.0,
        min_query_interval_seconds: int = 1800,
        partner: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.customer = customer
        self.key = key
        self.salt = salt
        self.secret = secret
        self.timeout_seconds = timeout_seconds
        # Kuaidi100 bans callers that query a waybill more than once per 30 min; callers plan
        # their polling with this (the adapter does not keep per-waybill state).
        self.min_query_interval_seconds = min_query_interval_seconds
        # Electronic waybill account fields (partnerId, partnerKey, net, ...) merged into param.
        self.partner: dict[str, str] = dict(partner or {})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        # The process's client for Kuaidi100 (`core.outbound`: one pool per event loop, idle
        # connections dropped before the server's keep-alive ends); a transport given to the
        # adapter (tests) gets a client of its own, kept per loop the same way.
        if self._transport is None:
            return outbound.client("kuaidi100", timeout=self.timeout_seconds)
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_seconds),
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool of a transport given to the adapter (the process's client
        is closed with the others, `outbound.close_all`)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, path: str, form: Mapping[str, str]) -> dict[str, Any]:
        try:
            response = await self._http().post(self.api_base + path, data=dict(form))
        except httpx.HTTPError as exc:
            raise CarrierUnavailable(f"kuaidi100 unreachable: {type(exc).__name__}") from exc
        return _json_answer(response)

    # --- electronic waybill ---------------------------------------------------------------

    def waybill_param(self, request: WaybillRequest) -> dict[str, Any]:
        """The label API's param object for one request."""
        count = sum(quantity for _, quantity in request.items)
        cargo = "、".join(sku for sku, _ in request.items)[:100] or "商品"
        param: dict[str, Any] = {
            **self.partner,
            "kuaidicom": request.company,
            "recMan": _man(request.recipient),
            "sendMan": _man(request.sender),
            "cargo": cargo,
            "count": max(count, 1),
            "payType": "SHIPPER",
            "expType": "标准快递",
            "orderId": request.reference,
        }
        if request.weight_grams > 0:
            param["weight"] = f"{request.weight_grams / 1000:.3f}".rstrip("0").rstrip(".")
        return param

    async def create_waybill(self, request: WaybillRequest) -> Waybill:
        """Ask for an electronic waybill; Kuaidi100 answers the same number for the same orderId."""
        if not self.secret:
            raise CarrierRejected("kuaidi100 label API secret is not configured", "config")
        param = compact_json(self.waybill_param(request))
        t = str(int(time.time() * 1000))
        form = {
            "method": "order",
            "key": self.key,
            "t": t,
            "sign": label_sign(param, t, self.key, self.secret),
            "param": param,
        }
        doc = await self._post("/label/order", form)
        code = _text(doc.get("returnCode"))
        if doc.get("result") is not True or code != "200":
            message = _text(doc.get("message")) or "label order refused"
            if code.startswith("5") or not code:
                raise CarrierUnavailable(f"kuaidi100 label order: {message}", code)
            raise CarrierRejected(f"kuaidi100 label order: {message}", code)
        data = doc.get("data")
        number = _text(data.get("kuaidinum")) if isinstance(data, dict) else ""
        if not number:
            raise CarrierUnavailable("kuaidi100 label order answered without a kuaidinum", code)
        assert isinstance(data, dict)
        label = _text(data.get("label")) or _text(data.get("taskId"))
        return Waybill(
            company=_text(data.get("kuaidicom")) or request.company,
            waybill_no=number,
            label=label,
        )

    # --- tracking -------------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> None:
        """Subscribe a waybill's pushes to our callback; "already subscribed" (501) is fine."""
        parameters: dict[str, str] = {
            "callbackurl": subscription.callback_url,
            "salt": self.salt,
            "resultv2": "1",
        }
        if subscription.phone:
            parameters["phone"] = subscription.phone
        param: dict[str, Any] = {
            "company": subscription.company,
            "number": subscription.waybill_no,
            "key": self.key,
        }
        for name, value in subscription.extra.items():  # from/to go on top, the rest inside
            (param if name in ("from", "to") else parameters)[name] = value
        param["parameters"] = parameters
        doc = await self._post("/poll", {"schema": "json", "param": compact_json(param)})
        code = _text(doc.get("returnCode"))
        if code in ("200", "501"):
            return
        message = f"kuaidi100 subscribe {code}: {_text(doc.get('message'))}"
        if code in _SUBSCRIBE_RETRY or not code:
            raise CarrierUnavailable(message, code)
        raise CarrierRejected(message, code)  # 600/601 key, 700-702 company or number

    async def query(self, company: str, waybill_no: str, phone: str = "") -> TrackingUpdate:
        """Real-time query; "no result yet" (500) answers an update without events."""
        param_doc: dict[str, str] = {"com": company, "num": waybill_no, "resultv2": "1"}
        if phone:
            param_doc["phone"] = phone
        param = compact_json(param_doc)
        form = {
            "customer": self.customer,
            "param": param,
            "sign": query_sign(param, self.key, self.customer),
        }
        doc = await self._post("/poll/query.do", form)
        if doc.get("result") is False or "returnCode" in doc:
            code = _text(doc.get("returnCode"))
            message = _text(doc.get("message"))
            if code == "500":
                return TrackingUpdate(company, waybill_no, (), None, message=message)
            if code in _QUERY_RETRY or not code:
                raise CarrierUnavailable(f"kuaidi100 query {code}: {message}", code)
            raise CarrierRejected(f"kuaidi100 query {code}: {message}", code)
        try:
            update = parse_last_result(doc, finished=_text(doc.get("ischeck")) == "1")
        except (ValueError, KeyError) as exc:
            raise CarrierUnavailable(f"kuaidi100 query answer unreadable: {exc}") from exc
        return update

    def parse_push(self, form: Mapping[str, str]) -> TrackingUpdate:
        """Verify a push's sign (MD5(param + salt)) and parse its lastResult."""
        param = form.get("param")
        sign = form.get("sign")
        if not param or not sign or not self.salt:
            raise PushRejected("push without param or sign", "missing")
        expected = push_sign(param, self.salt)
        if not hmac.compare_digest(sign.strip().upper().encode(), expected.encode()):
            raise PushRejected("push sign does not match", "bad_sign")
        try:
            doc = json.loads(param)
        except ValueError as exc:
            raise PushRejected("push param is not JSON", "malformed") from exc
        if not isinstance(doc, dict):
            raise PushRejected("push param is not an object", "malformed")
        status = _text(doc.get("status"))
        last = doc.get("lastResult")
        if not isinstance(last, dict):
            raise PushRejected("push without lastResult", "malformed")
        try:
            update = parse_last_result(last, finished=status in ("shutdown", "abort"))
        except (ValueError, KeyError, TypeError) as exc:
            raise PushRejected(f"push lastResult unreadable: {exc}", "malformed") from exc
        message = _text(doc.get("message")) or update.message
        if doc.get("comNew") and doc.get("comNew") != doc.get("comOld"):
            message = f"{message} (company {doc.get('comOld')} -> {doc.get('comNew')})".strip()
        return TrackingUpdate(
            company=update.company,
            waybill_no=update.waybill_no,
            events=update.events,
            state=update.state,
            state_code=update.state_code,
            finished=update.finished,
            message=message,
        )

    def accept_body(self) -> tuple[int, str, str]:
        """What Kuaidi100 wants to read after a stored push."""
        return 200, "application/json", ACCEPT_BODY

    def reject_body(self, reason: str) -> tuple[int, str, str]:
        """A refused push: result false (Kuaidi100 reads only the body and retries later)."""
        body = compact_json({"result": False, "returnCode": "500", "message": reason[:200]})
        return 200, "application/json", body


def _man(party: Any) -> dict[str, str]:
    address = "".join(
        part for part in (party.province, party.city, party.district, party.address) if part
    )
    return {"name": party.name, "mobile": party.phone, "printAddr": address}


def kuaidi100_from_settings(settings: Any) -> Kuaidi100Adapter | None:
    """The adapter from ORDERTALLY_KUAIDI100_* settings; None unless base, customer, key and
    salt are all given (the label secret is needed only for electronic waybills)."""
    required: Sequence[str] = (
        settings.kuaidi100_api_base,
        settings.kuaidi100_customer,
        settings.kuaidi100_key,
        settings.kuaidi100_salt,
    )
    if not all(required):
        return None
    return Kuaidi100Adapter(
        api_base=settings.kuaidi100_api_base,
        customer=settings.kuaidi100_customer,
        key=settings.kuaidi100_key,
        salt=settings.kuaidi100_salt,
        secret=settings.kuaidi100_secret,
        timeout_seconds=settings.kuaidi100_timeout_seconds,
        min_query_interval_seconds=settings.kuaidi100_min_query_interval_seconds,
    )
