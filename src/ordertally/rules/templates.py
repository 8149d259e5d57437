"""The built-in rule templates: the checks the seeds ask for, as ordinary rules a merchant can
edit, disable or copy. `install_templates` (service) saves the missing ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ordertally.core.settings import Settings, get_settings
from ordertally.notify import targets


@dataclass(frozen=True, slots=True)
class Template:
    code: str
    name: str
    trigger: str
    condition: str
    actions: tuple[dict[str, Any], ...]
    enabled: bool  # on when installed by default
    wecom_alert: bool = False  # add a notify action to the first WeCom target, when there is one
    # Saved by the rules consumer itself when absent (the customer flags were always on before
    # they became rules); the others wait for `install_templates`.
    seeded: bool = False


TEMPLATES: tuple[Template, ...] = (
    Template(
        "builtin.amount_over_5x_average",
        "金额超过客户均单价 5 倍，暂停发货待确认 / amount over 5x the buyer's average: hold",
        "order.created",
        "customer.known && customer.orders_90d > 1"
        " && order.total_minor > 5 * customer.aov_90d_minor",
        ({"kind": "hold", "pool": "amount_confirm", "reason": "amount > 5x the buyer's average"},),
        True,
    ),
    Template(
        "builtin.returns_over_3_in_30d",
        "30 天内退货超过 3 次，进入高风险审核 / more than 3 returns in 30 days: high-risk review",
        "order.created",
        "customer.returns_30d > 3",
        ({"kind": "hold", "pool": "high_risk", "reason": "more than 3 returns in 30 days"},),
        True,
    ),
    Template(
        "builtin.stock_below_safety_no_plan",
        "库存低于安全库存且 7 天内无采购计划，红色预警 / below safety stock, no receipt in 7 days",
        "schedule.stock",
        "stock.safety_stock > 0 && stock.on_hand - stock.reserved < stock.safety_stock"
        " && stock.planned_7d == 0",
        ({"kind": "flag", "flag": "stock_red_alert", "reason": "below safety stock, no plan"},),
        True,
        wecom_alert=True,
    ),
    Template(
        # Was the hard-coded `discount_over_limit` flag of customers/ (ADR 0034 addendum).
        "builtin.discount_over_80",
        "折扣超过 80%，可疑订单审核 / discount over 80%: review",
        "order.created",
        "order.subtotal_minor > 0 && order.discount_minor * 10000 > 8000 * order.subtotal_minor",
        (
            {
                "kind": "customer_flag",
                "flag": "discount_over_limit",
                "reason": "discount over 80%",
                "blocking": False,
            },
        ),
        True,
        seeded=True,
    ),
    Template(
        # Was the hard-coded `same_sku_burst` flag of customers/ (ADR 0034 addendum).
        "builtin.same_item_burst",
        "同一买家 5 分钟内同款下单超过 3 次，疑似刷单暂停 / same item > 3 times in 5 min: pause",
        "order.created",
        "customer.max_same_sku_orders_5m > 3",
        (
            {
                "kind": "customer_flag",
                "flag": "same_sku_burst",
                "reason": "suspected brushing",
                "blocking": False,
            },
        ),
        True,
        seeded=True,
    ),
    Template(
        "builtin.empty_channel_pulls",
        "店铺连续 5 次拉单为空，企业微信告警 / 5 empty channel pulls in a row: WeCom alert",
        "schedule.channel",
        "channel.active && channel.empty_pulls >= 5 && channel.orders_seen > 0",
        ({"kind": "flag", "flag": "channel_empty_pulls", "reason": "5 empty pulls in a row"},),
        True,
        wecom_alert=True,
    ),
)
BY_CODE: dict[str, Template] = {t.code: t for t in TEMPLATES}
SEEDED: tuple[Template, ...] = tuple(t for t in TEMPLATES if t.seeded)


def condition_of(template: Template, settings: Settings | None = None) -> str:
    """A template's condition, with the thresholds the flag settings held before the flags
    became rules (`customers_discount_flag_ratio`, `customers_burst_max_orders`)."""
    settings = settings or get_settings()
    if template.code == "builtin.discount_over_80":
        basis_points = round(settings.customers_discount_flag_ratio * 10000)
        return template.condition.replace("8000 *", f"{basis_points} *")
    if template.code == "builtin.same_item_burst":
        return template.condition.replace("> 3", f"> {settings.customers_burst_max_orders}")
    return template.condition


def actions_of(template: Template, settings: Settings | None = None) -> list[dict[str, Any]]:
    """A template's actions, with the WeCom alert when a WeCom target is configured (and a
    customer flag holding the order when `customers_flags_blocking` says so)."""
    settings = settings or get_settings()
    actions = [dict(a) for a in template.actions]
    for action in actions:
        if action["kind"] == "customer_flag":
            action["blocking"] = settings.customers_flags_blocking
    if template.wecom_alert:
        wecom = [t for t in targets.ops_targets(settings) if t.kind == "wecombot"]
        if wecom:
            actions.append({"kind": "notify", "target": wecom[0].key, "message": template.name})
    return actions
