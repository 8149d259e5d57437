"""The XLSX writers on their own: amounts keep their currency's digits, text is never a formula,
the package stays valid, and the Rust binding and the XlsxWriter fallback write the same cells,
formats, properties and body hash."""

from __future__ import annotations

import functools
import io
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from python_calamine import CalamineWorkbook

from ordertally.exports.writer import (
    RUST_XLSX,
    CopyLines,
    CsvWriter,
    PythonXlsxWriter,
    RustXlsxWriter,
    SheetXlsxWriter,
    Watermark,
    xlsx_writer_class,
)

NO_RUST = "rvgsrust-xlsxwriter is not installed here (no wheel for this platform)"

WATERMARK = Watermark(
    export_no="EXP1",
    actor_id="fin-1",
    role="finance",
    source_ip="203.0.113.7",
    created_at="2026-11-30T15:30:00Z",
    snapshot_at="2026-11-30T15:30:01Z",
    filters="{}",
    timezone="Asia/Shanghai",
    title="订单 Orders",
)


def _styles(book: zipfile.ZipFile) -> dict[str, str]:
    """Each number cell's number format code, as openpyxl reads it (General when it has none:
    a cell without a style is shown in the default style, whatever its column's style)."""
    assert book.fp is not None
    book.fp.seek(0)
    sheet = openpyxl.load_workbook(io.BytesIO(book.fp.read())).worksheets[0]
    return {
        cell.coordinate: cell.number_format
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, int | float)
    }


@pytest.fixture(params=["sheet", "rust", "python"])
def xlsx(request: pytest.FixtureRequest) -> Any:
    """Each XLSX writer; the Rust one only where its module imports."""
    if request.param == "rust" and not RUST_XLSX:
        pytest.skip(NO_RUST)
    if request.param == "sheet":
        return functools.partial(SheetXlsxWriter, width=5, total=5)
    return RustXlsxWriter if request.param == "rust" else PythonXlsxWriter


def _properties(book: zipfile.ZipFile) -> dict[str, str]:
    """The core properties the watermark sets, the custom ones, and the print header/footer."""
    core = book.read("docProps/core.xml").decode()
    custom = book.read("docProps/custom.xml").decode()
    sheet = book.read("xl/worksheets/sheet1.xml").decode()
    found = {
        tag: re.search(rf"<{tag}>([^<]*)</{tag}>", core)
        for tag in ("dc:title", "dc:creator", "cp:keywords", "dc:description")
    }
    found |= {
        tag: re.search(rf"<{tag}>([^<]*)</{tag}>", sheet) for tag in ("oddHeader", "oddFooter")
    }
    out = {tag: m[1] for tag, m in found.items() if m}
    out |= dict(re.findall(r'name="([^"]*)"><vt:lpwstr>([^<]*)</vt:lpwstr>', custom))
    return out


def test_amounts_keep_their_digits_and_the_package_stays_valid(tmp_path: Path, xlsx: Any) -> None:
    # Given a CNY amount, then a JPY amount (no minor unit) in the same column
    path = tmp_path / "x.xlsx"
    writer = xlsx(path, WATERMARK)
    writer.header(["订单号 Order no.", "金额 Total"])
    writer.row(["A1", Decimal("19.90")])
    writer.row(["=1+1", Decimal("1500")])
    writer.row(["A3", None])
    writer.close(["行数 Rows: 3", WATERMARK.line()])
    book = zipfile.ZipFile(path)
    # Then every part's CRC checks (the sheet was copied compressed, not re-deflated)
    assert book.testzip() is None
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    data = sheet[7:10]
    assert [r[:2] for r in data] == [["A1", 19.9], ["'=1+1", 1500.0], ["A3", ""]]
    # And each amount is shown with its own currency's digits
    styles = _styles(book)
    assert (styles["B8"], styles["B9"]) == ("0.00", "0")
    # And the watermark is in the core and custom properties, listed in the package
    custom = book.read("docProps/custom.xml").decode()
    assert "203.0.113.7" in custom and "EXP1" in custom and "fin-1 (finance)" in custom
    assert "/docProps/custom.xml" in book.read("[Content_Types].xml").decode()
    assert "docProps/custom.xml" in book.read("_rels/.rels").decode()
    assert "fin-1" in book.read("docProps/core.xml").decode()
    assert b"<f>" not in book.read("xl/worksheets/sheet1.xml")


def test_xlsx_and_csv_hash_the_same_body(tmp_path: Path, xlsx: Any) -> None:
    # Given the same rows written as CSV and as XLSX
    rows: list[list[str | int | Decimal | None]] = [
        ["A1", Decimal("19.90"), 3, None],
        ["@SUM(A1)", Decimal("-5.00"), 0, 'x,"y"\r\nz'],
    ]
    hashes = []
    for writer in (
        CsvWriter(tmp_path / "b.csv", WATERMARK),
        xlsx(tmp_path / "b.xlsx", WATERMARK),
    ):
        writer.header(["a", "b", "c", "d"])
        for row in rows:
            writer.row(row)
        writer.close(["行数 Rows: 2"])
        hashes.append(writer.body.hexdigest())
    # Then the body hash is the same whatever the format
    assert hashes[0] == hashes[1]


def test_the_rust_and_python_writers_write_the_same_file(tmp_path: Path) -> None:
    if not RUST_XLSX:
        pytest.skip(NO_RUST)
    # Given the same rows, some cell by cell and some as the database's COPY lines (a JPY
    # amount in a CNY column, a neutralised formula, a quoted line break, empty cells)
    rows: list[list[str | int | Decimal | None]] = [
        ["A1", Decimal("19.90"), 3, True, None],
        ["@SUM(A1)", Decimal("1500"), -2, False, 'x,"y"\r\nz'],
    ]
    copy = b'A3,0.50,7,1,\n\'=2+2,12,,0,"a\\rb"\nA5,,0,0,&\n'
    kinds = ["text", "money", "int", "int", "text"]
    paths, hashes = [], []
    for writer_class in (RustXlsxWriter, PythonXlsxWriter):
        path = tmp_path / f"{writer_class.__name__}.xlsx"
        writer = writer_class(path, WATERMARK)
        # When each writer writes them the way the export service does
        writer.header(["a", "b", "c", "d", "e"])
        for row in rows:
            writer.row(row)
        lines = CopyLines(writer.body)
        writer.csv_rows(lines.feed(copy[:20]) + lines.feed(copy[20:]), kinds)
        lines.close()
        writer.close(["行数 Rows: 5", WATERMARK.line()])
        paths.append(path)
        hashes.append(writer.body.hexdigest())
    sheets = [CalamineWorkbook.from_path(str(p)).get_sheet_by_index(0).to_python() for p in paths]
    books = [zipfile.ZipFile(p) for p in paths]
    # Then both packages are valid, and every cell, number format and property is the same
    assert [b.testzip() for b in books] == [None, None]
    assert sheets[0] == sheets[1]
    assert sheets[0][:5] == [[*r, *[""] * (5 - len(r))] for r in WATERMARK.preamble()]
    assert sheets[0][6:12] == [
        ["a", "b", "c", "d", "e"],
        ["A1", 19.9, 3.0, 1.0, ""],
        ["'@SUM(A1)", 1500.0, -2.0, 0.0, 'x,"y"\r\nz'],
        ["A3", 0.5, 7.0, 1.0, ""],
        ["'=2+2", 12.0, "", 0.0, "a\rb"],
        ["A5", "", 0.0, 0.0, "&"],
    ]
    assert sheets[0][-1][:2] == ["行数 Rows: 5", WATERMARK.line()]
    styles = [_styles(b) for b in books]
    assert styles[0] == styles[1]
    assert [styles[0][f"B{n}"] for n in range(8, 12)] == ["0.00", "0", "0.00", "0"]
    assert (styles[0]["C8"], styles[0]["D8"], "B12" in styles[0]) == ("General", "General", False)
    properties = [_properties(b) for b in books]
    assert properties[0] == properties[1]
    assert properties[0] == {
        "dc:title": "订单 Orders EXP1",
        "dc:creator": "fin-1",
        "cp:keywords": "EXP1",
        "dc:description": WATERMARK.line(),
        "oddHeader": f"&amp;L{WATERMARK.line()}",
        "oddFooter": f"&amp;L{WATERMARK.line()}&amp;R&amp;P / &amp;N",
        "export_no": "EXP1",
        "exported_by": "fin-1 (finance)",
        "source_ip": "203.0.113.7",
        "snapshot_at": "2026-11-30T15:30:01Z",
        "company": "ordertally",
    }
    # And the body hash is the same
    assert hashes[0] == hashes[1]
    assert b"<f>" not in books[1].read("xl/worksheets/sheet1.xml")


def test_the_setting_chooses_the_xlsx_writer() -> None:
    # Then "python" always means XlsxWriter, and "rust" the Rust binding wherever it imports
    assert xlsx_writer_class("python") is PythonXlsxWriter
    assert xlsx_writer_class("rust") is (RustXlsxWriter if RUST_XLSX else PythonXlsxWriter)
