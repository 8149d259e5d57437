"""Shipments: one row per parcel, its carrier, waybill and milestones."""

from __future__ import annotations

from ordertally.exports.templates.base import Template, local_date, register, text, times
from ordertally.fulfillment.models import Shipment as S
from ordertally.orders.models import SalesOrder as O

TEMPLATE = register(
    Template(
        name="shipments",
        title_zh="发货",
        title_en="Shipments",
        root=S,
        joins=((O, O.id == S.order_id),),
        key=S.id,
        time=S.created_at,
        filters={
            "channel": O.channel,
            "status": S.status,
            "warehouse": S.warehouse_code,
            "company": S.company,
        },
        columns=(
            text("order_no", "订单号", "Order no.", S.order_no),
            text("channel", "渠道", "Channel", O.channel),
            text("warehouse", "仓库", "Warehouse", S.warehouse_code),
            text("seq", "包裹序号", "Parcel", S.seq),
            text("status", "状态", "Status", S.status),
            text("carrier", "承运方式", "Carrier", S.carrier),
            text("company", "快递公司", "Company", S.company),
            text("waybill_no", "运单号", "Waybill no.", S.waybill_no),
            text("tracking_state", "物流状态码", "Tracking state", S.tracking_state_code),
            local_date("business_date", "业务日期", "Business day", S.created_at),
            *times("created_at", "创建时间", "Created", S.created_at),
            *times("shipped_at", "发货时间", "Shipped", S.shipped_at),
            *times("delivered_at", "签收时间", "Delivered", S.delivered_at),
        ),
    )
)
