"""The error report: rejected rows with their reasons, as a CSV a spreadsheet opens safely."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ordertally.channels.files.parser import Rejected
from ordertally.core.spreadsheet import safe_cell, safe_row

__all__ = ["report_path", "safe_cell", "write_report"]


def write_report(out: Path | BinaryIO, header: Sequence[str], rejected: Iterable[Rejected]) -> int:
    """Write rejected rows with their reasons as CSV (UTF-8 with BOM, for Excel) to a file or a
    binary stream (left open); returns rows."""
    count = 0
    with (
        out.open("w", encoding="utf-8-sig", newline="")
        if isinstance(out, Path)
        else _kept_open(io.TextIOWrapper(out, encoding="utf-8-sig", newline=""))
    ) as f:
        writer = csv.writer(f)
        writer.writerow(safe_row(["行号 line", "订单号 order id", "原因 reason", *header]))
        for r in rejected:
            writer.writerow(safe_row([r.line, r.external_id, r.reason, *r.cells]))
            count += 1
    return count


@contextlib.contextmanager
def _kept_open(text: io.TextIOWrapper) -> Iterator[io.TextIOWrapper]:
    """A text view of a caller's binary stream, flushed and detached (not closed) at the end."""
    try:
        yield text
    finally:
        text.flush()
        text.detach()


def report_path(source: Path) -> Path:
    """Where the rejected rows go by default: next to the input file."""
    return source.with_name(f"{source.stem}.rejected.csv")
