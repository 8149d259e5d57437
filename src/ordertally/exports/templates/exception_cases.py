"""Exception cases: one row per case, with its order when it has one."""

from __future__ import annotations

from ordertally.exceptions.models import ExceptionCase as E
from ordertally.exports.templates.base import (
    Template,
    flag,
    json_text,
    local_date,
    register,
    text,
    times,
)
from ordertally.orders.models import SalesOrder as O

TEMPLATE = register(
    Template(
        name="exception_cases",
        title_zh="异常单",
        title_en="Exception cases",
        root=E,
        joins=((O, O.id == E.order_id),),
        key=E.id,
        time=E.created_at,
        filters={"category": E.category, "type": E.type, "status": E.status, "channel": O.channel},
        columns=(
            text("case_id", "异常编号", "Case id", E.id),
            text("order_no", "订单号", "Order no.", O.order_no),
            text("channel", "渠道", "Channel", O.channel),
            text("category", "类别", "Category", E.category),
            text("type", "类型", "Type", E.type),
            text("status", "状态", "Status", E.status),
            flag("blocking", "阻断", "Blocking", E.blocking),
            json_text("detail", "详情", "Detail", E.detail),
            local_date("business_date", "业务日期", "Business day", E.created_at),
            *times("created_at", "创建时间", "Created", E.created_at),
            *times("resolved_at", "处理时间", "Resolved", E.resolved_at),
            text("resolved_by", "处理人", "Resolved by", E.resolved_by),
            text("resolution", "处理结果", "Resolution", E.resolution),
        ),
    )
)
