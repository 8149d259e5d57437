"""Reconciliation results: one row per statement checked, with its counts per category."""

from __future__ import annotations

from ordertally.exports.templates.base import Template, json_text, local_date, register, text, times
from ordertally.payments.models import PaymentReconciliation as R

TEMPLATE = register(
    Template(
        name="reconciliations",
        title_zh="对账结果",
        title_en="Reconciliation results",
        root=R,
        key=R.id,
        time=R.started_at,
        filters={"provider": R.provider},
        columns=(
            text("reconciliation_id", "对账编号", "Reconciliation id", R.id),
            text("provider", "支付方式", "Provider", R.provider),
            text("file_name", "账单文件", "Statement file", R.file_name),
            text("file_sha256", "账单SHA-256", "Statement SHA-256", R.file_sha256),
            *times("window_from", "账期开始", "Window from", R.window_from),
            *times("window_to", "账期结束", "Window to", R.window_to),
            text("rows", "账单行数", "Statement rows", R.rows),
            json_text("counts", "分类计数", "Counts", R.counts),
            text("run_by", "执行人", "Run by", R.run_by),
            local_date("business_date", "业务日期", "Business day", R.started_at),
            *times("started_at", "开始时间", "Started", R.started_at),
            *times("finished_at", "完成时间", "Finished", R.finished_at),
        ),
    )
)
