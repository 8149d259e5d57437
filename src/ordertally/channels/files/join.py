"""Exports that come as two files: Taobao/Tmall's 订单报表 (one row per order: buyer, receiver,
postage, times, status) and 宝贝报表 (one row per item: title, price, quantity, 商家编码),
joined on 订单编号 into the one-row-per-item table the `taobao` template reads."""

from __future__ import annotations

import csv
from pathlib import Path

from ordertally.channels.files.cells import text_of
from ordertally.channels.files.errors import FileError
from ordertally.channels.files.reading import read_rows

KEY = "订单编号"


def _table(path: Path, label: str) -> tuple[list[str], list[list[str]]]:
    rows, _ = read_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise FileError(f"{label}为空 / the {path.name} report is empty") from None
    names = [text_of(c) for c in header]
    if KEY not in names:
        raise FileError(f"{label}缺少 {KEY} 列 / the {path.name} report has no {KEY} column")
    return names, [[text_of(c) for c in cells] for _, cells in rows]


def join_reports(orders: Path, items: Path, out: Path) -> Path:
    """Write the item report's rows, each followed by its order's columns from the order
    report (the order report's value wins a column both have, e.g. 订单状态), to `out` (UTF-8
    CSV with a BOM); an item whose order is not in the order report keeps only its own
    columns (the parser then rejects it with the missing fields named)."""
    order_names, order_rows = _table(orders, "订单报表")
    item_names, item_rows = _table(items, "宝贝报表")
    order_key = order_names.index(KEY)
    by_id = {row[order_key]: row for row in order_rows if len(row) > order_key}
    shared = [n for n in item_names if n in order_names and n != KEY]
    names = [n for n in item_names if n not in shared] + [n for n in order_names if n != KEY]
    item_key = item_names.index(KEY)
    with out.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in item_rows:
            if not any(row):
                continue
            own = dict(zip(item_names, row, strict=False))
            order = by_id.get(row[item_key] if len(row) > item_key else "")
            theirs = dict(zip(order_names, order, strict=False)) if order is not None else {}
            writer.writerow([theirs.get(n) or own.get(n, "") for n in names])
    return out
