"""Shipped lists: the CSV or XLSX a warehouse that works from files sends back (order, carrier
company, waybill number per row). Parsed here, applied row by row by the service, each row in a
savepoint so one bad row never takes the others down."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from python_calamine import CalamineWorkbook

from ordertally.fulfillment.errors import ShipListInvalid

# Accepted header texts (case and spaces ignored) for each field.
HEADERS: dict[str, tuple[str, ...]] = {
    "order_no": ("order_no", "order", "订单号", "订单编号", "系统订单号"),
    "shipment_id": ("shipment_id", "shipment", "发货单号", "包裹号"),
    "company": ("company", "carrier", "快递公司", "物流公司", "快递公司编码"),
    "waybill_no": ("waybill_no", "waybill", "tracking_no", "运单号", "快递单号", "物流单号"),
}
XLSX_MAGIC = b"PK\x03\x04"
MAX_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class ShipRow:
    line: int  # the row's line number in the file (header = 1)
    order_no: str
    shipment_id: int | None
    company: str
    waybill_no: str


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    code: str
    message: str


def _norm(header: object) -> str:
    return str(header or "").strip().lower().replace(" ", "").replace("\ufeff", "")


def _cell(value: object) -> str:
    """A spreadsheet cell as text; a waybill typed as a number is a float to Excel (no ".0")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rows(data: bytes) -> list[list[str]]:
    if data.startswith(XLSX_MAGIC):
        try:
            book = CalamineWorkbook.from_filelike(io.BytesIO(data))
            sheet = book.get_sheet_by_index(0)
            return [[_cell(cell) for cell in row] for row in sheet.to_python(skip_empty_area=False)]
        except Exception as exc:  # calamine raises its own error types
            raise ShipListInvalid(f"not a readable XLSX file: {exc}") from exc
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string
        raise ShipListInvalid("the file is neither UTF-8 nor GB18030 text")
    reader = csv.reader(io.StringIO(text))
    rows: list[list[str]] = []
    try:
        for row in reader:
            rows.append([cell.strip() for cell in row])
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise ShipListInvalid(
            f"malformed CSV near line {reader.line_num}: {exc}", line=reader.line_num
        ) from exc
    return rows


def parse(data: bytes) -> tuple[list[ShipRow], list[RowError]]:
    """Rows to ship and rows refused, with their line numbers."""
    table = _rows(data)
    if not table:
        raise ShipListInvalid("the file is empty")
    header = [_norm(h) for h in table[0]]
    columns: dict[str, int] = {}
    for field, names in HEADERS.items():
        for name in names:
            if _norm(name) in header:
                columns[field] = header.index(_norm(name))
                break
    missing = [f for f in ("order_no", "waybill_no") if f not in columns]
    if missing:
        raise ShipListInvalid(
            f"missing column(s): {', '.join(missing)}", missing=missing, accepted=HEADERS
        )
    if len(table) - 1 > MAX_ROWS:
        raise ShipListInvalid(f"more than {MAX_ROWS} rows; split the file")

    def cell(row: list[str], field: str) -> str:
        index = columns.get(field)
        return row[index].strip() if index is not None and index < len(row) else ""

    good: list[ShipRow] = []
    bad: list[RowError] = []
    for number, row in enumerate(table[1:], start=2):
        if not any(row):
            continue
        order_no, waybill = cell(row, "order_no"), cell(row, "waybill_no")
        if not order_no:
            bad.append(RowError(number, "order_missing", "no order number"))
            continue
        if not waybill or len(waybill) > 64 or not waybill.replace("-", "").isalnum():
            bad.append(RowError(number, "waybill_invalid", f"bad waybill number {waybill!r}"))
            continue
        raw_id = cell(row, "shipment_id")
        shipment_id: int | None = None
        if raw_id:
            try:
                shipment_id = int(float(raw_id))
            except ValueError:
                bad.append(RowError(number, "shipment_invalid", f"bad shipment id {raw_id!r}"))
                continue
        company = cell(row, "company").lower()
        if company and (len(company) > 32 or not company.replace("_", "").isalnum()):
            bad.append(RowError(number, "company_invalid", f"bad company code {company!r}"))
            continue
        good.append(ShipRow(number, order_no, shipment_id, company, waybill))
    return good, bad
