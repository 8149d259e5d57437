"""The error report: rejected rows with their reasons, as a CSV a spreadsheet opens safely."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from ordertally.channels.files.parser import Rejected
from ordertally.core.spreadsheet import safe_cell, safe_row

__all__ = ["report_path", "safe_cell", "write_report"]


def write_report(out: Path, header: Sequence[str], rejected: Iterable[Rejected]) -> int:
    """Write rejected rows with their reasons as CSV (UTF-8 with BOM, for Excel); returns rows."""
    count = 0
    with out.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(safe_row(["行号 line", "订单号 order id", "原因 reason", *header]))
        for r in rejected:
            writer.writerow(safe_row([r.line, r.external_id, r.reason, *r.cells]))
            count += 1
    return count


def report_path(source: Path) -> Path:
    """Where the rejected rows go by default: next to the input file."""
    return source.with_name(f"{source.stem}.rejected.csv")
