"""After-sales timelines (analytics): one row per 售后单 with the times of its stages, who was
held responsible, its units and the refunds confirmed for it; the rows behind the after-sales
stage table and KPIs, for CSV/XLSX (ADR 0040)."""

from __future__ import annotations

from ordertally.analytics.models import AftersaleTimeline as A
from ordertally.exports.templates.base import Template, money, register, text, times

TEMPLATE = register(
    Template(
        name="aftersale_timelines",
        title_zh="售后时效",
        title_en="After-sales timelines",
        root=A,
        key=A.case_no,
        time=A.requested_at,
        filters={
            "channel": A.channel,
            "type": A.type,
            "responsibility": A.responsibility,
            "currency": A.currency,
        },
        amount=(A.refunded_minor, A.currency),
        columns=(
            text("case_no", "售后单号", "Case no.", A.case_no),
            text("order_no", "订单号", "Order no.", A.order_no),
            text("channel", "渠道", "Channel", A.channel),
            text("type", "售后类型", "Type", A.type),
            text("responsibility", "责任方", "Responsibility", A.responsibility),
            text("business_date", "业务日期", "Business day", A.day_date),
            text("units", "件数", "Units", A.units),
            text("currency", "币种", "Currency", A.currency),
            money("refunded", "已退款", "Refunded", A.refunded_minor, A.currency),
            *times("requested_at", "申请时间", "Requested", A.requested_at),
            *times("decided_at", "审核时间", "Decided", A.decided_at),
            *times("approved_at", "同意时间", "Approved", A.approved_at),
            *times("rejected_at", "拒绝时间", "Rejected", A.rejected_at),
            *times("returned_at", "退货签收", "Returned", A.returned_at),
            *times("inspected_at", "质检时间", "Inspected", A.inspected_at),
            *times("refunded_at", "退款时间", "Refunded at", A.refunded_at),
            *times("resolved_at", "处理完成", "Resolved", A.resolved_at),
            *times("closed_at", "关闭时间", "Closed", A.closed_at),
        ),
    )
)
