"""Platform order files (CSV, XLSX) into canonical orders: templates, reading, validation.

Pure: no database. A template says which header (as the platform exports it, in Chinese) holds
which canonical field, how dates are written and in which time zone, which status words mean
what, and whether the file has one row per line (order id repeated) or one row per order.
`parse_file` streams the rows and yields, in file order, each good order (with the file lines
it came from) and each rejected row with its line number and reason; a rejected row rejects
its whole order, and the order's other rows are reported too.

Reading: CSV in UTF-8, UTF-8 with BOM, UTF-16 with BOM or GB18030 (a superset of GBK, what
Chinese back offices export), comma or tab separated; XLSX through python-calamine, the first
sheet, row by row. Excel's text tricks (`="123"`, a leading apostrophe or tab) are undone.

Rows of one order must be together (exports list them so): an order id that comes back after
another order started is rejected with its rows ("sort the file by order id").
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)
from ordertally.core import money

Cell = str | int | float | bool | datetime | date | time | timedelta | None


class FileError(Exception):
    """The file cannot be imported at all (unreadable, not a known format, columns missing)."""


class Grouping(StrEnum):
    LINE_PER_ROW = "line_per_row"  # one row per order line, order fields repeated
    ORDER_PER_ROW = "order_per_row"  # one row per order (a single line)


# Canonical fields a template may map. Order-level fields are read from an order's first row.
ORDER_FIELDS = (
    "external_id",
    "status",
    "placed_at",
    "paid_at",
    "finished_at",
    "currency",
    "order_discount",
    "shipping",
    "buyer_name",
    "buyer_phone",
    "buyer_platform_id",
    "buyer_email",
    "receiver_name",
    "receiver_phone",
    "province",
    "city",
    "district",
    "street",
    "address",
    "postal_code",
)
LINE_FIELDS = (
    "line_id",
    "sku",
    "sku_fallback",
    "title",
    "quantity",
    "unit_price",
    "line_discount",
    "category",
)
FIELDS = frozenset(ORDER_FIELDS + LINE_FIELDS)

# Status words every Chinese template understands, beside its own.
COMMON_STATUSES: dict[str, PlatformStatus] = {
    "待付款": PlatformStatus.UNPAID,
    "待支付": PlatformStatus.UNPAID,
    "待发货": PlatformStatus.PAID,
    "已付款": PlatformStatus.PAID,
    "已发货": PlatformStatus.SHIPPED,
    "已完成": PlatformStatus.DELIVERED,
    "交易成功": PlatformStatus.DELIVERED,
    "已签收": PlatformStatus.DELIVERED,
    "已关闭": PlatformStatus.CANCELLED,
    "交易关闭": PlatformStatus.CANCELLED,
    "已取消": PlatformStatus.CANCELLED,
    "已退款": PlatformStatus.REFUNDED,
    "退款成功": PlatformStatus.REFUNDED,
}

DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y-%m-%d",
    "%Y/%m/%d",
)


@dataclass(frozen=True, slots=True)
class Template:
    """How one platform's order export maps to canonical orders."""

    name: str
    platform: str  # the platform the orders come from ("" = the account's platform)
    label: str  # for people, in Chinese and English
    columns: dict[str, tuple[str, ...]]  # canonical field -> accepted header texts
    required: frozenset[str]
    statuses: dict[str, PlatformStatus]
    grouping: Grouping = Grouping.LINE_PER_ROW
    timezone: str = "Asia/Shanghai"  # of timestamps written without an offset
    date_formats: tuple[str, ...] = DATE_FORMATS
    currency: str = "CNY"  # when the file has no currency column

    def headers_of(self, fieldname: str) -> tuple[str, ...]:
        return self.columns.get(fieldname, ())


def _statuses(own: dict[str, PlatformStatus]) -> dict[str, PlatformStatus]:
    return {**COMMON_STATUSES, **own}


P = PlatformStatus

# The templates are data: header texts as each platform's back office exports them.
TEMPLATES: dict[str, Template] = {
    # 抖店 (Douyin shop) 订单管理 → 导出 (standard report, one row per 子订单 / sub-order).
    "douyin": Template(
        name="douyin",
        platform="douyin",
        label="抖店订单导出 / Douyin shop order export",
        columns={
            "external_id": ("主订单编号",),
            "line_id": ("子订单编号",),
            "title": ("选购商品", "商品名称"),
            "sku": ("商家编码",),
            "sku_fallback": ("商品ID",),
            "quantity": ("商品数量",),
            "unit_price": ("商品单价",),
            "line_discount": ("商家优惠",),
            "shipping": ("运费",),
            "status": ("订单状态",),
            "placed_at": ("订单提交时间",),
            "paid_at": ("支付完成时间",),
            "finished_at": ("订单完成时间",),
            "receiver_name": ("收件人",),
            "receiver_phone": ("收件人手机号",),
            "province": ("省",),
            "city": ("市",),
            "district": ("区",),
            "street": ("街道",),
            "address": ("详细地址",),
            "category": ("商品类目",),
        },
        required=frozenset(
            {"external_id", "quantity", "unit_price", "status", "placed_at", "receiver_phone"}
        ),
        statuses=_statuses(
            {
                "备货中": P.PAID,
                "待发货": P.PAID,
                "部分发货": P.PAID,
                "已发货": P.SHIPPED,
                "已完成": P.DELIVERED,
                "已关闭": P.CANCELLED,
                "已取消": P.CANCELLED,
            }
        ),
    ),
    # 京东 (JD) 商家后台 订单查询 → 导出 (one row per item of an order).
    "jd": Template(
        name="jd",
        platform="jd",
        label="京东订单导出 / JD order export",
        columns={
            "external_id": ("订单号",),
            "sku": ("商品ID",),
            "title": ("商品名称",),
            "quantity": ("订购数量",),
            "unit_price": ("京东价",),
            "order_discount": ("优惠金额",),
            "shipping": ("运费金额",),
            "status": ("订单状态",),
            "placed_at": ("下单时间",),
            "paid_at": ("付款确认时间",),
            "finished_at": ("订单完成时间",),
            "buyer_platform_id": ("下单帐号", "下单账号"),
            "receiver_name": ("客户姓名",),
            "receiver_phone": ("联系电话",),
            "address": ("客户地址",),
        },
        required=frozenset(
            {"external_id", "sku", "quantity", "unit_price", "status", "placed_at"}
            | {"receiver_phone"}
        ),
        statuses=_statuses(
            {
                "等待付款": P.UNPAID,
                "等待出库": P.PAID,
                "等待发货": P.PAID,
                "等待确认收货": P.SHIPPED,
                "已出库": P.SHIPPED,
                "完成": P.DELIVERED,
                "已完成": P.DELIVERED,
                "(删除)锁定": P.CANCELLED,
                "锁定": P.CANCELLED,
                "取消": P.CANCELLED,
                "已取消": P.CANCELLED,
            }
        ),
    ),
    # 淘宝/天猫 (Taobao/Tmall) 千牛 已卖出的宝贝 → 批量导出: the order report (订单报表) and
    # the item report (宝贝报表) joined on 订单编号, one row per item.
    "taobao": Template(
        name="taobao",
        platform="taobao",
        label="淘宝/天猫订单导出 / Taobao & Tmall order export",
        columns={
            "external_id": ("订单编号",),
            "buyer_platform_id": ("买家会员名",),
            "title": ("标题", "宝贝标题"),
            "sku": ("商家编码",),
            "sku_fallback": ("外部系统编号",),
            "quantity": ("购买数量", "宝贝总数量"),
            "unit_price": ("价格",),
            "shipping": ("买家应付邮费",),
            "order_discount": ("店铺优惠",),
            "status": ("订单状态",),
            "placed_at": ("订单创建时间", "买家下单时间"),
            "paid_at": ("订单付款时间", "买家付款时间"),
            "finished_at": ("确认收货时间",),
            "receiver_name": ("收货人姓名",),
            "receiver_phone": ("联系手机",),
            "address": ("收货地址",),
        },
        required=frozenset(
            {"external_id", "quantity", "unit_price", "status", "placed_at", "receiver_phone"}
        ),
        statuses=_statuses(
            {
                "等待买家付款": P.UNPAID,
                "买家已付款，等待卖家发货": P.PAID,
                "等待卖家发货": P.PAID,
                "买家已付款": P.PAID,
                "卖家已发货，等待买家确认": P.SHIPPED,
                "卖家已发货": P.SHIPPED,
                "等待买家确认收货": P.SHIPPED,
                "交易成功": P.DELIVERED,
                "交易关闭": P.CANCELLED,
                "付款以前，卖家或买家主动关闭交易": P.CANCELLED,
            }
        ),
    ),
    # Our own layout for any other source: Chinese or English headers.
    "generic": Template(
        name="generic",
        platform="",
        label="通用模板 / Generic template",
        columns={
            "external_id": ("订单号", "order_id"),
            "line_id": ("行号", "line_id"),
            "sku": ("商品编码", "sku"),
            "title": ("商品名称", "title"),
            "quantity": ("数量", "quantity"),
            "unit_price": ("单价", "unit_price"),
            "line_discount": ("行优惠", "line_discount"),
            "category": ("类目", "category"),
            "order_discount": ("订单优惠", "order_discount"),
            "shipping": ("运费", "shipping"),
            "currency": ("币种", "currency"),
            "status": ("状态", "status"),
            "placed_at": ("下单时间", "placed_at"),
            "paid_at": ("付款时间", "paid_at"),
            "finished_at": ("完成时间", "finished_at"),
            "buyer_name": ("买家姓名", "buyer_name"),
            "buyer_phone": ("买家手机", "buyer_phone"),
            "buyer_platform_id": ("买家ID", "buyer_id"),
            "buyer_email": ("买家邮箱", "buyer_email"),
            "receiver_name": ("收货人", "receiver_name"),
            "receiver_phone": ("收货电话", "receiver_phone"),
            "province": ("省", "province"),
            "city": ("市", "city"),
            "district": ("区", "district"),
            "address": ("详细地址", "address"),
            "postal_code": ("邮编", "postal_code"),
        },
        required=frozenset({"external_id", "sku", "quantity", "unit_price", "status"})
        | frozenset({"placed_at"}),
        statuses=_statuses({s.value: s for s in PlatformStatus}),
    ),
}


def template_for(name: str) -> Template:
    """A template by name, or FileError."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise FileError(
            f"未知模板 / unknown template {name!r}; choose one of {', '.join(TEMPLATES)}"
        ) from None


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row not imported, with why (the file's 1-based line number; the header is line 1)."""

    line: int
    external_id: str
    reason: str
    cells: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedOrder:
    order: CanonicalOrder
    lines: tuple[int, ...]  # file lines it came from


@dataclass(slots=True)
class ParseStats:
    rows: int = 0  # data rows read (not counting the header and blank rows)
    orders: int = 0  # good orders yielded
    rejected_rows: int = 0


# --- reading -------------------------------------------------------------------------------------


def _decode_check(path: Path, encoding: str) -> bool:
    """Whether the whole file decodes (streamed, so a 100 MB file costs no memory)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def csv_encoding(path: Path) -> str:
    """The file's encoding: a BOM decides; else UTF-8 if all of it decodes, else GB18030."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _decode_check(path, "utf-8"):
        return "utf-8"
    if _decode_check(path, "gb18030"):
        return "gb18030"
    raise FileError("文件编码无法识别 / the file is neither UTF-8 nor GB18030 text")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[Cell]]]:
    encoding = csv_encoding(path)
    with path.open("r", encoding=encoding, newline="") as f:
        sample = f.read(8192)
        f.seek(0)
        first_line = sample.lstrip("\ufeff").split("\n", 1)[0]
        delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
        yield from _read_csv(f, delimiter)


def _read_csv(f: TextIO, delimiter: str) -> Iterator[tuple[int, list[Cell]]]:
    reader = csv.reader(f, delimiter=delimiter)
    line = 1
    try:
        for row in reader:
            yield line, list(row)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise FileError(f"CSV 格式错误 / malformed CSV near line {line}: {exc}") from exc


def _xlsx_rows(path: Path) -> tuple[Iterator[tuple[int, list[Cell]]], int]:
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except (CalamineError, OSError, ValueError) as exc:
        raise FileError(f"无法读取 XLSX / cannot read the XLSX file: {exc}") from exc
    start_row = (sheet.start or (0, 0))[0]

    def rows() -> Iterator[tuple[int, list[Cell]]]:
        # calamine holds the sheet's cells natively; Python objects are made one row at a time.
        try:
            for index, row in enumerate(sheet.iter_rows()):
                yield start_row + index + 1, list(row)
        except (CalamineError, ValueError) as exc:
            raise FileError(f"无法读取 XLSX / cannot read the XLSX file: {exc}") from exc
        finally:
            workbook.close()

    return rows(), max(sheet.height - 1, 0)


def read_rows(path: Path) -> tuple[Iterator[tuple[int, list[Cell]]], int | None]:
    """(line number, cells) of every row of the file, the header first, and the number of data
    rows when the format tells it up front (XLSX) for progress bars."""
    if not path.is_file():
        raise FileError(f"文件不存在 / no such file: {path.name}")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        with path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise FileError("不是 XLSX 文件 / not an XLSX file (zip signature missing)")
        return _xlsx_rows(path)
    if suffix in (".csv", ".txt", ".tsv"):
        return _csv_rows(path), None
    raise FileError(f"不支持的文件类型 / unsupported file type {suffix!r}: use .csv or .xlsx")


# --- cells ---------------------------------------------------------------------------------------

_EXCEL_TEXT = re.compile(r'^="(.*)"$')


def text_of(cell: Cell) -> str:
    """A cell as the text a person sees, without Excel's keep-as-text tricks."""
    if type(cell) is str:
        text = cell.strip()
        if text and text[0] in "'=":
            text = text.lstrip("'\t").strip()
            match = _EXCEL_TEXT.match(text)
            return match.group(1).strip() if match else text
        return text
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float):
        return str(int(cell)) if cell.is_integer() else repr(cell)
    if isinstance(cell, datetime):
        return cell.isoformat(sep=" ")
    return str(cell)


class _RowError(Exception):
    pass


_PLAIN_AMOUNT = re.compile(r"^(\d{1,15})(?:\.(\d{1,4}))?$")


def parse_amount(text: str, currency: str, what: str) -> int:
    """Yuan (or the currency's major unit) as written → minor units; refuses negatives."""
    plain = _PLAIN_AMOUNT.match(text)
    if plain is not None:
        exp = money.exponent(currency)
        whole, frac = plain.group(1), plain.group(2) or ""
        if len(frac) <= exp:
            return int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0)
    cleaned = text.replace(",", "").replace("¥", "").replace("￥", "").replace("元", "").strip()
    if cleaned == "":
        return 0
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise _RowError(f"金额无效 / bad amount in {what}: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise _RowError(f"金额无效 / bad amount in {what}: {text!r}")
    try:
        return money.to_minor(value, currency)
    except money.MoneyError as exc:
        raise _RowError(f"金额无效 / bad amount in {what}: {exc}") from None


def parse_quantity(cell: Cell) -> int:
    text = text_of(cell)
    if text.isdigit() and 0 < len(text) < 7 and text[0] != "0":
        return int(text)
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise _RowError(f"数量无效 / bad quantity: {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise _RowError(f"数量无效 / bad quantity: {text!r}")
    if value <= 0:
        raise _RowError(f"数量必须大于 0 / quantity must be above 0: {text!r}")
    if value > 1_000_000:
        raise _RowError(f"数量过大 / quantity too large: {text!r}")
    return int(value)


def parse_time(cell: Cell, template: Template, tz: ZoneInfo, what: str) -> datetime | None:
    """A timestamp as written (local time of the template's zone unless it has an offset),
    converted to aware UTC; None when empty."""
    if isinstance(cell, datetime):
        value = cell
    elif isinstance(cell, date):
        value = datetime.combine(cell, time())
    else:
        text = text_of(cell)
        if text in ("", "-", "0000-00-00 00:00:00"):
            return None
        value = _parse_text_time(text, template.date_formats, what)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(ZoneInfo("UTC"))


_PLAIN_TIME = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _parse_text_time(text: str, formats: Sequence[str], what: str) -> datetime:
    plain = _PLAIN_TIME.match(text)
    if plain is not None:
        try:
            y, mo, d, hh, mi, ss = (int(g) for g in plain.groups(default="0"))
            return datetime(y, mo, d, hh, mi, ss)
        except ValueError:
            raise _RowError(f"日期无效 / bad date in {what}: {text!r}") from None
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _RowError(f"日期无效 / bad date in {what}: {text!r}") from None


_REGION = re.compile(
    r"^(.+?(?:省|自治区|特别行政区|市))(.+?(?:自治州|地区|盟|市))?(.+?(?:区|县|旗|市))?(.*)$"
)
_MUNICIPALITIES = ("北京", "上海", "天津", "重庆")


def split_address(text: str) -> tuple[str, str, str, str]:
    """(province, city, district, rest) of a one-column Chinese address.

    Exports write it space-separated ("浙江省 杭州市 西湖区 文三路 1 号"); without spaces the
    administrative suffixes (省/市/区/县...) split it.
    """
    parts = text.split()
    if len(parts) >= 4:
        province, city, district = parts[0], parts[1], parts[2]
        return province, city, district, " ".join(parts[3:])
    match = _REGION.match(text.replace(" ", ""))
    if not match:
        return "", "", "", text
    province, city, district, rest = (g or "" for g in match.groups())
    if province.startswith(_MUNICIPALITIES) and province.endswith("市") and not city:
        city = province
    return province, city, district, rest


# --- the parser ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    line: int
    cells: list[Cell]
    texts: list[str]  # the cells as text, computed once
    external_id: str


@dataclass(slots=True)
class _Group:
    external_id: str
    rows: list[_Row] = field(default_factory=list)


class Header:
    """Where each canonical field sits in the file's header."""

    def __init__(self, template: Template, header: Sequence[Cell]) -> None:
        names = [text_of(h).lstrip("\ufeff") for h in header]
        self.names = names
        position = {name: i for i, name in reversed(list(enumerate(names))) if name}
        self.index: dict[str, int] = {}
        for fieldname, accepted in template.columns.items():
            for text in accepted:
                if text in position:
                    self.index[fieldname] = position[text]
                    break
        missing = sorted(template.required - self.index.keys())
        if missing:
            wanted = ", ".join(f"{m} ({'/'.join(template.headers_of(m))})" for m in missing)
            raise FileError(
                f"缺少必需的列 / required columns missing for template {template.name}: {wanted}"
            )

    def get(self, cells: Sequence[Cell], fieldname: str) -> Cell:
        i = self.index.get(fieldname)
        if i is None or i >= len(cells):
            return None
        return cells[i]

    def text(self, texts: Sequence[str], fieldname: str) -> str:
        i = self.index.get(fieldname)
        if i is None or i >= len(texts):
            return ""
        return texts[i]


def detect_template(header: Sequence[Cell], platform: str | None = None) -> Template:
    """The template whose required columns the header has (the platform's own first)."""
    order = sorted(TEMPLATES.values(), key=lambda t: (t.platform != platform, t.name == "generic"))
    for template in order:
        try:
            Header(template, header)
        except FileError:
            continue
        return template
    raise FileError("无法识别文件格式 / no template matches this file's columns; use --template")


class FileParser:
    """Turns rows into canonical orders; `run` yields ParsedOrder and Rejected in file order."""

    def __init__(self, template: Template, platform: str) -> None:
        self.template = template
        self.platform = template.platform or platform
        self.tz = ZoneInfo(template.timezone)
        self.stats = ParseStats()
        self.total_rows: int | None = None  # data rows, when the format says up front
        self._header: Header | None = None

    @property
    def header_names(self) -> list[str]:
        """The file's header texts (for the error report)."""
        return self._header.names if self._header is not None else []

    def run(self, rows: Iterable[tuple[int, list[Cell]]]) -> Iterator[ParsedOrder | Rejected]:
        iterator = iter(rows)
        header = self._header
        for _line, cells in iterator:
            if any(text_of(c) for c in cells):
                header = self._header = Header(self.template, cells)
                break
        if header is None:
            raise FileError("文件为空 / the file has no header row")
        seen: dict[str, int] = {}  # external id -> first line, of orders already closed
        group: _Group | None = None
        for line, cells in iterator:
            texts = [text_of(c) for c in cells]
            if not any(texts):
                continue
            self.stats.rows += 1
            external_id = header.text(texts, "external_id")
            row = _Row(line, cells, texts, external_id)
            if not external_id:
                yield self._reject(row, "缺少订单号 / missing order id")
                continue
            if group is not None and external_id == group.external_id:
                if self.template.grouping is Grouping.ORDER_PER_ROW:
                    yield self._reject(
                        row, f"订单号重复 / order id repeated (first on line {group.rows[0].line})"
                    )
                    continue
                group.rows.append(row)
                continue
            if group is not None:
                seen[group.external_id] = group.rows[0].line
                yield from self._finish(group)
                group = None
            if external_id in seen:
                yield self._reject(
                    row,
                    f"订单的行不连续 / rows of this order are not together (first on line "
                    f"{seen[external_id]}); sort the file by order id",
                )
                continue
            group = _Group(external_id, [row])
        if group is not None:
            yield from self._finish(group)

    def _reject(self, row: _Row, reason: str) -> Rejected:
        self.stats.rejected_rows += 1
        return Rejected(row.line, row.external_id, reason, tuple(row.texts))

    def _finish(self, group: _Group) -> Iterator[ParsedOrder | Rejected]:
        try:
            order = self._build(group)
        except _GroupError as exc:
            for row in group.rows:
                reason = exc.reasons.get(row.line) or (
                    f"同一订单的其他行有错误 / another row of this order was rejected "
                    f"(line {min(exc.reasons)})"
                )
                yield self._reject(row, reason)
            return
        self.stats.orders += 1
        yield ParsedOrder(order, tuple(r.line for r in group.rows))

    def _build(self, group: _Group) -> CanonicalOrder:
        assert self._header is not None
        h = self._header
        t = self.template
        first = group.rows[0].texts
        reasons: dict[int, str] = {}

        currencies: dict[int, str] = {}
        for row in group.rows:
            code = h.text(row.texts, "currency").upper() or t.currency
            currencies[row.line] = code
        currency = currencies[group.rows[0].line]
        if len(set(currencies.values())) > 1:
            for row in group.rows:
                reasons[row.line] = (
                    f"同一订单币种不一致 / mixed currencies within the order: "
                    f"{', '.join(sorted(set(currencies.values())))}"
                )
            raise _GroupError(reasons)
        try:
            money.check_currency(currency)
        except money.MoneyError:
            raise _GroupError(
                {r.line: f"未知币种 / unknown currency {currency!r}" for r in group.rows}
            ) from None

        lines: list[CanonicalLine] = []
        for row in group.rows:
            try:
                lines.append(self._line(row, currency))
            except _RowError as exc:
                reasons[row.line] = str(exc)
        try:
            header_values = self._order_fields(group.rows[0], currency)
        except _RowError as exc:
            line = group.rows[0].line
            reasons[line] = "; ".join(r for r in (reasons.get(line), str(exc)) if r)
        if reasons:
            raise _GroupError(reasons)
        status, placed_at, paid_at, updated_at, discount, shipping = header_values
        subtotal = sum(line.unit_price_minor * line.quantity for line in lines)
        line_discounts = sum(line.discount_minor for line in lines)
        if discount + line_discounts > subtotal:
            raise _GroupError(
                {
                    group.rows[0].line: "优惠超过商品金额 / discounts exceed the order's subtotal",
                    **{r.line: "" for r in group.rows[1:]},
                }
            )
        receiver_name = h.text(first, "receiver_name") or h.text(first, "buyer_name")
        receiver_phone = h.text(first, "receiver_phone") or h.text(first, "buyer_phone")
        buyer_phone = h.text(first, "buyer_phone") or receiver_phone
        if not buyer_phone:
            raise _GroupError(
                {
                    group.rows[0].line: "缺少手机号 / missing phone",
                    **{r.line: "" for r in group.rows[1:]},
                }
            )
        province = h.text(first, "province")
        city = h.text(first, "city")
        district = h.text(first, "district")
        street = " ".join(p for p in (h.text(first, "street"), h.text(first, "address")) if p)
        if not province and street:
            province, city, district, street = split_address(street)
        raw = {
            "file": {"template": t.name, "lines": [r.line for r in group.rows]},
            "rows": [
                {name: text for name, text in zip(h.names, r.texts, strict=False) if name and text}
                for r in group.rows
            ],
        }
        return CanonicalOrder(
            platform=self.platform,
            external_id=group.external_id,
            status=status,
            currency=currency,
            lines=tuple(lines),
            buyer_name=h.text(first, "buyer_name") or receiver_name,
            buyer_phone=buyer_phone,
            address=CanonicalAddress(
                name=receiver_name,
                phone=receiver_phone or buyer_phone,
                province=province,
                city=city,
                district=district,
                line1=street,
                postal_code=h.text(first, "postal_code"),
            ),
            placed_at=placed_at,
            updated_at=updated_at,
            paid_at=paid_at,
            discount_minor=discount,
            shipping_minor=shipping,
            buyer_platform_id=h.text(first, "buyer_platform_id"),
            buyer_email=h.text(first, "buyer_email"),
            raw=raw,
        )

    def _line(self, row: _Row, currency: str) -> CanonicalLine:
        h = self._header
        assert h is not None
        sku = h.text(row.texts, "sku") or h.text(row.texts, "sku_fallback")
        if not sku:
            raise _RowError("缺少商品编码 / missing SKU")
        quantity = parse_quantity(h.get(row.cells, "quantity"))
        price = parse_amount(h.text(row.texts, "unit_price"), currency, "unit price")
        discount = parse_amount(h.text(row.texts, "line_discount"), currency, "line discount")
        if discount > price * quantity:
            raise _RowError("行优惠超过行金额 / line discount exceeds the line amount")
        return CanonicalLine(
            platform_sku=sku,
            quantity=quantity,
            unit_price_minor=price,
            title=h.text(row.texts, "title"),
            discount_minor=discount,
            category=h.text(row.texts, "category"),
        )

    def _order_fields(
        self, row: _Row, currency: str
    ) -> tuple[PlatformStatus, datetime, datetime | None, datetime, int, int]:
        h = self._header
        assert h is not None
        cells, texts = row.cells, row.texts
        word = h.text(texts, "status")
        status = self.template.statuses.get(word)
        if status is None:
            raise _RowError(f"未知订单状态 / unknown status {word!r}")
        placed_at = parse_time(h.get(cells, "placed_at"), self.template, self.tz, "placed at")
        if placed_at is None:
            raise _RowError("缺少下单时间 / missing order time")
        paid_at = parse_time(h.get(cells, "paid_at"), self.template, self.tz, "paid at")
        finished_at = parse_time(h.get(cells, "finished_at"), self.template, self.tz, "finished")
        updated_at = max(t for t in (placed_at, paid_at, finished_at) if t is not None)
        discount = parse_amount(h.text(texts, "order_discount"), currency, "order discount")
        shipping = parse_amount(h.text(texts, "shipping"), currency, "shipping")
        return status, placed_at, paid_at, updated_at, discount, shipping


class _GroupError(Exception):
    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__("order rejected")
        self.reasons = reasons


def parse_file(
    path: Path, template: Template | None, platform: str
) -> tuple[FileParser, Iterator[ParsedOrder | Rejected]]:
    """Open a file and return its parser (stats, chosen template) and the stream of results.
    A file that cannot be read or whose columns do not fit raises FileError at once."""
    rows, total = read_rows(path)
    first: list[tuple[int, list[Cell]]] = []
    for line, cells in rows:
        first.append((line, cells))
        if any(text_of(c) for c in cells):
            break
    if not first or not any(text_of(c) for c in first[-1][1]):
        raise FileError("文件为空 / the file has no header row")
    chosen = template or detect_template(first[-1][1], platform)
    Header(chosen, first[-1][1])  # fail now, before anything is imported
    parser = FileParser(chosen, platform)
    parser.total_rows = total

    def chained() -> Iterator[tuple[int, list[Cell]]]:
        yield from first
        yield from rows

    return parser, parser.run(chained())


# --- the error report ----------------------------------------------------------------------------

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
