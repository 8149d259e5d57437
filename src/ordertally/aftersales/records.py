"""Douyin (抖店), JD (京东 POP) and Taobao (淘宝/天猫 TOP) after-sale records: their list APIs'
answers read (the envelope each platform wraps a page in) and each record mapped to a
`platforms.PlatformRecord` through its platform's status table, kept here as data.

A record's status says what it is for us, its *stage*:
- `open`: the platform (or the merchant on it) agreed and nothing was refunded yet (a return
  waiting for its goods, an approved refund not paid out): a case opened and approved, no refund;
- `refunded`: the money moved: a case opened with the platform's refund recorded, or, when the
  refund id is a case already, that refund recorded on it (the case moves once);
- `closed`: the buyer withdrew or the after-sale failed: a case it opened earlier is closed
  when the case table allows it, else nothing;
- `None`: nothing to act on yet (waiting for the merchant, refused by the merchant): not stored,
  read again on a later pull.

Each stage of a refund id is stored once in the after-sales inbox (key `<refund id>:<stage>`), so
a page read twice changes nothing and a status advanced is applied exactly once. Where the field
names, units and enums come from: tests/aftersales/fixtures/SOURCES.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ordertally.aftersales.errors import ReportRefused
from ordertally.aftersales.state_machine import CaseType
from ordertally.channels.adapters import aftersale_lists as lists
from ordertally.core import money

OPEN, REFUNDED, CLOSED = "open", "refunded", "closed"
# Later stages of one refund id are applied after earlier ones.
STAGE_ORDER = {OPEN: 0, REFUNDED: 1, CLOSED: 2}

# --- Taobao: taobao.refunds.receive.get (查询卖家收到的退款列表) -------------------------------

TAOBAO_API = lists.TAOBAO_API
TAOBAO_RESPONSE = lists.TAOBAO_RESPONSE
# Refund.status: WAIT_SELLER_AGREE 买家已经申请退款，等待卖家同意; WAIT_BUYER_RETURN_GOODS 卖家已经
# 同意退款，等待买家退货; WAIT_SELLER_CONFIRM_GOODS 买家已经退货，等待卖家确认收货;
# SELLER_REFUSE_BUYER 卖家拒绝退款; CLOSED 退款关闭; SUCCESS 退款成功.
TAOBAO_STAGES: dict[str, str | None] = {
    "WAIT_SELLER_AGREE": None,
    "WAIT_BUYER_RETURN_GOODS": OPEN,
    "WAIT_SELLER_CONFIRM_GOODS": OPEN,
    "SELLER_REFUSE_BUYER": None,
    "CLOSED": CLOSED,
    "SUCCESS": REFUNDED,
}

# --- JD: jingdong.pop.afs.soa.refundapply.queryPageList (退款审核单列表查询) -----------------

JD_API = lists.JD_API
JD_RESPONSE = lists.JD_RESPONSE
# status (退款申请单状态): 0 未审核, 1 审核通过, 2 审核不通过, 3 京东财务审核通过,
# 4 京东财务审核不通过, 5 人工审核通过, 6 拦截并退款, 7 青龙拦截成功, 8 青龙拦截失败,
# 9 强制关单并退款, 10 物流待跟进, 11 用户撤销.
JD_STAGES: dict[int, str | None] = {
    0: None,
    1: OPEN,
    2: None,
    3: REFUNDED,
    4: None,
    5: OPEN,
    6: REFUNDED,
    7: OPEN,
    8: None,
    9: REFUNDED,
    10: OPEN,
    11: CLOSED,
}

# --- Douyin: afterSale/List (售后列表) ---------------------------------------------------------

DOUYIN_API = lists.DOUYIN_API
# aftersale_info.aftersale_type: 0 退货退款, 1 已发货仅退款, 2 未发货仅退款, 3 换货, 6 价保, 7 补寄.
DOUYIN_TYPES: dict[int, CaseType] = {
    0: CaseType.RETURN_REFUND,
    1: CaseType.REFUND_ONLY,
    2: CaseType.REFUND_ONLY,
    3: CaseType.EXCHANGE,
    6: CaseType.REFUND_ONLY,
    7: CaseType.RESHIP,
}
# aftersale_info.aftersale_status: 3 换货待买家收货, 6 待商家同意, 7 待买家退货, 8 待商家发货,
# 11 待商家二次同意, 12 售后成功, 14 换货成功, 27 商家一次拒绝, 28 售后失败, 29 商家二次拒绝.
DOUYIN_STAGES: dict[int, str | None] = {
    3: OPEN,
    6: None,
    7: OPEN,
    8: OPEN,
    11: OPEN,
    12: REFUNDED,
    14: OPEN,
    27: None,
    28: CLOSED,
    29: None,
}

SOURCES = (TAOBAO_API, JD_API, DOUYIN_API)
SOURCE_OF = {"taobao": TAOBAO_API, "jd": JD_API, "douyin": DOUYIN_API}


@dataclass(frozen=True, slots=True)
class Page:
    """One list answer read: its records, the total the platform counts, whether more follow."""

    items: list[dict[str, Any]]
    total: int
    has_more: bool


def _refused(source: str, why: str) -> ReportRefused:
    return ReportRefused(f"not a {source} answer: {why}", source=source)


def _dict(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refused(source, f"no object {where}")
    return value


def _list(value: Any, source: str, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise _refused(source, f"{where} is not a list of records")
    return value


def read_taobao(doc: Any) -> Page:
    """`{"refunds_receive_get_response": {"refunds": {"refund": [...]}, "total_results": N,
    "has_next": bool}}`; an `error_response` (or anything else) is refused."""
    top = _dict(doc, TAOBAO_API, "at the top")
    body = _dict(top.get(TAOBAO_RESPONSE), TAOBAO_API, TAOBAO_RESPONSE)
    refunds = body.get("refunds") or {}
    items = _list(_dict(refunds, TAOBAO_API, "refunds").get("refund"), TAOBAO_API, "refunds.refund")
    total = int(body.get("total_results") or 0)
    return Page(items, total, bool(body.get("has_next")))


def read_jd(doc: Any) -> Page:
    """`{"jingdong_pop_afs_soa_refundapply_queryPageList_responce": {"code": "0", "queryResult":
    {"success": true, "result": [...], "totalCount": N}}}`; a code other than "0", a result not
    successful or an `error_response` is refused."""
    body = _dict(_dict(doc, JD_API, "at the top").get(JD_RESPONSE), JD_API, JD_RESPONSE)
    if str(body.get("code", "0")) != "0":
        raise _refused(JD_API, f"code {body.get('code')}")
    result = _dict(body.get("queryResult"), JD_API, "queryResult")
    if result.get("success") is False:
        raise _refused(JD_API, "queryResult.success is false")
    items = _list(result.get("result"), JD_API, "queryResult.result")
    return Page(items, int(result.get("totalCount") or 0), False)


def read_douyin(doc: Any) -> Page:
    """`{"code": 10000, "msg": "success", "data": {"items": [...], "has_more": bool, "total": N,
    ...}}`: the open platform's envelope (code 10000 is success); a wrapper that answers the same
    `data` under `"isSuccess": true` is read too."""
    top = _dict(doc, DOUYIN_API, "at the top")
    if "code" in top and int(top.get("code") or 0) != 10000:
        why = top.get("sub_msg") or top.get("msg")
        raise _refused(DOUYIN_API, f"code {top.get('code')}: {why}")
    if "isSuccess" in top and top["isSuccess"] is not True:
        raise _refused(DOUYIN_API, "isSuccess is not true")
    data = _dict(top.get("data"), DOUYIN_API, "data")
    items = _list(data.get("items"), DOUYIN_API, "data.items")
    return Page(items, int(data.get("total") or 0), bool(data.get("has_more")))


READERS: dict[str, Callable[[Any], Page]] = {
    TAOBAO_API: read_taobao,
    JD_API: read_jd,
    DOUYIN_API: read_douyin,
}


def _yuan(value: Any) -> int:
    """A yuan amount (Taobao's strings, "200.07") in fen."""
    return money.to_minor(Decimal(str(value)), "CNY")


def _fen(value: Any) -> int:
    """An amount already in fen (Douyin's integers, JD's applyRefundSum): a fraction is
    refused, not rounded."""
    amount = Decimal(str(value))
    if amount != amount.to_integral_value():
        raise ValueError(f"an amount in fen with a fraction: {value!r}")
    return int(amount)


def key_of(source: str, item: dict[str, Any]) -> tuple[str, str | None]:
    """A record's refund id and stage, read before it is stored (ValueError: it has neither an
    id nor a status its platform's table knows)."""
    if source == TAOBAO_API:
        pid, status = item.get("refund_id"), item.get("status")
        if str(status) not in TAOBAO_STAGES:
            raise ValueError(f"unknown Taobao refund status {status!r}")
        stage = TAOBAO_STAGES[str(status)]
    elif source == JD_API:
        pid, status = item.get("id"), item.get("status")
        try:
            code = int(str(status))
        except ValueError:
            raise ValueError(f"unknown JD refund application status {status!r}") from None
        if code not in JD_STAGES:
            raise ValueError(f"unknown JD refund application status {status!r}")
        stage = JD_STAGES[code]
    else:
        found = item.get("aftersale_info")
        info: dict[str, Any] = found if isinstance(found, dict) else {}
        pid, status = info.get("aftersale_id"), info.get("aftersale_status")
        if not isinstance(status, int) or status not in DOUYIN_STAGES:
            raise ValueError(f"unknown Douyin aftersale_status {status!r}")
        stage = DOUYIN_STAGES[status]
    if pid in (None, ""):
        raise ValueError("a record without its refund id")
    return str(pid)[:40], stage


@dataclass(frozen=True, slots=True)
class Mapped:
    """A record in our terms, before `platforms` makes it a PlatformRecord."""

    platform_refund_id: str
    external_order_id: str
    type: CaseType
    stage: str
    asked_minor: int  # what the case refunds (agreed or refunded)
    reason_code: str
    skus: dict[str, int]
    waybill: str | None = None


def map_taobao(item: dict[str, Any]) -> Mapped:
    """One Refund of taobao.refunds.receive.get: refund_fee is yuan (a string); a refund with
    goods coming back (has_good_return) is a return and refund of `num` units of its outer_id."""
    pid, stage = key_of(TAOBAO_API, item)
    if stage is None:
        raise ValueError(f"Taobao refund {pid} is {item.get('status')}: nothing to apply")
    returns = bool(item.get("has_good_return"))
    sku = str(item.get("outer_id") or "")
    units = int(item.get("num") or 1)
    return Mapped(
        platform_refund_id=pid,
        external_order_id=str(item["tid"]),
        type=CaseType.RETURN_REFUND if returns else CaseType.REFUND_ONLY,
        stage=stage,
        asked_minor=_yuan(item["refund_fee"]),
        reason_code="taobao:" + str(item.get("reason") or "refund")[:24],
        skus={sku: units} if returns and sku else {},
        waybill=str(item.get("sid") or "") or None,
    )


def map_jd(item: dict[str, Any]) -> Mapped:
    """One refund application of JD's refundapply.queryPageList: a refund of an order not shipped
    (or intercepted), applyRefundSum in fen (see SOURCES.md); no goods come back."""
    pid, stage = key_of(JD_API, item)
    if stage is None:
        raise ValueError(f"JD refund application {pid} is {item.get('status')}: nothing to apply")
    return Mapped(
        platform_refund_id=pid,
        external_order_id=str(item["orderId"]),
        type=CaseType.REFUND_ONLY,
        stage=stage,
        asked_minor=_fen(item["applyRefundSum"]),
        reason_code="jd:" + str(item.get("reason") or "refund")[:27],
        skus={},
    )


def map_douyin(item: dict[str, Any]) -> Mapped:
    """One item of Douyin's afterSale/List: refund_amount in fen; the units per shop SKU code of
    its related sku orders (aftersale_item_num) come back for a return or an exchange."""
    pid, stage = key_of(DOUYIN_API, item)
    info = item["aftersale_info"]
    if stage is None:
        status = info.get("aftersale_status")
        raise ValueError(f"Douyin after-sale {pid} is {status}: nothing to apply")
    kind = int(info["aftersale_type"])
    if kind not in DOUYIN_TYPES:
        raise ValueError(f"unknown Douyin aftersale_type {kind}")
    case_type = DOUYIN_TYPES[kind]
    order = item.get("order_info") or {}
    skus: dict[str, int] = {}
    for sku_order in order.get("related_order_info") or []:
        code = str(sku_order.get("shop_sku_code") or "")
        if code:
            n = int(sku_order.get("aftersale_item_num") or sku_order.get("item_num") or 1)
            skus[code] = skus.get(code, 0) + n
    return Mapped(
        platform_refund_id=pid,
        external_order_id=str(order.get("shop_order_id") or info["related_id"]),
        type=case_type,
        stage=stage,
        asked_minor=_fen(info.get("refund_amount") or 0),
        reason_code="douyin:" + str(info.get("reason") or "aftersale")[:23],
        skus=skus if case_type != CaseType.REFUND_ONLY else {},
        waybill=str(info.get("return_logistics_code") or "") or None,
    )


MAPPERS: dict[str, Callable[[dict[str, Any]], Mapped]] = {
    TAOBAO_API: map_taobao,
    JD_API: map_jd,
    DOUYIN_API: map_douyin,
}
