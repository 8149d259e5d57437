"""Order lines: one row per line, with its order's number, channel, currency and day."""

from __future__ import annotations

from ordertally.exports.templates.base import Template, local_date, money, register, text, times
from ordertally.orders.models import OrderLine as L
from ordertally.orders.models import SalesOrder as O

TEMPLATE = register(
    Template(
        name="order_lines",
        title_zh="订单明细",
        title_en="Order lines",
        root=L,
        joins=((O, O.id == L.order_id),),
        key=L.id,
        time=O.created_at,
        filters={"channel": O.channel, "status": O.status, "currency": O.currency, "sku": L.sku},
        amount=(L.total_minor, O.currency),
        columns=(
            text("order_no", "订单号", "Order no.", O.order_no),
            text("line_no", "行号", "Line", L.line_no),
            text("channel", "渠道", "Channel", O.channel),
            text("status", "订单状态", "Order status", O.status),
            local_date("business_date", "业务日期", "Business day", O.created_at),
            *times("created_at", "下单时间", "Created", O.created_at),
            text("sku", "SKU", "SKU", L.sku),
            text("sku_name", "商品名称", "Item", L.sku_name),
            text("sku_spec", "规格", "Spec", L.sku_spec),
            text("sku_barcode", "条码", "Barcode", L.sku_barcode),
            text("quantity", "数量", "Quantity", L.quantity),
            text("currency", "币种", "Currency", O.currency),
            money("unit_price", "单价", "Unit price", L.unit_price_minor, O.currency),
            money("discount", "优惠", "Discount", L.discount_minor, O.currency),
            money("total", "行金额", "Line total", L.total_minor, O.currency),
            text("fx_rate", "锁定汇率", "Locked FX rate", O.fx_rate),
        ),
    )
)
