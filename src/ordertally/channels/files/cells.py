"""Cells into values: text without Excel's keep-as-text tricks (`="123"`, a leading apostrophe
or tab), amounts in minor units, quantities, timestamps in UTC, one-column Chinese addresses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from ordertally.channels.files.errors import RowError
from ordertally.channels.files.reading import Cell
from ordertally.channels.files.templates import Template
from ordertally.core import money

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
        raise RowError(f"金额无效 / bad amount in {what}: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise RowError(f"金额无效 / bad amount in {what}: {text!r}")
    try:
        return money.to_minor(value, currency)
    except money.MoneyError as exc:
        raise RowError(f"金额无效 / bad amount in {what}: {exc}") from None


def parse_quantity(cell: Cell) -> int:
    """A whole, positive quantity (at most a million) as written."""
    text = text_of(cell)
    if text.isdigit() and 0 < len(text) < 7 and text[0] != "0":
        return int(text)
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise RowError(f"数量无效 / bad quantity: {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise RowError(f"数量无效 / bad quantity: {text!r}")
    if value <= 0:
        raise RowError(f"数量必须大于 0 / quantity must be above 0: {text!r}")
    if value > 1_000_000:
        raise RowError(f"数量过大 / quantity too large: {text!r}")
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
            raise RowError(f"日期无效 / bad date in {what}: {text!r}") from None
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"日期无效 / bad date in {what}: {text!r}") from None


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
