"""The one registry of exception case types: each type's side (customer / system / supply
chain), severity and default policy. Every producer's type is listed here; a new producer calls
`register_type(...)` at import time. A type nobody registered still opens (the callers that
predate the registry keep working) and gets `FALLBACK`'s policy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ordertally.exceptions.models import SEVERITIES, SIDES


@dataclass(frozen=True, slots=True)
class CaseType:
    """A type's registry entry, which is also its default policy (a stored policy wins)."""

    type: str
    side: str
    severity: str = "normal"
    owner_role: str = "ops"
    sla_minutes: int = 24 * 60
    # An SLA warning fires this long before the due time.
    warn_minutes: int = 60
    # Role handed to -> evidence keys the hand-off must carry.
    evidence: dict[str, list[str]] = field(default_factory=dict)
    escalate_to: str | None = None
    escalate_after_minutes: int | None = None
    notify_on_open: bool = False
    channels: tuple[str, ...] = ("ops",)
    label_zh: str = ""
    label_en: str = ""


TYPES: dict[str, CaseType] = {}
FALLBACK = CaseType("unregistered", "system", label_zh="未登记类型", label_en="Unregistered type")
_REFUND = {"finance": ["refund_approval"], "warehouse": ["return_receipt"]}


def register_type(entry: CaseType) -> CaseType:
    """Add (or replace) a type; its side and severity must be known ones."""
    if entry.side not in SIDES:
        raise ValueError(f"case type {entry.type}: side must be one of {SIDES}")
    if entry.severity not in SEVERITIES:
        raise ValueError(f"case type {entry.type}: severity must be one of {SEVERITIES}")
    TYPES[entry.type] = entry
    return entry


def _family(case_type: str) -> str | None:
    """The `prefix.*` entry a dotted type belongs to (customer risk flags, rule holds), if any."""
    prefix, dot, _ = case_type.partition(".")
    family = f"{prefix}.*"
    return family if dot and family in TYPES else None


def is_registered(case_type: str) -> bool:
    """Whether a type is in the registry (`customer.<flag>` and `rule.<pool>` by family)."""
    return case_type in TYPES or _family(case_type) is not None


def lookup(case_type: str) -> CaseType:
    """The registry entry of a type (a family's members share one), or the fallback."""
    if case_type in TYPES:
        return TYPES[case_type]
    family = _family(case_type)
    if family is not None:
        return replace(TYPES[family], type=case_type)
    return replace(FALLBACK, type=case_type)


def _builtin() -> None:
    """Each existing producer's types (grep `open_case(` across src/)."""
    C, S, P = "customer", "system", "supply_chain"
    # fmt: off
    rows = [
        # payments/apply.py: finance must learn of money it must return or explain.
        CaseType("double_payment", C, "high", "finance", 4 * 60, 60, _REFUND, "admin", 8 * 60,
                 True, ("ops",), "重复支付", "Double payment"),
        CaseType("amount_mismatch", S, "high", "finance", 4 * 60, 60, {}, "admin", 8 * 60,
                 True, ("ops",), "金额不符", "Amount mismatch"),
        CaseType("unknown_trade", S, "high", "finance", 8 * 60, 60, {}, "admin", 24 * 60,
                 True, ("ops",), "未知交易", "Unknown trade"),
        CaseType("paid_after_close", C, "high", "finance", 4 * 60, 60, _REFUND, "admin", 8 * 60,
                 True, ("ops",), "关单后支付", "Paid after close"),
        CaseType("refund_abnormal", S, "high", "finance", 8 * 60, 60, {}, "admin", None,
                 True, ("ops",), "退款异常", "Abnormal refund"),
        CaseType("refund_exceeds_paid", S, "critical", "finance", 2 * 60, 30, {}, "admin",
                 4 * 60, True, ("ops",), "退款超过实付", "Refund exceeds paid"),
        CaseType("refund_after_fulfilment", C, "high", "cs", 8 * 60, 60, _REFUND, "ops", None,
                 True, ("ops",), "发货后退款", "Refund after fulfilment"),
        # orders/creation.py, orders/transitions.py
        CaseType("suspected_duplicate", S, "normal", "cs", 2 * 60, 30, {}, "ops", 4 * 60,
                 False, ("ops",), "疑似重复订单", "Suspected duplicate"),
        CaseType("stock_shortage", P, "high", "ops", 24 * 60, 120, {"warehouse": []}, "admin",
                 48 * 60, True, ("ops", "sms"), "缺货", "Stock shortage"),
        # channels/ingest.py, channels/sync.py, channels/callbacks.py
        CaseType("sku_unmapped", S, "high", "ops", 4 * 60, 60, {}, "admin", 8 * 60,
                 True, ("ops",), "商品未映射", "SKU unmapped"),
        CaseType("channel_empty_streak", S, "high", "ops", 60, 15, {}, "admin", 2 * 60,
                 True, ("ops",), "渠道连续空拉取", "Empty channel pulls"),
        CaseType("address_not_decrypted", S, "high", "ops", 2 * 60, 30, {}, "admin", 4 * 60,
                 True, ("ops",), "收件人未解密", "Recipient not decrypted"),
        CaseType("order_not_created", S, "high", "ops", 2 * 60, 30, {}, "admin", 4 * 60,
                 True, ("ops",), "订单未建立", "Order not created"),
        CaseType("shipped_on_platform", S, "high", "warehouse", 2 * 60, 30, {}, "ops", 4 * 60,
                 True, ("ops",), "平台已发货", "Shipped on platform"),
        CaseType("platform_refunded", C, "high", "cs", 2 * 60, 30, _REFUND, "ops", 4 * 60,
                 True, ("ops",), "平台已退款", "Refunded on platform"),
        CaseType("platform_cancelled", C, "high", "cs", 2 * 60, 30, {}, "ops", 4 * 60,
                 True, ("ops",), "平台已取消", "Cancelled on platform"),
        CaseType("platform_change_refused", C, "normal", "cs", 4 * 60, 60, {}, None, None,
                 False, ("ops",), "平台变更被拒", "Platform change refused"),
        CaseType("address_changed", C, "normal", "cs", 2 * 60, 30, {"warehouse": []}, None,
                 None, False, ("ops",), "地址变更", "Address changed"),
        CaseType("paid_on_platform", C, "normal", "cs", 4 * 60, 60, {}, None, None,
                 False, ("ops",), "平台已支付", "Paid on platform"),
        # fulfillment/tracking_updates.py, fulfillment/carrier_loop.py
        CaseType("tracking_stale", P, "normal", "warehouse", 24 * 60, 120, {}, "ops", 48 * 60,
                 False, ("ops",), "物流停滞", "Stale tracking"),
        CaseType("tracking_exception", P, "high", "cs", 8 * 60, 60, {}, "ops", 24 * 60,
                 True, ("ops", "sms"), "物流异常", "Tracking exception"),
        CaseType("waybill_rejected", P, "high", "warehouse", 2 * 60, 30, {}, "ops", 4 * 60,
                 True, ("ops",), "面单被拒", "Waybill rejected"),
        CaseType("waybill_failing", P, "normal", "warehouse", 4 * 60, 60, {}, "ops", None,
                 False, ("ops",), "面单获取失败", "Waybill failing"),
        # customers/service.py: every risk flag is `customer.<kind>`.
        CaseType("customer.*", C, "normal", "cs", 4 * 60, 60, {}, "ops", 8 * 60,
                 False, ("ops",), "客户风险", "Customer risk"),
        # Opened by people and batch actions from the workbench.
        CaseType("delivery_delay", P, "normal", "cs", 24 * 60, 120, {}, "ops", None,
                 False, ("ops",), "延迟发货", "Delivery delay"),
        CaseType("address_change_request", C, "normal", "cs", 2 * 60, 30, {"warehouse": []},
                 "ops", 2 * 60, False, ("ops",), "改地址申请", "Address change request"),
        CaseType("manual_hold", C, "normal", "cs", 24 * 60, 120, {}, None, None,
                 False, ("ops",), "人工暂停", "Manual hold"),
        # rules/actions.py: a rule's hold or flag is `rule.<pool>` / `rule.<flag>`;
        # orders/review.py: an order the auto-review did not pass.
        CaseType("rule.*", C, "normal", "cs", 4 * 60, 60, {}, "ops", 8 * 60,
                 False, ("ops",), "规则命中", "Rule hit"),
        CaseType("order_review", C, "normal", "cs", 2 * 60, 30, {}, "ops", 4 * 60,
                 False, ("ops",), "待审核", "Awaiting review"),
        CaseType("order_review_finance", C, "normal", "finance", 4 * 60, 60, {}, "admin",
                 8 * 60, False, ("ops",), "待财审", "Awaiting finance review"),
        CaseType("order_review_hold", C, "normal", "cs", 24 * 60, 60, {}, "ops", 48 * 60,
                 False, ("ops",), "审单挂起", "Held in review"),
        # aftersales/lifecycle.py (EXCEPTION_CASE_TYPES): a step past its SLA, a refund that
        # failed at the provider.
        CaseType("aftersale_sla", C, "normal", "cs", 4 * 60, 60, _REFUND, "ops", 8 * 60,
                 True, ("ops",), "售后超时", "After-sales step late"),
        CaseType("aftersale_refund_failed", S, "high", "finance", 2 * 60, 30, {}, "admin",
                 4 * 60, True, ("ops",), "售后退款失败", "After-sales refund failed"),
    ]
    # fmt: on
    for row in rows:
        register_type(row)


_builtin()
