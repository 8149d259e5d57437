"""Message templates as data: per event, a title and body for operations channels and an SMS
preview plus the variables of the gateway's approved template, in Simplified Chinese and
English. Rendered with `str.format`; event payload fields are the variables, plus a few derived
ones (`time`, `carrier_name`, `reason_text`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ordertally.core import clock, money

EVENTS: tuple[str, ...] = (
    "OrderPaid",
    "ShipmentShipped",
    "ShipmentDelivered",
    "ShipmentTrackingException",
    # After-sales steps the buyer hears about (issue 18).
    "AftersaleApproved",
    "AftersaleRejected",
    "AftersaleReturned",
    "AftersaleRefundConfirmed",
)
# Exception case events: the workbench renders their cards itself; targets opt in by name.
CASE_EVENTS = ("CaseOpened", "CaseSlaWarning", "CaseSlaBreached", "CaseEscalated")
# A message an operator asks for from the API, to check a channel end to end.
TEST_EVENT = "NotificationTest"

# When each event happened, by payload field.
TIME_FIELD = {
    "OrderPaid": "occurred_at",
    "ShipmentShipped": "shipped_at",
    "ShipmentDelivered": "delivered_at",
    "ShipmentTrackingException": "occurred_at",
    TEST_EVENT: "occurred_at",
    "AftersaleApproved": "occurred_at",
    "AftersaleRejected": "occurred_at",
    "AftersaleReturned": "occurred_at",
    "AftersaleRefundConfirmed": "occurred_at",
}

OPS: dict[str, dict[str, tuple[str, str]]] = {
    "OrderPaid": {
        "zh": ("订单已支付：{order_no}", "订单 {order_no} 已于 {time} 完成支付，请安排发货。"),
        "en": (
            "Order paid: {order_no}",
            "Order {order_no} was paid at {time}; it is ready for fulfilment.",
        ),
    },
    "ShipmentShipped": {
        "zh": (
            "已发货：{order_no}",
            "订单 {order_no} 已于 {time} 从 {warehouse} 发出，{carrier_name} 运单号 {waybill_no}。"
            "\n物流跟踪：{tracking_url}",
        ),
        "en": (
            "Shipped: {order_no}",
            "Order {order_no} left {warehouse} at {time} with {carrier_name}, "
            "waybill {waybill_no}.\nTracking: {tracking_url}",
        ),
    },
    "ShipmentDelivered": {
        "zh": (
            "已签收：{order_no}",
            "订单 {order_no} 的包裹（{carrier_name} {waybill_no}）已于 {time} 签收。"
            "\n物流跟踪：{tracking_url}",
        ),
        "en": (
            "Delivered: {order_no}",
            "The parcel of order {order_no} ({carrier_name} {waybill_no}) was signed for "
            "at {time}.\nTracking: {tracking_url}",
        ),
    },
    "ShipmentTrackingException": {
        "zh": (
            "物流异常：{order_no}（{reason_text}）",
            "订单 {order_no} 的包裹（{carrier_name} {waybill_no}）于 {time} 出现异常："
            "{reason_text}。\n承运商说明：{detail}\n物流跟踪：{tracking_url}",
        ),
        "en": (
            "Tracking exception: {order_no} ({reason_text})",
            "The parcel of order {order_no} ({carrier_name} {waybill_no}) has a problem since "
            "{time}: {reason_text}.\nCarrier says: {detail}\nTracking: {tracking_url}",
        ),
    },
    "AftersaleApproved": {
        "zh": ("售后已同意：{case_no}", "订单 {order_no} 的售后单 {case_no} 已于 {time} 同意。"),
        "en": (
            "After-sales approved: {case_no}",
            "After-sales case {case_no} of order {order_no} was approved at {time}.",
        ),
    },
    "AftersaleRejected": {
        "zh": ("售后已拒绝：{case_no}", "订单 {order_no} 的售后单 {case_no} 已于 {time} 拒绝。"),
        "en": (
            "After-sales rejected: {case_no}",
            "After-sales case {case_no} of order {order_no} was rejected at {time}.",
        ),
    },
    "AftersaleReturned": {
        "zh": (
            "退货已签收：{case_no}",
            "售后单 {case_no}（订单 {order_no}）的退货已于 {time} 入库。",
        ),
        "en": (
            "Return received: {case_no}",
            "The return of case {case_no} (order {order_no}) reached the warehouse at {time}.",
        ),
    },
    "AftersaleRefundConfirmed": {
        "zh": ("退款成功：{order_no}", "订单 {order_no} 的退款 {amount} 已于 {time} 到账。"),
        "en": (
            "Refunded: {order_no}",
            "The refund of {amount} for order {order_no} was confirmed at {time}.",
        ),
    },
    TEST_EVENT: {
        "zh": ("ordertally 测试消息", "这是一条测试消息（{time}），收到即表示通知渠道配置正确。"),
        "en": (
            "ordertally test message",
            "This is a test message ({time}); receiving it means the channel is set up right.",
        ),
    },
}

# Buyer SMS: a local preview (stored in the send log) and the template's variables. The text the
# buyer receives is the approved template at the gateway, chosen by its configured code.
SMS: dict[str, dict[str, str]] = {
    "OrderPaid": {
        "zh": "您的订单 {order_no} 已支付成功，我们将尽快为您发货。",
        "en": "Your order {order_no} is paid. We will ship it soon.",
    },
    "ShipmentShipped": {
        "zh": (
            "您的订单 {order_no} 已发货，{carrier_name} 运单号 {waybill_no}，"
            "查看物流：{tracking_url}"
        ),
        "en": (
            "Your order {order_no} has shipped with {carrier_name}, waybill {waybill_no}. "
            "Track it: {tracking_url}"
        ),
    },
    "ShipmentDelivered": {
        "zh": "您的订单 {order_no}（{carrier_name} {waybill_no}）已签收，感谢您的购买。",
        "en": "Your order {order_no} ({carrier_name} {waybill_no}) was delivered. Thank you!",
    },
    "ShipmentTrackingException": {
        "zh": "您的订单 {order_no}（运单号 {waybill_no}）物流异常：{reason_text}，我们正在处理。",
        "en": (
            "Your order {order_no} (waybill {waybill_no}) has a delivery problem: "
            "{reason_text}. We are on it."
        ),
    },
    "AftersaleApproved": {
        "zh": "您的订单 {order_no} 的售后申请 {case_no} 已同意，我们会尽快处理。",
        "en": "Your after-sales request {case_no} for order {order_no} is approved.",
    },
    "AftersaleRejected": {
        "zh": "您的订单 {order_no} 的售后申请 {case_no} 未通过，如有疑问请联系客服。",
        "en": "Your after-sales request {case_no} for order {order_no} was declined.",
    },
    "AftersaleReturned": {
        "zh": "您为订单 {order_no} 寄回的商品已收到（售后单 {case_no}），我们将尽快检验。",
        "en": "We received the goods you returned for order {order_no} (case {case_no}).",
    },
    "AftersaleRefundConfirmed": {
        "zh": "您的订单 {order_no} 已退款 {amount}，请留意原支付账户。",
        "en": "Your order {order_no} was refunded {amount} to the original payment account.",
    },
    TEST_EVENT: {
        "zh": "ordertally 测试短信（{time}）。",
        "en": "ordertally test SMS ({time}).",
    },
}

# The variables sent as TemplateParam; the approved templates must use these names.
SMS_PARAMS: dict[str, tuple[str, ...]] = {
    "OrderPaid": ("order_no",),
    "ShipmentShipped": ("order_no", "carrier_name", "waybill_no", "tracking_url"),
    "ShipmentDelivered": ("order_no", "carrier_name", "waybill_no"),
    "ShipmentTrackingException": ("order_no", "waybill_no", "reason_text"),
    TEST_EVENT: ("time",),
    "AftersaleApproved": ("order_no", "case_no"),
    "AftersaleRejected": ("order_no", "case_no"),
    "AftersaleReturned": ("order_no", "case_no"),
    "AftersaleRefundConfirmed": ("order_no", "amount"),
}

CARRIERS: dict[str, dict[str, str]] = {
    "shunfeng": {"zh": "顺丰速运", "en": "SF Express"},
    "sf": {"zh": "顺丰速运", "en": "SF Express"},
    "jd": {"zh": "京东物流", "en": "JD Logistics"},
    "ems": {"zh": "EMS", "en": "EMS"},
    "youzhengguonei": {"zh": "邮政快递包裹", "en": "China Post"},
    "yuantong": {"zh": "圆通速递", "en": "YTO Express"},
    "zhongtong": {"zh": "中通快递", "en": "ZTO Express"},
    "shentong": {"zh": "申通快递", "en": "STO Express"},
    "yunda": {"zh": "韵达快递", "en": "Yunda Express"},
    "jtexpress": {"zh": "极兔速递", "en": "J&T Express"},
    "debangkuaidi": {"zh": "德邦快递", "en": "Deppon Express"},
    "sim": {"zh": "模拟快递", "en": "Simulated carrier"},
}

REASONS: dict[str, dict[str, str]] = {
    "tracking_stale": {"zh": "长时间无物流更新", "en": "no tracking news for too long"},
    "rejected": {"zh": "收件人拒签", "en": "refused by the recipient"},
    "returned": {"zh": "包裹退回", "en": "returned to sender"},
    "problem": {"zh": "疑难件", "en": "problem parcel"},
    "customs": {"zh": "清关异常", "en": "customs problem"},
    "carrier_exception": {"zh": "承运商异常", "en": "carrier exception"},
}


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str


def _local(value: Any, tz: str) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    local = clock.as_utc(moment).astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M} ({tz})"


def context(event_type: str, payload: dict[str, Any], lang: str, tz: str) -> dict[str, Any]:
    """The variables a template may use: the payload plus localised derived values."""
    values = dict(payload)
    when = payload.get(TIME_FIELD.get(event_type, "occurred_at"))
    values["time"] = _local(when, tz) if when else ""
    carrier = str(payload.get("carrier", ""))
    values["carrier_name"] = CARRIERS.get(carrier, {}).get(lang, carrier)
    reason = str(payload.get("reason", ""))
    values["reason_text"] = REASONS.get(reason, {}).get(lang, reason)
    values.setdefault("warehouse", "")
    values.setdefault("detail", "")
    if "amount_minor" in payload and "currency" in payload:
        values["amount"] = money.format_minor(
            int(payload["amount_minor"]), str(payload["currency"])
        )
        values["amount"] = f"{values['amount']} {payload['currency']}"
    return values


def render_ops(event_type: str, payload: dict[str, Any], lang: str, tz: str) -> Rendered:
    """Title and body for an operations channel."""
    title, body = OPS[event_type][lang]
    values = context(event_type, payload, lang, tz)
    return Rendered(title.format(**values), body.format(**values))


def render_sms(
    event_type: str, payload: dict[str, Any], lang: str, tz: str
) -> tuple[str, dict[str, str]]:
    """The local preview of a buyer SMS and its TemplateParam variables."""
    values = context(event_type, payload, lang, tz)
    params = {name: str(values[name]) for name in SMS_PARAMS[event_type]}
    return SMS[event_type][lang].format(**values), params


# Buyer messages a batch action sends: the SMS preview stored beside the gateway's template.
BUYER_NOTICES: dict[str, dict[str, str]] = {
    "BuyerDelayNotice": {
        "zh": "您的订单 {order_no} 预计延迟 {delay_days} 天发货，给您带来不便深表歉意。",
        "en": "Your order {order_no} will ship about {delay_days} days late; we are sorry.",
    },
}


def render_buyer_notice(event_type: str, params: dict[str, str], lang: str) -> str:
    """The preview of a buyer notice in a language (missing variables left empty)."""
    text = BUYER_NOTICES[event_type][lang if lang in ("zh", "en") else "zh"]
    return text.format_map(_Blank(params))


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
