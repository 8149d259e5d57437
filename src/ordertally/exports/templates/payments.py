"""Payments: one row per payment attempt, collected and refunded amounts."""

from __future__ import annotations

from ordertally.exports.templates.base import (
    Template,
    flag,
    local_date,
    money,
    register,
    text,
    times,
)
from ordertally.orders.models import SalesOrder as O
from ordertally.payments.models import Payment as P

TEMPLATE = register(
    Template(
        name="payments",
        title_zh="支付",
        title_en="Payments",
        root=P,
        joins=((O, O.id == P.order_id),),
        key=P.id,
        time=P.created_at,
        filters={
            "channel": O.channel,
            "provider": P.provider,
            "state": P.state,
            "currency": P.currency,
        },
        amount=(P.paid_amount_minor, P.currency),
        columns=(
            text("out_trade_no", "商户单号", "Out trade no.", P.out_trade_no),
            text("order_no", "订单号", "Order no.", P.order_no),
            text("channel", "渠道", "Channel", O.channel),
            text("provider", "支付方式", "Provider", P.provider),
            text("provider_txn_id", "支付流水号", "Provider txn id", P.provider_txn_id),
            text("state", "状态", "State", P.state),
            flag("settles_order", "结算订单", "Settles order", P.settles_order),
            text("currency", "币种", "Currency", P.currency),
            money("amount", "应付金额", "Amount", P.amount_minor, P.currency),
            money("paid_amount", "实付金额", "Paid", P.paid_amount_minor, P.currency),
            money("refunded", "已退款", "Refunded", P.refunded_minor, P.currency),
            local_date("business_date", "业务日期", "Business day", P.created_at),
            *times("created_at", "创建时间", "Created", P.created_at),
            *times("paid_at", "支付时间", "Paid at", P.paid_at),
        ),
    )
)
