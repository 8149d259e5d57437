"""The XLSX writer on its own: amounts keep their currency's digits, text is never a formula,
and the custom properties added after the Rust writer closes leave a valid package."""

from __future__ import annotations

import re
import zipfile
from decimal import Decimal
from pathlib import Path

from python_calamine import CalamineWorkbook

from ordertally.exports.writer import CsvWriter, Watermark, XlsxWriter

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
    """Each cell reference's number format code (General when it has none)."""
    styles = book.read("xl/styles.xml").decode()
    codes = dict(re.findall(r'<numFmt numFmtId="(\d+)" formatCode="([^"]*)"', styles))
    xfs = re.search(r"<cellXfs[^>]*>(.*?)</cellXfs>", styles, re.S)
    assert xfs is not None
    formats = [codes.get(i, "General") for i in re.findall(r'<xf numFmtId="(\d+)"', xfs[1])]
    sheet = book.read("xl/worksheets/sheet1.xml").decode()
    cols = {
        int(lo): formats[int(s)]
        for lo, s in re.findall(r'<col min="(\d+)" max="\d+"[^>]*style="(\d+)"', sheet)
    }
    out: dict[str, str] = {}
    for ref, style in re.findall(r'<c r="([A-Z]+\d+)"(?: s="(\d+)")?', sheet):
        out[ref] = formats[int(style)] if style else cols.get(ord(ref[0]) - 64, "General")
    return out


def test_amounts_keep_their_digits_and_the_package_stays_valid(tmp_path: Path) -> None:
    # Given a CNY amount, then a JPY amount (no minor unit) in the same column
    path = tmp_path / "x.xlsx"
    writer = XlsxWriter(path, WATERMARK)
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


def test_xlsx_and_csv_hash_the_same_body(tmp_path: Path) -> None:
    # Given the same rows written as CSV and as XLSX
    rows: list[list[str | int | Decimal | None]] = [
        ["A1", Decimal("19.90"), 3, None],
        ["@SUM(A1)", Decimal("-5.00"), 0, 'x,"y"\r\nz'],
    ]
    hashes = []
    for writer in (
        CsvWriter(tmp_path / "b.csv", WATERMARK),
        XlsxWriter(tmp_path / "b.xlsx", WATERMARK),
    ):
        writer.header(["a", "b", "c", "d"])
        for row in rows:
            writer.row(row)
        writer.close(["行数 Rows: 2"])
        hashes.append(writer.body.hexdigest())
    # Then the body hash is the same whatever the format
    assert hashes[0] == hashes[1]
