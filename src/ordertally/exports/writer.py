"""Streaming CSV and XLSX writers: a watermark block, the body, a footer; the body's SHA-256.

The body (header row and data rows, serialised as CSV) is what a re-run of a closed period
must reproduce, so its SHA-256 is computed over exactly those bytes whatever the format. The
watermark (who, when, from where, export number) and the snapshot time differ per run: they
sit outside the body, in the file's preamble and footer and, for XLSX, in the document
properties and the print header/footer.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import xlsxwriter  # type: ignore[import-untyped]

from ordertally.core.spreadsheet import safe_cell
from ordertally.exports.templates.base import Cell

BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class Watermark:
    """Who made the file, when, from where, and which export it is."""

    export_no: str
    actor_id: str
    role: str
    source_ip: str | None
    created_at: str
    snapshot_at: str
    filters: str
    timezone: str
    title: str

    def line(self) -> str:
        """The one-line watermark written in the header and footer."""
        return (
            f"ordertally {self.export_no} · {self.actor_id} ({self.role}) · "
            f"{self.source_ip or '-'} · {self.created_at}"
        )

    def preamble(self) -> list[list[str]]:
        """The label/value rows above the body."""
        return [
            ["导出 Export", self.export_no, self.title],
            ["快照时间 Snapshot (UTC)", self.snapshot_at],
            ["筛选 Filters", self.filters],
            ["时区 Time zone", self.timezone],
            ["水印 Watermark", self.line()],
        ]


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, str):
        return str(safe_cell(cell))
    return str(cell)


class BodyHash:
    """SHA-256 of the body as CSV bytes (UTF-8, CRLF), the same for CSV and XLSX files."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")

    def add(self, row: Sequence[str]) -> None:
        """Hash one row."""
        self._csv.writerow(row)
        self._sha.update(self._buf.getvalue().encode())
        self._buf.seek(0)
        self._buf.truncate()

    def hexdigest(self) -> str:
        """The body's SHA-256 so far."""
        return self._sha.hexdigest()


class FileWriter(Protocol):
    """What the exporter writes through."""

    def header(self, headers: list[str]) -> None: ...
    def row(self, cells: list[Cell]) -> None: ...
    def close(self, footer: list[str]) -> None: ...


class CsvWriter:
    """CSV in UTF-8 with a BOM (Excel opens it as UTF-8), CRLF line ends."""

    def __init__(self, path: Path, watermark: Watermark) -> None:
        self._file = path.open("w", encoding="utf-8", newline="")
        self._file.write(BOM)
        self._csv = csv.writer(self._file, lineterminator="\r\n")
        self.body = BodyHash()
        for line in watermark.preamble():
            self._csv.writerow([_text(c) for c in line])
        self._csv.writerow([])

    def header(self, headers: list[str]) -> None:
        row = [_text(h) for h in headers]
        self.body.add(row)
        self._csv.writerow(row)

    def row(self, cells: list[Cell]) -> None:
        row = [_text(c) for c in cells]
        self.body.add(row)
        self._csv.writerow(row)

    def close(self, footer: list[str]) -> None:
        self._csv.writerow([])
        self._csv.writerow([_text(c) for c in footer])
        self._file.close()


class XlsxWriter:
    """XLSX through XlsxWriter in constant-memory mode (rows flushed as written); text cells
    are always written as strings, never as formulas."""

    def __init__(self, path: Path, watermark: Watermark) -> None:
        self._book = xlsxwriter.Workbook(
            str(path),
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        self._book.set_properties(
            {
                "title": f"{watermark.title} {watermark.export_no}",
                "author": watermark.actor_id,
                "company": "ordertally",
                "comments": watermark.line(),
                "keywords": watermark.export_no,
            }
        )
        self._book.set_custom_property("export_no", watermark.export_no)
        self._book.set_custom_property("exported_by", f"{watermark.actor_id} ({watermark.role})")
        self._book.set_custom_property("source_ip", watermark.source_ip or "-")
        self._book.set_custom_property("snapshot_at", watermark.snapshot_at)
        self._sheet = self._book.add_worksheet("export")
        line = watermark.line().replace("&", "&&")
        self._sheet.set_header(f"&L{line}")
        self._sheet.set_footer(f"&L{line}&R&P / &N")
        self._formats: dict[int, Any] = {}
        self._row = 0
        self.body = BodyHash()
        for values in watermark.preamble():
            self._write([*values])
        self._row += 1

    def _money_format(self, value: Decimal) -> Any:
        digits = max(0, -int(value.as_tuple().exponent))
        if digits not in self._formats:
            self._formats[digits] = self._book.add_format(
                {"num_format": "0." + "0" * digits if digits else "0"}
            )
        return self._formats[digits]

    def _write(self, cells: list[Cell]) -> None:
        for col, cell in enumerate(cells):
            if cell is None:
                continue
            if isinstance(cell, bool | int):
                self._sheet.write_number(self._row, col, int(cell))
            elif isinstance(cell, Decimal):
                # Shown with the currency's digits; the CSV and the manifest keep the exact text.
                self._sheet.write_number(self._row, col, float(cell), self._money_format(cell))
            else:
                self._sheet.write_string(self._row, col, _text(cell))
        self._row += 1

    def header(self, headers: list[str]) -> None:
        self.body.add([_text(h) for h in headers])
        self._write([*headers])

    def row(self, cells: list[Cell]) -> None:
        self.body.add([_text(c) for c in cells])
        self._write(cells)

    def close(self, footer: list[str]) -> None:
        self._row += 1
        self._write([*footer])
        self._book.close()


def open_writer(fmt: str, path: Path, watermark: Watermark) -> CsvWriter | XlsxWriter:
    """The writer for a format."""
    return CsvWriter(path, watermark) if fmt == "csv" else XlsxWriter(path, watermark)


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, read in blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
