"""Order timelines (analytics): one row per order with its stage times and the moment its
fulfilment could start; the rows behind the stage table, for CSV/XLSX."""

from __future__ import annotations

from ordertally.analytics.models import OrderTimeline as T
from ordertally.exports.templates.base import Template, money, register, text, times

TEMPLATE = register(
    Template(
        name="order_timelines",
        title_zh="订单时效",
        title_en="Order timelines",
        root=T,
        key=T.order_id,
        time=T.created_at,
        filters={"channel": T.channel, "warehouse": T.warehouse, "carrier": T.carrier},
        amount=(T.total_minor, T.currency),
        columns=(
            text("order_no", "订单号", "Order no.", T.order_no),
            text("channel", "渠道", "Channel", T.channel),
            text("business_date", "业务日期", "Business day", T.day_date),
            text("warehouse", "仓库", "Warehouse", T.warehouse),
            text("carrier", "承运方式", "Carrier", T.carrier),
            text("currency", "币种", "Currency", T.currency),
            money("total", "订单金额", "Total", T.total_minor, T.currency),
            *times("created_at", "下单时间", "Created", T.created_at),
            *times("paid_at", "支付时间", "Paid", T.paid_at),
            *times(
                "fulfillment_start_at", "可履约时间", "Fulfilment start", T.fulfillment_start_at
            ),
            *times("allocated_at", "分配时间", "Allocated", T.allocated_at),
            *times("picking_at", "拣货时间", "Picking", T.picking_at),
            *times("shipped_at", "发货时间", "Shipped", T.shipped_at),
            *times("ship_by_at", "平台最晚发货", "Ship-by deadline", T.ship_by_at),
            *times("delivered_at", "签收时间", "Delivered", T.delivered_at),
            *times("completed_at", "完成时间", "Completed", T.completed_at),
        ),
    )
)
