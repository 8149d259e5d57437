"""The error report: rejected rows with their reasons, as a CSV a spreadsheet opens safely."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from ordertally.channels.files.parser import Rejected

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def safe_cell(text: str) -> str:
    """A cell a spreadsheet will show as text, never run as a formula (OWASP CSV injection)."""
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def write_report(out: Path, header: Sequence[str], rejected: Iterable[Rejected]) -> int:
    """Write rejected rows with their reasons as CSV (UTF-8 with BOM, for Excel); returns rows."""
    count = 0
    with out.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["行号 line", "订单号 order id", "原因 reason", *map(safe_cell, header)])
        for r in rejected:
            writer.writerow(
                [r.line, safe_cell(r.external_id), safe_cell(r.reason)]
                + [safe_cell(c) for c in r.cells]
            )
            count += 1
    return count


def report_path(source: Path) -> Path:
    """Where the rejected rows go by default: next to the input file."""
    return source.with_name(f"{source.stem}.rejected.csv")
