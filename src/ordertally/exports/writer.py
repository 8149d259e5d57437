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
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol
from xml.sax.saxutils import escape

import xlsxwriter  # type: ignore[import-untyped]

from ordertally.core.spreadsheet import FORMULA_START
from ordertally.exports.templates.base import XLSX_MAX_CHARS, XLSX_MONEY_STYLE, Cell

try:  # optional: wheels for three platforms only (ADR 0036 addendum); XlsxWriter otherwise
    import rvgsrust_xlsxwriter
except ImportError:  # pragma: no cover - depends on the platform
    RUST_XLSX = False
else:
    RUST_XLSX = True

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

    def write(self, data: bytes) -> None:
        """Hash (and write) bytes already serialised as CSV rows."""
        self.flush()
        self._sha.update(data)
        if self._sink is not None:
            self._sink.write(data)

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


class CopyLines:
    """Body rows rendered by PostgreSQL: the output of `COPY (SELECT line …) TO STDOUT` in
    text format, one CSV line per row, turned into the CSV writer's bytes.

    COPY ends each row with LF and escapes what the line holds (a backslash, and the CR and LF
    of a quoted multi-line cell, as `\\`, `\r`, `\n`, ...): a block without a backslash only
    needs CRLF line ends; one with a backslash is unescaped. A row split across two blocks
    waits for the rest of it.
    """

    def __init__(self, body: BodyHash) -> None:
        self._body = body
        self._rest = b""
        self.rows = 0

    def feed(self, data: bytes) -> bytes:
        """Hash (and write) the complete rows in `data` (after what was left of the last
        block) as CSV lines, and return those lines."""
        data = self._rest + data
        end = data.rfind(b"\n") + 1
        self._rest, data = data[end:], data[:end]
        self.rows += data.count(b"\n")  # every row's end: a line break inside a cell is escaped
        lines = _COPY_ESCAPE.sub(_unescape, data) if b"\\" in data else data.replace(b"\n", b"\r\n")
        self._body.write(lines)
        return lines

    def close(self) -> None:
        """Every row must have ended."""
        if self._rest:
            raise ValueError("COPY output ended inside a row")


# A COPY text escape (backslash and one character) or a row's end.
_COPY_ESCAPE = re.compile(rb"\\(.)|\n", re.DOTALL)
_ESCAPED = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _unescape(match: re.Match[bytes]) -> bytes:
    char = match.group(1)
    if char is None:
        return b"\r\n"
    return _ESCAPED.get(char, char)


# The XLSX package parts that list the custom properties part (rvgsrust-xlsxwriter writes
# the core properties but has no custom ones: they are added when the file is closed).
_CUSTOM_TYPE = (
    '<Override PartName="/docProps/custom.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.custom-properties+xml"/>'
)
_CUSTOM_REL = (
    '<Relationship Id="rIdCustom" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/custom-properties" Target="docProps/custom.xml"/>'
)
# Rows handed to the Rust writer in one call (one crossing per batch, not per row).
XLSX_BATCH = 1000


def _custom_xml(properties: dict[str, str]) -> bytes:
    items = "".join(
        f'<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="{pid}" '
        f'name="{escape(name, _ATTR)}"><vt:lpwstr>{escape(value)}</vt:lpwstr></property>'
        for pid, (name, value) in enumerate(properties.items(), start=2)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
        'custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/'
        f'docPropsVTypes">{items}</Properties>'
    ).encode()


_ATTR = {'"': "&quot;"}


def add_custom_properties(path: Path, properties: dict[str, str]) -> None:
    """Add a custom document properties part to a closed XLSX file.

    The package is rewritten with every existing part copied as it is compressed (the sheet of
    a million rows is not inflated and deflated again); only `[Content_Types].xml` and
    `_rels/.rels` are rewritten, to list the new part.
    """
    out = path.with_name(path.name + ".part")
    with path.open("rb") as raw, zipfile.ZipFile(raw) as src, out.open("wb") as sink:
        dst = zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED)
        for info in src.infolist():
            if info.filename == "[Content_Types].xml":
                xml = src.read(info).decode().replace("</Types>", _CUSTOM_TYPE + "</Types>")
                dst.writestr(info.filename, xml)
            elif info.filename == "_rels/.rels":
                rels = src.read(info).decode()
                dst.writestr(
                    info.filename,
                    rels.replace("</Relationships>", _CUSTOM_REL + "</Relationships>"),
                )
            else:
                _copy_compressed(raw, info, dst)
        dst.writestr("docProps/custom.xml", _custom_xml(properties))
        dst.close()
    out.replace(path)


def _copy_compressed(raw: IO[bytes], info: zipfile.ZipInfo, dst: zipfile.ZipFile) -> None:
    """Copy one entry's compressed bytes into `dst` with a fresh local header (the sizes and
    CRC in it, no data descriptor)."""
    raw.seek(info.header_offset)
    local = raw.read(30)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + 30 + name_len + extra_len)
    copy = zipfile.ZipInfo(info.filename, info.date_time)
    copy.compress_type = info.compress_type
    copy.CRC, copy.compress_size, copy.file_size = info.CRC, info.compress_size, info.file_size
    copy.external_attr = info.external_attr
    sink = dst.fp
    assert sink is not None
    copy.header_offset = sink.tell()
    sink.write(copy.FileHeader())
    left = info.compress_size
    while left:
        block = raw.read(min(left, 1 << 20))
        sink.write(block)
        left -= len(block)
    dst.filelist.append(copy)
    dst.NameToInfo[copy.filename] = copy
    dst.start_dir = sink.tell()


def _core_properties(watermark: Watermark) -> dict[str, str]:
    """The XLSX core document properties (docProps/core.xml) of either writer."""
    return {
        "title": f"{watermark.title} {watermark.export_no}",
        "author": watermark.actor_id,
        "comments": watermark.line(),
        "keywords": watermark.export_no,
    }


def _custom_properties(watermark: Watermark) -> dict[str, str]:
    """The XLSX custom document properties (docProps/custom.xml) of either writer."""
    return {
        "export_no": watermark.export_no,
        "exported_by": f"{watermark.actor_id} ({watermark.role})",
        "source_ip": watermark.source_ip or "-",
        "snapshot_at": watermark.snapshot_at,
        "company": "ordertally",
    }


def _amount_digits(text: str) -> int:
    """The digits after the point of an amount rendered as text by the database."""
    point = text.find(".")
    return 0 if point < 0 else len(text) - point - 1


class RustXlsxWriter:
    """XLSX through rvgsrust-xlsxwriter (rust_xlsxwriter) in constant-memory mode, rows handed
    over a thousand at a time; text cells are always written as strings, never as formulas.

    Money cells are numbers shown with their currency's digits: a money column gets the format
    of its first amount's digits, and an amount with other digits (a JPY total in a CNY column)
    is written with its own format.
    """

    def __init__(self, path: Path, watermark: Watermark) -> None:
        if not RUST_XLSX:
            raise RuntimeError("rvgsrust-xlsxwriter is not installed (no wheel for this platform)")
        self._path = path
        self._book = rvgsrust_xlsxwriter.Workbook(str(path))
        self._book.set_properties(**_core_properties(watermark))
        self._custom = _custom_properties(watermark)
        self._sheet = self._book.add_worksheet("export", constant_memory=True)
        line = watermark.line().replace("&", "&&")
        self._sheet.set_header(f"&L{line}")
        self._sheet.set_footer(f"&L{line}&R&P / &N")
        self._formats: dict[int, Any] = {}
        self._column_digits: dict[int, int] = {}
        self._batch: list[list[Any]] = []
        self._row = 0  # the sheet row of the batch's first row
        self.body = BodyHash()
        for values in watermark.preamble():
            self._add([*values])
        self._add([])

    def _format(self, digits: int) -> Any:
        if digits not in self._formats:
            fmt = self._book.add_format()
            fmt.set_num_format("0." + "0" * digits if digits else "0")
            self._formats[digits] = fmt
        return self._formats[digits]

    def _flush(self) -> None:
        if self._batch:
            self._sheet.write_rows(self._row, 0, self._batch)
            self._row += len(self._batch)
            self._batch = []

    def _add(self, cells: Sequence[Cell], neutralised: bool = False) -> None:
        values: list[Any] = []
        own: list[tuple[int, float, int]] = []
        for col, cell in enumerate(cells):
            if isinstance(cell, str):
                safe = neutralised or not cell.startswith(FORMULA_START)
                values.append(cell if safe else "'" + cell)
            elif isinstance(cell, Decimal):
                # Shown with the currency's digits; the CSV and the manifest keep the exact text.
                digits = max(0, -int(cell.as_tuple().exponent))
                column = self._column_digits.get(col)
                if column is None:
                    self._flush()  # the column's format applies to cells written after it
                    self._sheet.set_column_format(col, self._format(digits))
                    self._column_digits[col] = digits
                elif column != digits:
                    own.append((col, float(cell), digits))
                values.append(float(cell))
            elif isinstance(cell, bool):
                values.append(int(cell))
            else:
                values.append(cell)
        if own:
            self._write_own(values, own)
            return
        self._batch.append(values)
        if len(self._batch) >= XLSX_BATCH:
            self._flush()

    def _write_own(self, values: list[Any], own: list[tuple[int, float, int]]) -> None:
        """A row with amounts whose digits differ from their column's format."""
        self._flush()
        self._sheet.write_row(self._row, 0, values)
        for col, value, digits in own:
            self._sheet.write(self._row, col, value, self._format(digits))
        self._row += 1

    def header(self, headers: list[str]) -> None:
        self.body.add([_text(h) for h in headers])
        self._add(headers)

    def row(self, cells: list[Cell]) -> None:
        self.body.add([_text(c) for c in cells])
        self._add(cells)

    def csv_rows(self, lines: bytes, kinds: Sequence[str]) -> None:
        """Body rows the database rendered as CSV lines (already hashed, already neutralised):
        amounts and integers back to numbers (`kinds`: each column's "money", "int" or
        "text"), empty cells left out. The amount's digits are read from its text."""
        money = [i for i, kind in enumerate(kinds) if kind == "money"]
        ints = [i for i, kind in enumerate(kinds) if kind == "int"]
        for row in csv.reader(io.StringIO(lines.decode(), newline="")):
            values: list[Any] = [v or None for v in row]
            own: list[tuple[int, float, int]] = []
            for i in money:
                text = row[i]
                if not text:
                    continue
                point = text.find(".")  # `_amount_digits`, inlined: once per amount cell
                digits = 0 if point < 0 else len(text) - point - 1
                values[i] = amount = float(text)
                column = self._column_digits.get(i)
                if column is None:
                    self._flush()  # the column's format applies to cells written after it
                    self._sheet.set_column_format(i, self._format(digits))
                    self._column_digits[i] = digits
                elif column != digits:
                    own.append((i, amount, digits))
            for i in ints:
                if row[i]:
                    values[i] = int(row[i])
            if own:
                self._write_own(values, own)
                continue
            self._batch.append(values)
            if len(self._batch) >= XLSX_BATCH:
                self._flush()

    def close(self, footer: list[str]) -> None:
        self._add([])
        self._add([*footer])
        self._flush()
        self._book.close()
        add_custom_properties(self._path, self._custom)


class PythonXlsxWriter:
    """XLSX through XlsxWriter (pure Python) in constant-memory mode, rows flushed as written:
    the same cells, number formats, properties and print header/footer as `RustXlsxWriter`,
    wherever the Rust binding has no wheel (or `export_xlsx_writer` is "python"). Text cells
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
        self._book.set_properties(_core_properties(watermark))
        for name, value in _custom_properties(watermark).items():
            self._book.set_custom_property(name, value)
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

    def _format(self, digits: int) -> Any:
        if digits not in self._formats:
            self._formats[digits] = self._book.add_format(
                {"num_format": "0." + "0" * digits if digits else "0"}
            )
        return self._formats[digits]

    def _write(self, cells: Sequence[Cell]) -> None:
        for col, cell in enumerate(cells):
            if cell is None:
                continue
            if isinstance(cell, bool | int):
                self._sheet.write_number(self._row, col, int(cell))
            elif isinstance(cell, Decimal):
                # Shown with the currency's digits; the CSV and the manifest keep the exact text.
                digits = max(0, -int(cell.as_tuple().exponent))
                self._sheet.write_number(self._row, col, float(cell), self._format(digits))
            else:
                self._sheet.write_string(self._row, col, _text(cell))
        self._row += 1

    def header(self, headers: list[str]) -> None:
        self.body.add([_text(h) for h in headers])
        self._write([*headers])

    def row(self, cells: list[Cell]) -> None:
        self.body.add([_text(c) for c in cells])
        self._write(cells)

    def csv_rows(self, lines: bytes, kinds: Sequence[str]) -> None:
        """Body rows the database rendered as CSV lines (already hashed, already neutralised):
        amounts and integers back to numbers, text as it is, empty cells left out."""
        for row in csv.reader(io.StringIO(lines.decode(), newline="")):
            for col, (text, kind) in enumerate(zip(row, kinds, strict=True)):
                if not text:
                    continue
                if kind == "money":
                    fmt = self._format(_amount_digits(text))
                    self._sheet.write_number(self._row, col, float(text), fmt)
                elif kind == "int":
                    self._sheet.write_number(self._row, col, int(text))
                else:
                    self._sheet.write_string(self._row, col, text)
            self._row += 1

    def close(self, footer: list[str]) -> None:
        self._row += 1
        self._write([*footer])
        self._book.close()


XlsxWriter = RustXlsxWriter | PythonXlsxWriter


def xlsx_writer_class(choice: str = "auto") -> type[RustXlsxWriter] | type[PythonXlsxWriter]:
    """The third-party XLSX writer for the `export_xlsx_writer` setting ("rust" or "python"):
    the Rust binding when "rust" and it is installed, XlsxWriter otherwise."""
    if choice in ("auto", "rust") and RUST_XLSX:
        return RustXlsxWriter
    return PythonXlsxWriter


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, read in blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# --- the XLSX package written here, its sheet rendered by PostgreSQL (ADR 0041) ----------------

# Excel's rows per sheet; the watermark block, the header and the footer take nine of them.
XLSX_MAX_ROWS = 1_048_576
XLSX_FRAME_ROWS = 9
# Deflate level of every part: on the sheet's XML level 1 takes about a quarter of the CPU of
# the default 6 for a file about a third larger (ADR 0041).
XLSX_COMPRESSLEVEL = 1
# Every part's time stamp: the same bytes for the same content.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Style index 1 + d: a number shown with d digits (0 and 0.00 are Excel's built-in formats).
_MONEY_DIGITS = range(0, 5)
_NS = "http://schemas.openxmlformats.org"


class XlsxTooLarge(ValueError):
    """More rows than one XLSX sheet holds."""


def xlsx_row_limit() -> int:
    """The most body rows an XLSX export holds (one sheet, the watermark block and footer)."""
    return XLSX_MAX_ROWS - XLSX_FRAME_ROWS


def _column_name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f]")
_ESCAPED_X = re.compile("(_x[0-9a-fA-F]{4}_)")
_EDGE_SPACE = re.compile(r"^\s|\s$")


def xml_text_cell(text: str) -> str:
    """An inline-string cell as the database renders it (`templates.base.xml_row`) and as
    XlsxWriter writes one: cut at Excel's longest text, `_xHHHH_` for control characters,
    entities for markup, xml:space="preserve" for white space at either end."""
    text = text[:XLSX_MAX_CHARS]
    if "_x" in text:
        text = _ESCAPED_X.sub(r"_x005F\1", text)
    text = escape(text)
    if _CONTROL_CHARS.search(text):
        text = _CONTROL_CHARS.sub(lambda m: f"_x{ord(m[0]):04X}_", text)
    if _EDGE_SPACE.search(text):
        return f'<c t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'
    return f'<c t="inlineStr"><is><t>{text}</t></is></c>'


def _xml_cells(cells: Sequence[Cell], neutralise: bool) -> str:
    out = []
    for cell in cells:
        if cell is None or cell == "":
            out.append("<c/>")
        elif isinstance(cell, str):
            out.append(xml_text_cell(_text(cell) if neutralise else cell))
        elif isinstance(cell, Decimal):
            digits = max(0, -int(cell.as_tuple().exponent))
            out.append(f'<c s="{XLSX_MONEY_STYLE + digits}"><v>{cell:f}</v></c>')
        else:
            out.append(f"<c><v>{int(cell)}</v></c>")
    return "".join(out)


def _styles_xml() -> bytes:
    custom = {d: 164 + i for i, d in enumerate(d for d in _MONEY_DIGITS if d not in (0, 2))}
    fmt_ids = {d: {0: 1, 2: 2}.get(d) or custom[d] for d in _MONEY_DIGITS}
    numfmts = "".join(
        f'<numFmt numFmtId="{fid}" formatCode="0.{"0" * d}"/>' for d, fid in custom.items()
    )
    xfs = '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>' + "".join(
        f'<xf numFmtId="{fmt_ids[d]}" fontId="0" fillId="0" borderId="0" xfId="0" '
        'applyNumberFormat="1"/>'
        for d in _MONEY_DIGITS
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<styleSheet xmlns="{_NS}/spreadsheetml/2006/main">'
        f'<numFmts count="{len(custom)}">{numfmts}</numFmts>'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
        '</fonts><fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        f'</cellStyleXfs><cellXfs count="{len(_MONEY_DIGITS) + 1}">{xfs}</cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    ).encode()


def _core_xml(watermark: Watermark) -> bytes:
    props = _core_properties(watermark)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<cp:coreProperties xmlns:cp="{_NS}/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:dcmitype="http://purl.org/dc/dcmitype/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{escape(props['title'])}</dc:title>"
        f"<dc:creator>{escape(props['author'])}</dc:creator>"
        f"<cp:keywords>{escape(props['keywords'])}</cp:keywords>"
        f"<dc:description>{escape(props['comments'])}</dc:description>"
        f"<cp:lastModifiedBy>{escape(props['author'])}</cp:lastModifiedBy>"
        f'<dcterms:created xsi:type="dcterms:W3CDTF">{escape(watermark.created_at)}'
        "</dcterms:created>"
        f'<dcterms:modified xsi:type="dcterms:W3CDTF">{escape(watermark.created_at)}'
        "</dcterms:modified></cp:coreProperties>"
    ).encode()


_STATIC_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Types xmlns="{_NS}/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/docProps/app.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.extended-properties+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        '<Override PartName="/xl/styles.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        f"{_CUSTOM_TYPE}</Types>"
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{_NS}/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_NS}/officeDocument/2006/relationships/officeDocument" '
        'Target="xl/workbook.xml"/>'
        f'<Relationship Id="rId2" Type="{_NS}/package/2006/relationships/metadata/'
        'core-properties" Target="docProps/core.xml"/>'
        f'<Relationship Id="rId3" Type="{_NS}/officeDocument/2006/relationships/'
        'extended-properties" Target="docProps/app.xml"/>'
        f"{_CUSTOM_REL}</Relationships>"
    ),
    "docProps/app.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Properties xmlns="{_NS}/officeDocument/2006/extended-properties" '
        f'xmlns:vt="{_NS}/officeDocument/2006/docPropsVTypes"><Application>ordertally'
        "</Application><DocSecurity>0</DocSecurity><ScaleCrop>false</ScaleCrop>"
        '<HeadingPairs><vt:vector size="2" baseType="variant"><vt:variant><vt:lpstr>Worksheets'
        "</vt:lpstr></vt:variant><vt:variant><vt:i4>1</vt:i4></vt:variant></vt:vector>"
        '</HeadingPairs><TitlesOfParts><vt:vector size="1" baseType="lpstr"><vt:lpstr>export'
        "</vt:lpstr></vt:vector></TitlesOfParts><LinksUpToDate>false</LinksUpToDate>"
        "<SharedDoc>false</SharedDoc><HyperlinksChanged>false</HyperlinksChanged>"
        "<AppVersion>12.0000</AppVersion></Properties>"
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{_NS}/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_NS}/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_NS}/officeDocument/2006/relationships/styles" '
        'Target="styles.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<workbook xmlns="{_NS}/spreadsheetml/2006/main" '
        f'xmlns:r="{_NS}/officeDocument/2006/relationships">'
        '<bookViews><workbookView/></bookViews><sheets><sheet name="export" sheetId="1" '
        'r:id="rId1"/></sheets></workbook>'
    ),
}


class SheetXlsxWriter:
    """XLSX written here: the static parts, and one sheet streamed into a deflated zip entry
    in constant memory. Body rows come either already rendered as SpreadsheetML by the
    database (`sheet_rows`, with their CSV lines for the body hash) or as cells (`row`,
    rendered here: SQLite, the Python path). Rows and cells carry no references (each follows
    the last); empty cells are `<c/>`. The same cells, number formats, watermark (core and
    custom properties, print header/footer) and body hash as the other writers; fixed time
    stamps and compression level, so the same content gives the same bytes.
    """

    def __init__(self, path: Path, watermark: Watermark, width: int, total: int) -> None:
        if total > xlsx_row_limit():
            raise XlsxTooLarge(
                f"{total} rows do not fit one XLSX sheet (at most {xlsx_row_limit()}): "
                "export as CSV or narrow the filters"
            )
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, True, XLSX_COMPRESSLEVEL)
        for name, text in _STATIC_PARTS.items():
            self._part(name, text.encode())
        self._part("xl/styles.xml", _styles_xml())
        self._part("docProps/core.xml", _core_xml(watermark))
        self._part("docProps/custom.xml", _custom_xml(_custom_properties(watermark)))
        self._total = total
        self._width = width
        self._line = watermark.line()
        self._sheet: IO[bytes] | None = None
        last = f"{_column_name(max(width, 3) - 1)}{total + XLSX_FRAME_ROWS}"
        head = [
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<worksheet xmlns="{_NS}/spreadsheetml/2006/main" '
            f'xmlns:r="{_NS}/officeDocument/2006/relationships"><dimension ref="A1:{last}"/>'
            '<sheetViews><sheetView tabSelected="1" workbookViewId="0"/></sheetViews>'
            '<sheetFormatPr defaultRowHeight="15"/><sheetData>'
        ]
        for r, values in enumerate(watermark.preamble(), start=1):
            head.append(f'<row r="{r}">{_xml_cells(values, neutralise=True)}</row>')
        self._pending = head  # written with the first rows (the sheet's size is estimated then)
        self.body = BodyHash()
        self.rows = 0

    def _part(self, name: str, data: bytes) -> None:
        self._zip.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)

    def _write(self, data: bytes) -> None:
        if self._sheet is None:
            info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            # zipfile uses the ZIP64 format when the size given is near 2 GiB: an estimate from
            # the first rows (a larger sheet than estimated fails, clearly, when closed).
            per_row = len(data) / max(self.rows, 1)
            info.file_size = int(per_row * 1.5 * self._total) + (1 << 20)
            self._sheet = self._zip.open(info, "w")
            self._sheet.write("".join(self._pending).encode())
        self._sheet.write(data)

    def header(self, headers: list[str]) -> None:
        self.body.add([_text(h) for h in headers])
        self._pending.append(f'<row r="7">{_xml_cells(headers, neutralise=True)}</row>')

    def row(self, cells: list[Cell]) -> None:
        """A body row rendered here."""
        self.body.add([_text(c) for c in cells])
        self.rows += 1
        self._write(f"<row>{_xml_cells(cells, neutralise=True)}</row>".encode())

    def sheet_rows(self, xml: bytes, rows: int) -> None:
        """Body rows the database rendered as SpreadsheetML (their CSV lines hashed apart)."""
        self.rows += rows
        self._write(xml)

    def close(self, footer: list[str]) -> None:
        end = self.rows + XLSX_FRAME_ROWS
        line = escape(self._line.replace("&", "&&"))
        self._write(
            f'<row r="{end}">{_xml_cells(footer, neutralise=True)}</row></sheetData>'
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" '
            f'footer="0.3"/><headerFooter><oddHeader>&amp;L{line}</oddHeader>'
            f"<oddFooter>&amp;L{line}&amp;R&amp;P / &amp;N</oddFooter></headerFooter>"
            "</worksheet>".encode()
        )
        assert self._sheet is not None
        self._sheet.close()
        self._zip.close()


class SheetLines:
    """COPY output of `repository.copy_sheet_rows` (each line: the row's SpreadsheetML, a tab,
    its CSV line) split into the sheet's XML and the body's CSV lines, block by block, with
    bytes operations only (no per-row Python): the XML holds no tab, line break or backslash
    (escaped as character references), so COPY passed it unchanged."""

    def __init__(self, writer: SheetXlsxWriter) -> None:
        self._writer = writer
        self._csv = CopyLines(writer.body)
        self._rest = b""

    @property
    def rows(self) -> int:
        return self._csv.rows

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        end = data.rfind(b"\n") + 1
        self._rest, data = data[end:], data[:end]
        if not data:
            return
        parts = data.replace(b"\n", b"\t").split(b"\t")  # xml, csv, xml, csv, …, b""
        rows = len(parts) // 2
        self._csv.feed(b"\n".join(parts[1::2]) + b"\n")
        self._writer.sheet_rows(b"".join(parts[0:-1:2]), rows)

    def close(self) -> None:
        if self._rest:
            raise ValueError("COPY output ended inside a row")
        self._csv.close()


AnyWriter = CsvWriter | XlsxWriter | SheetXlsxWriter


def open_writer(
    fmt: str,
    path: Path,
    watermark: Watermark,
    xlsx_writer: str = "auto",
    *,
    width: int = 0,
    total: int = 0,
) -> AnyWriter:
    """The writer for a format; for XLSX, the `export_xlsx_writer` setting: "auto" the sheet
    written here (`width` columns, `total` body rows), "rust" or "python" a third-party
    writer (ADR 0041)."""
    if fmt == "csv":
        return CsvWriter(path, watermark)
    if xlsx_writer == "auto":
        return SheetXlsxWriter(path, watermark, width, total)
    return xlsx_writer_class(xlsx_writer)(path, watermark)
