"""After-sales cases: one row per 售后单, its refund split into goods, postage and other, with
its type, state, responsibility and where the goods are."""

from __future__ import annotations

from ordertally.aftersales.models import AftersaleCase as A
from ordertally.exports.templates.base import (
    Template,
    json_text,
    local_date,
    money,
    register,
    text,
    times,
)

TOTAL = A.refund_goods_minor + A.refund_postage_minor + A.refund_other_minor

TEMPLATE = register(
    Template(
        name="aftersale_cases",
        title_zh="售后单",
        title_en="After-sales cases",
        root=A,
        key=A.id,
        time=A.created_at,
        filters={
            "channel": A.channel,
            "type": A.type,
            "status": A.status,
            "responsibility": A.responsibility,
            "currency": A.currency,
        },
        amount=(TOTAL, A.currency),
        columns=(
            text("case_no", "售后单号", "Case no.", A.case_no),
            text("order_no", "订单号", "Order no.", A.order_no),
            text("channel", "渠道", "Channel", A.channel),
            text("platform_refund_id", "平台退款单号", "Platform refund id", A.platform_refund_id),
            text("type", "售后类型", "Type", A.type),
            text("status", "状态", "Status", A.status),
            text("reason_code", "原因", "Reason", A.reason_code),
            text("responsibility", "责任方", "Responsibility", A.responsibility),
            text("goods_status", "货物状态", "Goods status", A.goods_status),
            text("currency", "币种", "Currency", A.currency),
            money("refund_goods", "商品退款", "Goods refund", A.refund_goods_minor, A.currency),
            money(
                "refund_postage", "运费退款", "Postage refund", A.refund_postage_minor, A.currency
            ),
            money("refund_other", "其他退款", "Other refund", A.refund_other_minor, A.currency),
            money("refund_total", "退款合计", "Refund total", TOTAL, A.currency),
            json_text("evidence", "凭证", "Evidence", A.evidence),
            text("return_waybill_no", "退货运单号", "Return waybill", A.return_waybill_no),
            text("created_by", "创建人", "Created by", A.created_by),
            local_date("business_date", "业务日期", "Business day", A.created_at),
            *times("created_at", "申请时间", "Requested", A.created_at),
            *times("updated_at", "更新时间", "Updated", A.updated_at),
        ),
    )
)
