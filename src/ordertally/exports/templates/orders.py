"""Orders: one row per order, amounts in the order's currency and in the base currency at
the rate locked on the order."""

from __future__ import annotations

from ordertally.exports.templates.base import (
    Template,
    address,
    base_money,
    local_date,
    money,
    pii,
    register,
    text,
    times,
)
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE
from ordertally.orders.models import SalesOrder as O

TEMPLATE = register(
    Template(
        name="orders",
        title_zh="订单",
        title_en="Orders",
        root=O,
        key=O.id,
        time=O.created_at,
        filters={"channel": O.channel, "status": O.status, "currency": O.currency},
        amount=(O.total_minor, O.currency),
        columns=(
            text("order_no", "订单号", "Order no.", O.order_no),
            text("channel", "渠道", "Channel", O.channel),
            text("external_id", "平台单号", "Platform order id", O.external_id),
            text("status", "状态", "Status", O.status),
            local_date("business_date", "业务日期", "Business day", O.created_at),
            *times("created_at", "下单时间", "Created", O.created_at),
            text("currency", "币种", "Currency", O.currency),
            money("subtotal", "商品金额", "Subtotal", O.subtotal_minor, O.currency),
            money("discount", "优惠", "Discount", O.discount_minor, O.currency),
            money("shipping", "运费", "Shipping", O.shipping_minor, O.currency),
            money("tax", "税费", "Tax", O.tax_minor, O.currency),
            money("fee", "手续费", "Fee", O.fee_minor, O.currency),
            money("total", "订单金额", "Total", O.total_minor, O.currency),
            text("fx_rate", "锁定汇率", "Locked FX rate", O.fx_rate),
            text("base_currency", "本位币", "Base currency", O.base_currency),
            base_money(
                "base_total",
                "本位币金额",
                "Base total",
                O.base_total_minor,
                O.total_minor,
                O.currency,
                O.fx_rate,
                O.base_currency,
            ),
            pii(
                "customer_name",
                "买家",
                "Customer",
                O.customer_name_masked,
                O.customer_name_enc,
                PII_NAME,
            ),
            pii(
                "customer_phone",
                "买家电话",
                "Customer phone",
                O.customer_phone_masked,
                O.customer_phone_enc,
                PII_PHONE,
            ),
            address(
                "shipping_address",
                "收货地址",
                "Shipping address",
                (O.ship_province, O.ship_city, O.ship_district),
                O.shipping_address_enc,
                PII_ADDRESS,
            ),
            text("waybill_nos", "运单号", "Waybill nos.", O.waybill_nos),
            *times("updated_at", "更新时间", "Updated", O.updated_at),
        ),
    )
)
