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
from typing import IO, Any, Protocol

import xlsxwriter  # type: ignore[import-untyped]

from ordertally.core.spreadsheet import FORMULA_START
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
    """A cell as CSV text: None empty, text through the formula neutraliser (`safe_cell`'s
    rule, inlined: this runs for every cell of a million-row export)."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return "'" + cell if cell.startswith(FORMULA_START) else cell
    return str(cell)


# Rows serialised into memory before they are encoded, hashed and written in one go.
FLUSH_ROWS = 1000


class BodyHash:
    """SHA-256 of the body as CSV bytes (UTF-8, CRLF), the same for CSV and XLSX files. Rows
    are serialised into a buffer and hashed a thousand at a time (the same digest as row by
    row: SHA-256 over the concatenation)."""

    def __init__(self, sink: IO[bytes] | None = None) -> None:
        self._sha = hashlib.sha256()
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")
        self._sink = sink  # where the hashed bytes also go (the CSV file), if anywhere
        self._pending = 0

    def add(self, row: Sequence[str]) -> None:
        """Add one row of text cells."""
        self._csv.writerow(row)
        self._pending += 1
        if self._pending >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Hash (and write) the buffered rows."""
        if not self._pending:
            return
        data = self._buf.getvalue().encode()
        self._sha.update(data)
        if self._sink is not None:
            self._sink.write(data)
        self._buf.seek(0)
        self._buf.truncate()
        self._pending = 0

    def hexdigest(self) -> str:
        """The body's SHA-256 so far."""
        self.flush()
        return self._sha.hexdigest()


class FileWriter(Protocol):
    """What the exporter writes through."""

    def header(self, headers: list[str]) -> None: ...
    def row(self, cells: list[Cell]) -> None: ...
    def close(self, footer: list[str]) -> None: ...


def _csv_lines(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode()


class CsvWriter:
    """CSV in UTF-8 with a BOM (Excel opens it as UTF-8), CRLF line ends. The body's rows are
    serialised once: the bytes hashed are the bytes written."""

    def __init__(self, path: Path, watermark: Watermark) -> None:
        self._file = path.open("wb")
        self._file.write(BOM.encode())
        self._file.write(_csv_lines([[_text(c) for c in line] for line in watermark.preamble()]))
        self._file.write(_csv_lines([[]]))
        self.body = BodyHash(sink=self._file)

    def header(self, headers: list[str]) -> None:
        self.body.add([_text(h) for h in headers])

    def row(self, cells: list[Cell]) -> None:
        self.body.add([_text(c) for c in cells])

    def close(self, footer: list[str]) -> None:
        self.body.flush()
        self._file.write(_csv_lines([[], [_text(c) for c in footer]]))
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
