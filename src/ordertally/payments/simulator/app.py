"""The simulator's HTTP server (`ordertally paysim serve`): WeChat Pay v3's Native and query
APIs, Alipay's gateway, and control endpoints under /sim for tests, the demo and operators."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ordertally.core import clock
from ordertally.payments.simulator import messages
from ordertally.payments.simulator.bills import render_bill
from ordertally.payments.simulator.engine import (
    BehaviourPatch,
    Provider,
    SimPayment,
    SimRefund,
    Simulator,
)
from ordertally.payments.simulator.keys import SimKeys
from ordertally.simkit.app import simulator_app
from ordertally.simkit.errors import SimError

# WeChat Pay: out_trade_no is 6-32 of letters, digits, _-|* ; Alipay: up to 64 characters.
_WECHAT_TRADE_NO = re.compile(r"^[A-Za-z0-9_\-|*]{6,32}$")
_ALIPAY_TRADE_NO = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# time_expire as WeChat Pay documents it: yyyy-MM-DDTHH:mm:ss+TIMEZONE (an offset, never Z).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")
_MAX_AMOUNT_MINOR = 100_000_000_00


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


# --- WeChat Pay v3 ------------------------------------------------------------------------------


def _wechat_answer(sim: Simulator, status: int, doc: dict[str, Any] | None) -> Response:
    """An API answer signed like the platform's: Wechatpay-* headers over the exact body."""
    body = messages.compact_json(doc).encode() if doc is not None else b""
    headers = messages.wechat_sign_headers(sim.keys, body)
    headers["Request-ID"] = messages.new_nonce()
    media = "application/json" if doc is not None else None
    return Response(content=body, status_code=status, headers=headers, media_type=media)


def _wechat_error(sim: Simulator, status: int, code: str, message: str) -> Response:
    return _wechat_answer(sim, status, {"code": code, "message": message})


def _signed_path(request: Request) -> str:
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string") or b""
    return raw.decode() + ("?" + query.decode() if query else "")


async def _wechat_auth(request: Request, sim: Simulator) -> tuple[bytes, Response | None]:
    """The request body, and an error answer when the merchant signature is bad."""
    body = await request.body()
    reason = messages.verify_wechat_authorization(
        sim.keys,
        request.method,
        _signed_path(request),
        body,
        request.headers.get("authorization", ""),
    )
    if reason is not None:
        return body, _wechat_error(sim, 401, "SIGN_ERROR", f"签名错误: {reason}")
    return body, None


def _wechat_transaction(sim: Simulator, payment: SimPayment) -> dict[str, Any]:
    paid = payment.paid_at is not None
    return messages.wechat_transaction(
        sim.keys,
        payment.out_trade_no,
        payment.amount_minor,
        trade_state=payment.state,
        transaction_id=payment.trade_no if paid else None,
        success_time=payment.paid_at,
        openid=payment.buyer or None,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


wechat = APIRouter(tags=["WeChat Pay v3"])


@wechat.post("/v3/pay/transactions/native")
async def wechat_native(request: Request) -> Response:
    """Native (QR code) order: answers the code_url the buyer scans."""
    sim = _sim(request)
    body, denied = await _wechat_auth(request, sim)
    if denied is not None:
        return denied
    doc = _json_object(body)
    amount = doc.get("amount") if doc else None
    total = amount.get("total") if isinstance(amount, dict) else None
    if (
        doc is None
        or not isinstance(total, int)
        or isinstance(total, bool)
        or not 1 <= total <= _MAX_AMOUNT_MINOR
        or not isinstance(doc.get("description"), str)
        or not isinstance(doc.get("notify_url"), str)
        or not _WECHAT_TRADE_NO.match(str(doc.get("out_trade_no", "")))
    ):
        return _wechat_error(sim, 400, "PARAM_ERROR", "参数错误")
    if doc.get("mchid") != sim.keys.mchid or doc.get("appid") != sim.keys.appid:
        return _wechat_error(sim, 400, "PARAM_ERROR", "appid和mchid不匹配")
    if isinstance(amount, dict) and amount.get("currency", "CNY") != "CNY":
        return _wechat_error(sim, 400, "PARAM_ERROR", "不支持的币种")
    expires_at = _wechat_time_expire(doc.get("time_expire"))
    if expires_at is False:
        return _wechat_error(sim, 400, "PARAM_ERROR", "time_expire格式错误")
    existing = sim.find("wechatpay", doc["out_trade_no"])
    if existing is not None and existing.state in ("SUCCESS", "REFUND"):
        return _wechat_error(sim, 400, "ORDERPAID", "该订单已支付")
    if existing is not None and existing.state == "CLOSED":
        return _wechat_error(sim, 400, "ORDER_CLOSED", "订单已关闭")
    try:
        payment = sim.create(
            "wechatpay",
            doc["out_trade_no"],
            total,
            notify_url=doc["notify_url"],
            description=doc["description"],
            expires_at=expires_at or None,
        )
    except SimError:
        return _wechat_error(sim, 400, "INVALID_REQUEST", "201 商户订单号重复")
    return _wechat_answer(sim, 200, {"code_url": payment.code})


@wechat.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
async def wechat_query(request: Request, out_trade_no: str) -> Response:
    """Query by out_trade_no: the transaction as it stands."""
    sim = _sim(request)
    _, denied = await _wechat_auth(request, sim)
    if denied is not None:
        return denied
    if request.query_params.get("mchid") != sim.keys.mchid:
        return _wechat_error(sim, 400, "PARAM_ERROR", "mchid与请求方不一致")
    payment = sim.find("wechatpay", unquote(out_trade_no))
    if payment is None:
        return _wechat_error(sim, 404, "ORDER_NOT_EXIST", "订单不存在")
    return _wechat_answer(sim, 200, _wechat_transaction(sim, payment))


@wechat.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
async def wechat_close(request: Request, out_trade_no: str) -> Response:
    """Close an unpaid order: 204."""
    sim = _sim(request)
    _, denied = await _wechat_auth(request, sim)
    if denied is not None:
        return denied
    try:
        sim.close("wechatpay", unquote(out_trade_no))
    except SimError as exc:
        if exc.status == 404:
            return _wechat_error(sim, 404, "ORDER_NOT_EXIST", "订单不存在")
        return _wechat_error(sim, 400, "ORDERPAID", "该订单已支付")
    return _wechat_answer(sim, 204, None)


@wechat.post("/v3/refund/domestic/refunds")
async def wechat_refund(request: Request) -> Response:
    """Apply for a refund; the refund succeeds at once and REFUND.SUCCESS is notified."""
    sim = _sim(request)
    sim.refund_requests += 1
    body, denied = await _wechat_auth(request, sim)
    if denied is not None:
        return denied
    doc = _json_object(body)
    amount = doc.get("amount") if doc else None
    if doc is None or not isinstance(amount, dict) or not doc.get("out_refund_no"):
        return _wechat_error(sim, 400, "PARAM_ERROR", "参数错误")
    refund_minor, total = amount.get("refund"), amount.get("total")
    if not isinstance(refund_minor, int) or not isinstance(total, int):
        return _wechat_error(sim, 400, "PARAM_ERROR", "参数错误")
    payment = None
    if doc.get("out_trade_no"):
        payment = sim.find("wechatpay", str(doc["out_trade_no"]))
    elif doc.get("transaction_id"):
        payment = sim.find_by_trade_no("wechatpay", str(doc["transaction_id"]))
    if payment is None:
        return _wechat_error(sim, 404, "RESOURCE_NOT_EXISTS", "订单不存在")
    if total != payment.amount_minor:
        return _wechat_error(sim, 400, "PARAM_ERROR", "订单金额与原订单不一致")
    notify_url = doc.get("notify_url") if isinstance(doc.get("notify_url"), str) else None
    try:
        payment, refund = sim.refund(
            "wechatpay",
            payment.out_trade_no,
            refund_minor,
            out_refund_no=str(doc["out_refund_no"]),
            notify_url=notify_url,
        )
    except SimError as exc:
        return _wechat_error(sim, 400, "INVALID_REQUEST", exc.message)
    if sim.refund_answer_delay_seconds:
        await asyncio.sleep(sim.refund_answer_delay_seconds)
    return _wechat_answer(sim, 200, _wechat_refund_doc(payment, refund, "PROCESSING"))


def _wechat_refund_doc(payment: SimPayment, refund: SimRefund, status: str) -> dict[str, Any]:
    """A refund as the refund APIs show it (wechatpay-apiv3/wechatpay-go
    docs/refunddomestic/RefundsApi.md: Refund)."""
    doc: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": payment.trade_no,
        "out_trade_no": payment.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": messages.rfc3339(refund.at),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": payment.amount_minor,
            "refund": refund.amount_minor,
            "payer_total": payment.amount_minor,
            "payer_refund": refund.amount_minor,
            "settlement_refund": refund.amount_minor,
            "settlement_total": payment.amount_minor,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }
    if status == "SUCCESS":
        doc["success_time"] = messages.rfc3339(refund.at)
    return doc


@wechat.get("/v3/refund/domestic/refunds/{out_refund_no}")
async def wechat_refund_query(request: Request, out_refund_no: str) -> Response:
    """查询单笔退款: the refund made under out_refund_no (SUCCESS: the simulator refunds at
    once), or 404 RESOURCE_NOT_EXISTS."""
    sim = _sim(request)
    _, denied = await _wechat_auth(request, sim)
    if denied is not None:
        return denied
    found = sim.find_refund("wechatpay", out_refund_no)
    if found is None:
        return _wechat_error(sim, 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
    return _wechat_answer(sim, 200, _wechat_refund_doc(*found, "SUCCESS"))


# --- Alipay ------------------------------------------------------------------------------------


def _alipay_answer(sim: Simulator, method: str, payload: dict[str, Any]) -> Response:
    text = messages.alipay_response(sim.keys, method, payload)
    return Response(content=text.encode(), media_type="application/json;charset=utf-8")


def _alipay_fail(
    sim: Simulator, method: str, sub_code: str, sub_msg: str, **extra: str
) -> Response:
    payload = {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}
    return _alipay_answer(sim, method, {**payload, **extra})


def _alipay_invalid(sim: Simulator, method: str, sub_code: str, sub_msg: str) -> Response:
    payload = {
        "code": "40002",
        "msg": "Invalid Arguments",
        "sub_code": sub_code,
        "sub_msg": sub_msg,
    }
    return _alipay_answer(sim, method, payload)


def _yuan_to_minor(value: Any) -> int | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        return None
    minor = int(amount * 100)
    return minor if 1 <= minor <= _MAX_AMOUNT_MINOR else None


def _alipay_query_payload(payment: SimPayment) -> dict[str, Any]:
    paid = payment.paid_at is not None
    payload: dict[str, Any] = {
        "code": "10000",
        "msg": "Success",
        "trade_no": payment.trade_no,
        "out_trade_no": payment.out_trade_no,
        "buyer_logon_id": "159****5620" if paid else "",
        "trade_status": payment.alipay_status,
        "total_amount": messages.yuan(payment.amount_minor),
        "buyer_pay_amount": messages.yuan(payment.amount_minor if paid else 0),
        "receipt_amount": messages.yuan(payment.amount_minor if paid else 0),
        "point_amount": "0.00",
        "invoice_amount": messages.yuan(payment.amount_minor if paid else 0),
    }
    if payment.paid_at is not None:
        payload["send_pay_date"] = messages.alipay_time(payment.paid_at)
        payload["buyer_user_id"] = payment.buyer
        payload["fund_bill_list"] = [
            {"amount": messages.yuan(payment.amount_minor), "fund_channel": "ALIPAYACCOUNT"}
        ]
    if not payload["buyer_logon_id"]:
        del payload["buyer_logon_id"]
    return payload


alipay = APIRouter(tags=["Alipay"])


@alipay.api_route("/gateway.do", methods=["GET", "POST"])
async def alipay_gateway(request: Request) -> Response:
    """The open-platform gateway: precreate, query, close and refund, signed RSA2."""
    sim = _sim(request)
    params: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    method = params.get("method", "")
    if method not in (
        "alipay.trade.precreate",
        "alipay.trade.query",
        "alipay.trade.close",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
    ):
        body = {
            "error_response": {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-method",
                "sub_msg": "不存在的方法名",
            }
        }
        return JSONResponse(body)
    if params.get("app_id") != sim.keys.alipay_app_id:
        return _alipay_invalid(sim, method, "isv.invalid-app-id", "无效的AppID参数")
    signature = params.get("sign", "")
    content = messages.alipay_sign_content(params, exclude=("sign",))
    if params.get("sign_type") != "RSA2" or not messages.alipay_verify(
        sim.keys.app_public, content, signature
    ):
        return _alipay_invalid(
            sim, method, "isv.invalid-signature", "验签出错，请确认签名字符串与应用公钥是否匹配"
        )
    try:
        biz = json.loads(params.get("biz_content") or "{}")
    except ValueError:
        biz = None
    if not isinstance(biz, dict):
        return _alipay_invalid(sim, method, "isv.invalid-parameter", "biz_content 不是 JSON 对象")
    if method == "alipay.trade.precreate":
        return _alipay_precreate(sim, biz, params.get("notify_url", ""))
    payment = None
    if biz.get("out_trade_no"):
        payment = sim.find("alipay", str(biz["out_trade_no"]))
    elif biz.get("trade_no"):
        payment = sim.find_by_trade_no("alipay", str(biz["trade_no"]))
    if payment is None:
        extra = {"out_trade_no": str(biz["out_trade_no"])} if biz.get("out_trade_no") else {}
        return _alipay_fail(sim, method, "ACQ.TRADE_NOT_EXIST", "交易不存在", **extra)
    if method == "alipay.trade.query":
        return _alipay_answer(sim, method, _alipay_query_payload(payment))
    if method == "alipay.trade.close":
        try:
            sim.close("alipay", payment.out_trade_no)
        except SimError:
            return _alipay_fail(sim, method, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        payload = {"code": "10000", "msg": "Success"}
        payload |= {"trade_no": payment.trade_no, "out_trade_no": payment.out_trade_no}
        return _alipay_answer(sim, method, payload)
    if method == "alipay.trade.fastpay.refund.query":
        return _alipay_refund_query(sim, payment, biz)
    sim.refund_requests += 1
    answer = _alipay_refund(sim, payment, biz)
    if sim.refund_answer_delay_seconds:
        await asyncio.sleep(sim.refund_answer_delay_seconds)
    return answer


def _alipay_refund_query(sim: Simulator, payment: SimPayment, biz: dict[str, Any]) -> Response:
    """alipay.trade.fastpay.refund.query (opendocs.alipay.com/apis/0287wc): refund_status
    REFUND_SUCCESS with the amounts, or no refund fields when there is no such refund."""
    method = "alipay.trade.fastpay.refund.query"
    out_request_no = str(biz.get("out_request_no") or payment.out_trade_no)
    payload: dict[str, Any] = {
        "code": "10000",
        "msg": "Success",
        "trade_no": payment.trade_no,
        "out_trade_no": payment.out_trade_no,
        "out_request_no": out_request_no,
    }
    for refund in payment.refunds:
        if refund.out_refund_no == out_request_no:
            payload |= {
                "total_amount": messages.yuan(payment.amount_minor),
                "refund_amount": messages.yuan(refund.amount_minor),
                "refund_status": "REFUND_SUCCESS",
            }
    return _alipay_answer(sim, method, payload)


def _wechat_time_expire(value: Any) -> datetime | Literal[False] | None:
    """WeChat Pay's time_expire (RFC 3339 with its offset, e.g. 2018-06-08T10:34:56+08:00):
    None when absent, False when malformed."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.match(value):
        return False
    return clock.as_utc(datetime.fromisoformat(value))


def _alipay_time_expire(value: Any) -> datetime | Literal[False] | None:
    """Alipay's time_expire (yyyy-MM-dd HH:mm:ss, Beijing time): None when absent, False when
    malformed."""
    if value is None:
        return None
    try:
        local = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return clock.as_utc(local.replace(tzinfo=messages.BEIJING))


def _alipay_precreate(sim: Simulator, biz: dict[str, Any], notify_url: str) -> Response:
    method = "alipay.trade.precreate"
    out_trade_no = str(biz.get("out_trade_no", ""))
    amount = _yuan_to_minor(biz.get("total_amount"))
    if not _ALIPAY_TRADE_NO.match(out_trade_no) or amount is None or not biz.get("subject"):
        return _alipay_invalid(sim, method, "isv.invalid-parameter", "参数无效")
    expires_at = _alipay_time_expire(biz.get("time_expire"))
    if expires_at is False:
        return _alipay_invalid(sim, method, "isv.invalid-parameter", "time_expire 格式错误")
    existing = sim.find("alipay", out_trade_no)
    if existing is not None and existing.paid_at is not None:
        return _alipay_fail(sim, method, "ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
    if existing is not None and existing.state == "CLOSED":
        return _alipay_fail(sim, method, "ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
    try:
        payment = sim.create(
            "alipay",
            out_trade_no,
            amount,
            notify_url=notify_url,
            description=str(biz["subject"]),
            expires_at=expires_at or None,
        )
    except SimError:
        return _alipay_fail(sim, method, "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
    payload = {"code": "10000", "msg": "Success", "out_trade_no": out_trade_no}
    payload["qr_code"] = payment.code
    return _alipay_answer(sim, method, payload)


def _alipay_refund(sim: Simulator, payment: SimPayment, biz: dict[str, Any]) -> Response:
    method = "alipay.trade.refund"
    amount = _yuan_to_minor(biz.get("refund_amount"))
    if amount is None:
        return _alipay_invalid(sim, method, "isv.invalid-parameter", "refund_amount 无效")
    out_request_no = str(biz.get("out_request_no") or payment.out_trade_no)
    try:
        payment, _ = sim.refund(
            "alipay", payment.out_trade_no, amount, out_refund_no=out_request_no
        )
    except SimError as exc:
        if exc.code == "NOT_ENOUGH":
            return _alipay_fail(sim, method, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        return _alipay_fail(sim, method, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
    payload = {
        "code": "10000",
        "msg": "Success",
        "trade_no": payment.trade_no,
        "out_trade_no": payment.out_trade_no,
        "buyer_logon_id": "159****5620",
        "fund_change": "Y",
        "refund_fee": messages.yuan(payment.refunded_minor),
        "buyer_user_id": payment.buyer,
        "gmt_refund_pay": messages.alipay_time(clock.now()),
    }
    return _alipay_answer(sim, method, payload)


# --- control -----------------------------------------------------------------------------------


class TradeRef(BaseModel):
    provider: Provider
    out_trade_no: str = Field(min_length=1, max_length=64)


class NewTrade(TradeRef):
    amount: int = Field(ge=1, le=_MAX_AMOUNT_MINOR, description="minor units (fen)")
    notify_url: str = Field(default="", max_length=1024)
    description: str = Field(default="", max_length=256)


class RefundRequest(TradeRef):
    amount: int = Field(ge=1, le=_MAX_AMOUNT_MINOR, description="minor units (fen)")
    out_refund_no: str | None = Field(default=None, max_length=64)


control = APIRouter(prefix="/sim", tags=["control"])


@control.post("/payments")
async def control_create(request: Request, trade: NewTrade) -> Response:
    """Open a trade directly (as if ordertally had called the platform's create API)."""
    sim = _sim(request)
    payment = sim.create(
        trade.provider,
        trade.out_trade_no,
        trade.amount,
        notify_url=trade.notify_url,
        description=trade.description,
    )
    return JSONResponse(payment.as_json(), status_code=201)


@control.post("/pay")
async def control_pay(request: Request, trade: TradeRef) -> Response:
    """The buyer pays: the trade becomes paid and the notification goes out."""
    return JSONResponse(_sim(request).pay(trade.provider, trade.out_trade_no).as_json())


@control.post("/close")
async def control_close(request: Request, trade: TradeRef) -> Response:
    """Close an unpaid trade (the buyer never pays)."""
    return JSONResponse(_sim(request).close(trade.provider, trade.out_trade_no).as_json())


@control.post("/refund")
async def control_refund(request: Request, refund: RefundRequest) -> Response:
    """Refund part or all of a paid trade; the refund notification goes out."""
    payment, _ = _sim(request).refund(
        refund.provider, refund.out_trade_no, refund.amount, out_refund_no=refund.out_refund_no
    )
    return JSONResponse(payment.as_json())


@control.post("/renotify")
async def control_renotify(request: Request, trade: TradeRef) -> Response:
    """Send a paid trade's notification once more (a fresh delivery with its retries)."""
    return JSONResponse(_sim(request).renotify(trade.provider, trade.out_trade_no).as_json())


@control.get("/behaviour")
async def control_get_behaviour(request: Request) -> dict[str, Any]:
    """How notifications misbehave now."""
    return _sim(request).behaviour_json()


@control.post("/behaviour")
async def control_behaviour(request: Request, patch: BehaviourPatch) -> dict[str, Any]:
    """Change how notifications misbehave; fields left out keep their value."""
    sim = _sim(request)
    await sim.set_behaviour(patch)
    return sim.behaviour_json()


@control.get("/payments")
async def control_payments(
    request: Request,
    provider: Provider | None = None,
    state: str | None = None,
    out_trade_no: str | None = None,
) -> list[dict[str, Any]]:
    """Every trade (filtered by provider, state, out_trade_no)."""
    return [
        p.as_json()
        for p in _sim(request).payments.values()
        if (provider is None or p.provider == provider)
        and (state is None or p.state == state)
        and (out_trade_no is None or p.out_trade_no == out_trade_no)
    ]


@control.get("/deliveries")
async def control_deliveries(
    request: Request,
    provider: Provider | None = None,
    out_trade_no: str | None = None,
    limit: int = Query(default=1000, ge=1, le=50_000),
) -> list[dict[str, Any]]:
    """Each delivery attempt, oldest first: what was sent and what ordertally answered."""
    rows = [
        d
        for d in _sim(request).deliveries
        if (provider is None or d["provider"] == provider)
        and (out_trade_no is None or d["out_trade_no"] == out_trade_no)
    ]
    return rows[-limit:]


@control.get("/status")
async def control_status(request: Request) -> dict[str, Any]:
    """Counts: trades by state, deliveries under way, attempts recorded."""
    sim = _sim(request)
    states: dict[str, int] = {}
    for p in sim.payments.values():
        states[f"{p.provider}:{p.state}"] = states.get(f"{p.provider}:{p.state}", 0) + 1
    return {
        "payments": len(sim.payments),
        "states": states,
        "pending_deliveries": sim.pending,
        "deliveries_recorded": len(sim.deliveries),
        "time_scale": sim.time_scale,
        "behaviour": sim.behaviour_json(),
        "refund_requests": sim.refund_requests,
        "refunds": sum(len(p.refunds) for p in sim.payments.values()),
        "refund_answer_delay_seconds": sim.refund_answer_delay_seconds,
    }


@control.post("/reset")
async def control_reset(request: Request) -> dict[str, str]:
    """Forget every trade and delivery; behaviour back to normal."""
    await _sim(request).reset()
    return {"status": "reset"}


@control.get("/bills/{provider}")
async def control_bill(
    request: Request,
    provider: Provider,
    day: date | None = Query(default=None, alias="date"),
) -> Response:
    """The day's statement (Beijing date), as the platform's download gives it."""
    sim = _sim(request)
    bill_date = day or clock.now().astimezone(messages.BEIJING).date()
    content = render_bill(
        provider,
        sim.bill_rows(provider, bill_date),
        bill_date=bill_date,
        appid=sim.keys.appid,
        mchid=sim.keys.mchid,
        account=sim.keys.alipay_seller_id,
    )
    charset: Literal["utf-8", "gb18030"] = "gb18030" if provider == "alipay" else "utf-8"
    name = f"{provider}-{bill_date.isoformat()}.csv"
    return Response(
        content=content,
        media_type=f"text/csv; charset={charset}",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def create_sim_app(keys: SimKeys, *, time_scale: float = 1.0, concurrency: int = 50) -> FastAPI:
    """The simulator as an ASGI app. `time_scale` divides the retry schedules (1000 turns WeChat
    Pay's 15 s into 15 ms); `concurrency` caps notifications in flight."""
    sim = Simulator(keys, time_scale=time_scale, concurrency=concurrency)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await sim.aclose()

    return simulator_app(
        sim,
        [wechat, alipay, control],
        title="ordertally payment simulator",
        description="WeChat Pay v3 and Alipay, played with test keys. Never use real keys here.",
        lifespan=lifespan,
    )
