"""Refunds: one row per refund of an after-sales case, sent to the payment provider or
recorded from the platform, with its state and when it was confirmed."""

from __future__ import annotations

from ordertally.aftersales.models import AftersaleCase as A
from ordertally.aftersales.models import AftersaleRefund as R
from ordertally.exports.templates.base import (
    Template,
    local_date,
    money,
    register,
    text,
    times,
)

TEMPLATE = register(
    Template(
        name="refunds",
        title_zh="退款",
        title_en="Refunds",
        root=R,
        joins=((A, A.id == R.case_id),),
        key=R.id,
        time=R.created_at,
        filters={
            "state": R.state,
            "source": R.source,
            "provider": R.provider,
            "currency": R.currency,
            "channel": A.channel,
        },
        amount=(R.amount_minor, R.currency),
        columns=(
            text("out_refund_no", "退款单号", "Refund no.", R.out_refund_no),
            text("case_no", "售后单号", "Case no.", A.case_no),
            text("order_no", "订单号", "Order no.", R.order_no),
            text("channel", "渠道", "Channel", A.channel),
            text("type", "售后类型", "Case type", A.type),
            text("source", "来源", "Source", R.source),
            text("provider", "退款渠道", "Provider", R.provider),
            text("provider_refund_id", "平台退款号", "Provider refund id", R.provider_refund_id),
            text("state", "状态", "State", R.state),
            text("currency", "币种", "Currency", R.currency),
            money("amount", "退款金额", "Amount", R.amount_minor, R.currency),
            local_date("business_date", "业务日期", "Business day", R.created_at),
            *times("created_at", "申请时间", "Requested", R.created_at),
            *times("confirmed_at", "确认时间", "Confirmed", R.confirmed_at),
        ),
    )
)
