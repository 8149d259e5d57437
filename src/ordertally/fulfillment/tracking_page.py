"""The customer's tracking link: a signed token per order, the page it opens and its QR code.

The token is the order number and a 128-bit keyed MAC of it (the PII blind-index key with its
own purpose), so a link cannot be guessed from an order number and needs no table. The page
shows only masked personal data.
"""

from __future__ import annotations

import hmac
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

import segno
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.settings import get_settings
from ordertally.fulfillment.errors import TrackingLinkInvalid
from ordertally.orders.models import SalesOrder

_PURPOSE = "tracking-link-v1"
_MAC_CHARS = 32  # hex: 128 bits
LOCAL_TZ = ZoneInfo("Asia/Shanghai")


def token_for(order_no: str) -> str:
    """The signed token of an order's tracking link."""
    mac = get_cipher().blind_index(order_no, _PURPOSE)[:_MAC_CHARS]
    return f"{order_no}.{mac}"


def url_for(order_no: str) -> str:
    """The absolute tracking link of an order."""
    return f"{get_settings().public_base_url.rstrip('/')}/t/{token_for(order_no)}"


def order_part(order: SalesOrder) -> tuple[str, str]:
    """The "tracking_url" part of every order's JSON."""
    return "tracking_url", url_for(order.order_no)


def order_no_of(token: str) -> str:
    """The order number a token was made for; refuses any token we did not sign."""
    order_no, _, mac = token.rpartition(".")
    if not order_no or len(mac) != _MAC_CHARS:
        raise TrackingLinkInvalid("malformed tracking link")
    expected = get_cipher().blind_index(order_no, _PURPOSE)[:_MAC_CHARS]
    if not hmac.compare_digest(mac, expected):
        raise TrackingLinkInvalid("tracking link signature does not match")
    return order_no


def qr_png(url: str, scale: int = 6) -> bytes:
    """The link as a QR code PNG (error correction M, quiet zone included)."""
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(url: str, scale: int = 6) -> bytes:
    """The link as a QR code SVG."""
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="svg", scale=scale, border=4, xmldecl=False)
    return out.getvalue()


# --- the page ---------------------------------------------------------------------------------

LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "物流跟踪",
        "order": "订单号",
        "status": "订单状态",
        "recipient": "收件人",
        "items": "商品",
        "parcel": "包裹",
        "carrier": "快递公司",
        "waybill": "运单号",
        "no_waybill": "待发货",
        "no_events": "暂无物流信息",
        "qr": "扫码查看物流",
        "updated": "更新时间",
        "verifying": "状态核实中：您的付款正在与支付平台核对，请稍后刷新本页。",
    },
    "en": {
        "title": "Track your order",
        "order": "Order",
        "status": "Status",
        "recipient": "Recipient",
        "items": "Items",
        "parcel": "Parcel",
        "carrier": "Carrier",
        "waybill": "Waybill",
        "no_waybill": "Not shipped yet",
        "no_events": "No tracking information yet",
        "qr": "Scan to track",
        "updated": "Updated",
        "verifying": "Status being verified: your payment is being checked with the payment "
        "platform. Please refresh this page in a moment.",
    },
}

STATUS_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "pending_payment": "待付款",
        "paid": "已付款",
        "allocated": "待发货",
        "fulfilling": "备货中",
        "shipped": "已发货",
        "delivered": "已签收",
        "completed": "已完成",
        "closed": "已关闭",
        "refunded": "已退款",
        "planned": "待发货",
        "waybill_requested": "待发货",
        "ready": "待揽收",
        "in_transit": "运输中",
        "out_for_delivery": "派送中",
        "returned": "已退回",
        "exception": "异常",
    },
    "en": {
        "pending_payment": "Awaiting payment",
        "paid": "Paid",
        "allocated": "Awaiting shipment",
        "fulfilling": "Being prepared",
        "shipped": "Shipped",
        "delivered": "Delivered",
        "completed": "Completed",
        "closed": "Closed",
        "refunded": "Refunded",
        "planned": "Awaiting shipment",
        "waybill_requested": "Awaiting shipment",
        "ready": "Awaiting pickup",
        "in_transit": "In transit",
        "out_for_delivery": "Out for delivery",
        "returned": "Returned",
        "exception": "Problem",
    },
}

COMPANY_NAMES: dict[str, str] = {
    "shunfeng": "顺丰速运",
    "zhongtong": "中通快递",
    "yuantong": "圆通速递",
    "shentong": "申通快递",
    "yunda": "韵达快递",
    "jd": "京东物流",
    "ems": "EMS",
    "jtexpress": "极兔速递",
    "youzhengguonei": "邮政快递包裹",
}


@dataclass(frozen=True, slots=True)
class PageEvent:
    at: datetime
    description: str
    location: str
    status: str


@dataclass(frozen=True, slots=True)
class PageParcel:
    company: str
    waybill_no: str | None
    status: str
    items: list[tuple[str, int]]
    events: list[PageEvent]  # newest first


@dataclass(frozen=True, slots=True)
class PageData:
    order_no: str
    status: str
    recipient: str  # masked name
    place: str  # province city district
    parcels: list[PageParcel]
    url: str
    qr_path: str  # same-origin path of the QR image (the page's CSP allows only 'self')
    # code -> (Chinese name, English name) from the order lines' snapshot; codes without
    # one are shown as they are
    names: dict[str, tuple[str, str]] = field(default_factory=dict)
    # A payment is open and its notification has not arrived: "status is being verified".
    verifying: bool = False
    # What the merchant tells the buyer beside the status (海关查验中), set by batch actions.
    sub_status: str | None = None


# Checks that an unpaid order's payment is still being verified; registered by the domain that
# knows (payments, wired from above both: fulfillment may not import payments).
VerifyingCheck = Callable[[AsyncSession, int], Awaitable[bool]]
VERIFYING_CHECKS: list[VerifyingCheck] = []


def register_verifying_check(check: VerifyingCheck) -> None:
    """Ask `check(session, order_id)` whether an unpaid order's payment is being verified."""
    if check not in VERIFYING_CHECKS:
        VERIFYING_CHECKS.append(check)


async def verifying(session: AsyncSession, order_id: int) -> bool:
    """Whether any registered check says the order's payment is being verified."""
    for check in VERIFYING_CHECKS:
        if await check(session, order_id):
            return True
    return False


def pick_lang(query_lang: str | None, accept_language: str | None) -> str:
    """?lang= wins, then the browser's first preference; Chinese by default."""
    if query_lang in LABELS:
        return query_lang
    first = (accept_language or "").split(",")[0].strip().lower()
    return "en" if first.startswith("en") else "zh"


def _local(at: datetime) -> str:
    return clock.as_utc(at).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def render(page: PageData, lang: str) -> str:
    """The tracking page: one self-contained HTML document, readable on a phone."""
    t = LABELS[lang]
    words = STATUS_WORDS[lang]
    e = escape
    sub = f' <span class="badge">{e(page.sub_status)}</span>' if page.sub_status else ""
    parcels: list[str] = []
    for n, parcel in enumerate(page.parcels, start=1):
        company = (
            COMPANY_NAMES.get(parcel.company, parcel.company) if lang == "zh" else parcel.company
        )
        items = "、".join(
            f"{e(page.names[sku][0 if lang == 'zh' else 1] if sku in page.names else sku)} × {qty}"
            for sku, qty in parcel.items
        )
        if parcel.events:
            steps = "".join(
                f'<li class="{"now" if i == 0 else ""}"><time>{_local(ev.at)}</time>'
                f"<p>{e(ev.description)}</p>"
                + (f"<small>{e(ev.location)}</small>" if ev.location else "")
                + "</li>"
                for i, ev in enumerate(parcel.events)
            )
            timeline = f'<ol class="timeline">{steps}</ol>'
        else:
            timeline = f'<p class="muted">{t["no_events"]}</p>'
        waybill = e(parcel.waybill_no) if parcel.waybill_no else t["no_waybill"]
        parcels.append(
            f'<section class="card"><h2>{t["parcel"]} {n} · '
            f'<span class="badge">{e(words.get(parcel.status, parcel.status))}</span></h2>'
            f"<dl><dt>{t['carrier']}</dt><dd>{e(company)}</dd>"
            f'<dt>{t["waybill"]}</dt><dd class="mono">{waybill}</dd>'
            f"<dt>{t['items']}</dt><dd>{items}</dd></dl>{timeline}</section>"
        )
    html_lang = "zh-CN" if lang == "zh" else "en"
    verifying = f'<p class="hint" id="verifying">{t["verifying"]}</p>' if page.verifying else ""
    return f"""<!doctype html>
<html lang="{html_lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{t["title"]} · {e(page.order_no)}</title>
<style>
body{{margin:0;font:16px/1.5 -apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
background:#f4f5f7;color:#1f2328}}
main{{max-width:560px;margin:0 auto;padding:16px}}
h1{{font-size:1.3rem;margin:.2rem 0 1rem}} h2{{font-size:1.05rem;margin:0 0 .5rem}}
.card{{background:#fff;border-radius:12px;padding:14px 16px;margin-bottom:12px;
box-shadow:0 1px 2px rgba(0,0,0,.06)}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0 0 8px}}
dt{{color:#656d76}} dd{{margin:0;word-break:break-all}} .mono{{font-family:ui-monospace,monospace}}
.badge{{background:#ddf4ff;color:#0969da;border-radius:999px;padding:1px 8px;font-size:.85rem}}
.timeline{{list-style:none;margin:8px 0 0;padding:0 0 0 14px;border-left:2px solid #d0d7de}}
.timeline li{{position:relative;padding:0 0 12px 10px;color:#656d76}}
.timeline li:before{{content:"";position:absolute;left:-20px;top:7px;width:10px;height:10px;
border-radius:50%;background:#d0d7de}}
.timeline li.now{{color:#1f2328}} .timeline li.now:before{{background:#1a7f37}}
.timeline time{{font-size:.85rem}} .timeline p{{margin:0}} .muted{{color:#656d76}}
.hint{{background:#fff8c5;color:#7d4e00;border-radius:8px;padding:8px 10px;margin:8px 0 0}}
.qr{{text-align:center}} .qr img{{width:160px;height:160px}}
</style></head>
<body><main>
<h1>{t["title"]}</h1>
<section class="card"><dl>
<dt>{t["order"]}</dt><dd class="mono">{e(page.order_no)}</dd>
<dt>{t["status"]}</dt><dd>{e(words.get(page.status, page.status))}{sub}</dd>
<dt>{t["recipient"]}</dt><dd>{e(page.recipient)} · {e(page.place)}</dd>
</dl>{verifying}</section>
{"".join(parcels)}
<section class="card qr"><img src="{e(page.qr_path)}" alt="QR"><p class="muted">{t["qr"]}</p>
</section>
</main></body></html>
"""
