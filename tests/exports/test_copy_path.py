"""On PostgreSQL a CSV export is formatted by the database and streamed through COPY; its
bytes must be the Python renderers' bytes on the same rows: the currency's digits, the
locked-rate conversion (half-even), local times with their offsets (also across a DST change),
the formula neutraliser, CSV quoting of commas, quotes and line breaks, COPY's escapes."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import openpyxl
import pytest
from python_calamine import CalamineWorkbook
from sqlalchemy import text

from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.exports import repository, service
from ordertally.exports import writer as writer_module
from ordertally.exports.errors import ExportTooLarge
from ordertally.exports.schemas import ExportIn
from ordertally.exports.writer import RUST_XLSX
from tests.conftest import ONLY_PG
from tests.exports.test_writer import NO_RUST, _properties, _styles
from tests.factories import make_order

pytestmark = pytest.mark.anyio

# Cells that need everything at once: a formula start, a comma, a quote, a backslash, CR LF,
# a tab; a full-width formula sign; and a lone backslash at the end of a line.
NASTY = '-2+3,"x"\\y\r\nz\tw'


@pytest.fixture
def fx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043", "JPY": "0.0478"}')
    reset_settings()


@pytest.fixture
def copied(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The templates whose rows went through COPY (the real function, called through)."""
    names: list[str] = []
    for name in ("copy_csv_lines", "copy_sheet_rows"):
        through = getattr(repository, name)

        async def counted(*args: Any, through: Any = through) -> None:
            names.append(args[1].name)
            await through(*args)

        monkeypatch.setattr(repository, name, counted)
    return names


async def _edge_cases(db: Database) -> None:
    """Orders in three currencies, then the stored values only the database can hold made
    awkward directly: older rows without a stored base amount, a rate whose conversion lands
    on half a fen, microseconds, text a spreadsheet would run."""
    cny = await make_order(db, channel="douyin")
    usd = await make_order(db, currency="USD")
    jpy = await make_order(
        db,
        currency="JPY",
        lines=[{"sku": "TEA-LJ-250", "quantity": 3, "unit_price": "1500"}],
    )
    half = await make_order(db, currency="USD")
    odd = await make_order(db, currency="USD")
    statements: list[tuple[str, dict[str, Any]]] = [
        (
            "UPDATE sales_order SET external_id = :nasty, ship_city = 'a,b', ship_district = '',"
            " waybill_nos = :tail, customer_name_masked = '＝1+1',"
            " created_at = '2026-11-20 15:30:00.123456+00', updated_at = '2026-11-01 06:30:00+00'"
            " WHERE id = :id",
            {"nasty": NASTY, "tail": "YT1\\", "id": cny.id},
        ),
        ("UPDATE sales_order SET base_total_minor = NULL WHERE id = :id", {"id": usd.id}),
        ("UPDATE sales_order SET base_total_minor = NULL WHERE id = :id", {"id": jpy.id}),
        # 0.03 USD at 0.5 is 1.5 fen (rounds to 2); 0.01 USD at 0.5 is 0.5 fen (rounds to 0)
        (
            "UPDATE sales_order SET fx_rate = '0.5', base_total_minor = NULL, subtotal_minor = 3,"
            " discount_minor = 0, shipping_minor = 0, tax_minor = 0, fee_minor = 0,"
            " total_minor = 3 WHERE id = :id",
            {"id": half.id},
        ),
        (
            "UPDATE sales_order SET fx_rate = '0.5', base_total_minor = NULL, subtotal_minor = 1,"
            " discount_minor = 0, shipping_minor = 0, tax_minor = 0, fee_minor = 0,"
            " total_minor = 1, created_at = '2026-03-08 07:30:00+00' WHERE id = :id",
            {"id": odd.id},
        ),
    ]
    async with db.transaction() as session:
        for sql, params in statements:
            await session.execute(text(sql), params)


async def _run(db: Database, body: ExportIn, in_database: bool) -> tuple[dict[str, Any], bytes]:
    async with db.transaction() as session:
        queued = await service.request_export(
            session, body, service.Requester("fin-1", "finance", "203.0.113.7")
        )
    claimed = await service.claim(db, queued.export_no)
    assert claimed is not None
    manifest = await service.run_export(db, claimed, render_in_database=in_database)
    content = (service.export_dir() / f"{queued.export_no}.{body.format}").read_bytes()
    if body.format == "xlsx":
        return manifest, content
    return manifest, content.split(b"\r\n\r\n")[1]  # the body: between the watermark and footer


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "UTC"])
@pytest.mark.parametrize(
    "template", ["orders", "order_lines", "payments", "shipments", "order_timelines", "refunds"]
)
@ONLY_PG  # SQLite keeps the Python path
async def test_the_database_renders_the_same_bytes_as_python(
    db: Database, fx: None, copied: list[str], template: str, zone: str
) -> None:
    await _edge_cases(db)
    body = ExportIn(template=template, timezone=zone)
    # When the same export is rendered in Python and by the database
    python, python_body = await _run(db, body, in_database=False)
    assert copied == []
    database, database_body = await _run(db, body, in_database=True)
    # Then the database path was taken, and wrote the same bytes, count and sums
    assert copied == [template]
    assert database_body == python_body
    stable = ("row_count", "sums", "body_sha256")
    assert {k: database[k] for k in stable} == {k: python[k] for k in stable}
    if template == "orders":
        # And the rows hold the cases this test is about
        assert python["row_count"] == 5
        assert b'"\'-2+3,""x""\\y\r\nz\tw"' in python_body  # neutralised, quoted, unescaped
        assert b"'\xef\xbc\x9d1+1" in python_body  # the full-width sign neutralised
        assert b",0.00," in python_body and b",0.02," in python_body  # half-even both ways
        assert b"YT1\\," in python_body
        if zone == "Asia/Shanghai":
            assert b"2026-11-20 23:30:00.123456+08:00,2026-11-20 15:30:00.123456Z" in python_body
        if zone == "America/New_York":  # one order before, one after the March DST change
            assert b"2026-03-08 03:30:00-04:00" in python_body
            assert b"2026-11-01 01:30:00-05:00" in python_body


@pytest.mark.parametrize("writer", ["auto", "rust", "python"])
@pytest.mark.parametrize("template", ["orders", "order_lines", "order_timelines"])
@ONLY_PG  # SQLite keeps the Python path
async def test_xlsx_from_database_lines_has_the_python_paths_cells(
    db: Database,
    fx: None,
    copied: list[str],
    template: str,
    writer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if writer == "rust" and not RUST_XLSX:
        pytest.skip(NO_RUST)
    # Given the XLSX writer chosen by the setting (auto: the sheet rendered by the database and
    # written here; rust: the Rust binding; python: XlsxWriter)
    monkeypatch.setenv("ORDERTALLY_EXPORT_XLSX_WRITER", writer)
    reset_settings()
    await _edge_cases(db)
    body = ExportIn(template=template, format="xlsx", timezone="Asia/Shanghai")
    # When the same XLSX export is rendered in Python and from the database's CSV lines
    python, python_file = await _run(db, body, in_database=False)
    database, database_file = await _run(db, body, in_database=True)
    assert copied == [template]
    # Then the body hash, count and sums are the same, and so is every cell and its number
    # format (below the watermark block, which names each export)
    stable = ("row_count", "sums", "body_sha256")
    assert {k: database[k] for k in stable} == {k: python[k] for k in stable}
    sheets = [
        CalamineWorkbook.from_filelike(io.BytesIO(f)).get_sheet_by_index(0).to_python()[6:-1]
        for f in (python_file, database_file)
    ]
    assert sheets[0] == sheets[1]
    assert len(sheets[0]) == python["row_count"] + 2  # the header row, the blank before the footer
    books = [zipfile.ZipFile(io.BytesIO(f)) for f in (python_file, database_file)]
    styles = [_styles(book) for book in books]
    assert styles[0] == styles[1]
    # And the chosen writer wrote them (the Rust one appends the custom properties part)
    assert [book.namelist()[-1] == "docProps/custom.xml" for book in books] == [
        writer == "rust"
    ] * 2
    if template == "orders":
        assert '\'-2+3,"x"\\y\r\nz\tw' in [c for row in sheets[0] for c in row]
        assert "0" in styles[0].values() and "0.00" in styles[0].values()  # JPY and CNY


def _cells(content: bytes) -> list[list[tuple[Any, str]]]:
    """Every cell's value and number format below the watermark block, as openpyxl reads
    them (a missing cell and an empty one are both None in General)."""
    sheet = openpyxl.load_workbook(io.BytesIO(content)).worksheets[0]
    return [
        [(c.value, c.number_format if c.value is not None else "General") for c in row]
        for row in sheet.iter_rows(min_row=6, max_col=sheet.max_column)
    ]


@pytest.mark.parametrize("template", ["orders", "order_lines", "order_timelines"])
@ONLY_PG  # SQLite keeps the Python path
async def test_the_sheet_rendered_by_the_database_reads_as_xlsxwriters(
    db: Database, fx: None, copied: list[str], template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _edge_cases(db)
    body = ExportIn(template=template, format="xlsx", timezone="Asia/Shanghai")
    # When the same export is written by XlsxWriter and as the sheet the database renders
    files = {}
    for writer in ("python", "auto"):
        monkeypatch.setenv("ORDERTALLY_EXPORT_XLSX_WRITER", writer)
        reset_settings()
        files[writer] = await _run(db, body, in_database=True)
    assert copied == [template, template]
    # Then openpyxl reads the same value and number format in every cell (the watermark
    # block names each export: compared apart), and the manifests' body hashes are equal
    (python, python_file), (sheet, sheet_file) = files["python"], files["auto"]
    assert python["body_sha256"] == sheet["body_sha256"]
    cells = [_cells(f) for f in (python_file, sheet_file)]
    width = max(len(r) for r in cells[0])
    padded = [[[*r, *[(None, "General")] * (width - len(r))][:width] for r in c] for c in cells]
    assert padded[1][:-1] == padded[0][:-1]
    assert padded[1][-1][0][0].startswith("行数 Rows:")
    books = [zipfile.ZipFile(io.BytesIO(f)) for f in (python_file, sheet_file)]
    properties = [_properties(b) for b in books]
    assert properties[0].keys() == properties[1].keys()
    assert [b.testzip() for b in books] == [None, None]
    if template == "orders":
        values = [v for row in cells[1] for v, _ in row]
        # neutralised, escaped and read back (openpyxl leaves Excel's escape of CR as it is)
        assert '\'-2+3,"x"\\y_x000D_\nz\tw' in values
        assert "'＝1+1" in values and "YT1\\" in values
        formats = {f for row in cells[1] for v, f in row if isinstance(v, int | float)}
        assert {"0", "0.00"} <= formats  # JPY and CNY


async def test_more_rows_than_a_sheet_holds_are_refused_clearly(
    db: Database, fx: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sheet that (for the test) holds only two body rows, and three orders
    monkeypatch.setattr(writer_module, "XLSX_MAX_ROWS", writer_module.XLSX_FRAME_ROWS + 2)
    for _ in range(3):
        await make_order(db)
    async with db.transaction() as session:
        queued = await service.request_export(
            session,
            ExportIn(template="orders", format="xlsx"),
            service.Requester("fin-1", "finance", "203.0.113.7"),
        )
    claimed = await service.claim(db, queued.export_no)
    assert claimed is not None
    # When it runs, then it fails with a problem that says why, and writes no file
    with pytest.raises(ExportTooLarge, match="do not fit one XLSX sheet"):
        await service.run_claimed(db, claimed)
    async with db.transaction() as session:
        failed = await service.get_export(session, queued.export_no)
    assert failed.state == "failed" and "CSV" in (failed.error or "")
    assert not (service.export_dir() / f"{queued.export_no}.xlsx").exists()
