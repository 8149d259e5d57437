"""What a template and its columns are, and how a column turns selected values into cells.

A column reads one or more SQL expressions (model attributes, never statements: those are
built in `exports/repository.py`) and renders them with the export's context: the merchant
time zone chosen for the export and whether personal data may be shown in clear.

Most columns can also render their CSV cell in PostgreSQL (`Column.sql`): the same text the
Python renderer and the CSV writer produce (the currency's digits, the zone's offset, the
formula neutraliser, CSV quoting), byte for byte, so a large CSV export is formatted by the
database and streamed through `COPY … TO STDOUT` (ADR 0036 addendum). The session's time
zone is the export's zone while that statement runs. A column without one (JSON, decrypted
personal data) sends its export down the Python path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from babel.numbers import get_currency_precision, list_currencies
from sqlalchemy import Integer, String, Text, case, cast, func, literal, or_
from sqlalchemy.types import Numeric

from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.money import convert_minor, from_minor
from ordertally.core.spreadsheet import FORMULA_START

Cell = str | int | Decimal | None


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What rendering a row depends on besides the row."""

    timezone: ZoneInfo
    unmask_pii: bool


Render = Callable[[Sequence[Any], RenderContext], Cell]
# A column's CSV cell as PostgreSQL text (None for an empty cell) from the expressions it reads.
SqlRender = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a file: its key (for custom templates), its headers and how it renders."""

    key: str
    header_zh: str
    header_en: str
    reads: tuple[Any, ...]
    render: Render
    pii: bool = False
    sql: SqlRender | None = None  # None: rendered in Python only
    kind: str = "text"  # what its SQL-rendered text is in a spreadsheet: text, money or int
    # Free text: its cell before CSV quoting (neutralised), which `sql` quotes; the XLSX sheet
    # escapes it for XML. None: `sql` is already the value (numbers, times, days, flags).
    sql_value: SqlRender | None = None
    # An amount's currency (read by the XLSX sheet: the cell's format has its digits).
    currency: Any = None

    def header(self, timezone: str) -> str:
        """The header cell: both languages, and the zone for local times."""
        return f"{self.header_zh} {self.header_en}".replace("{tz}", timezone)


@dataclass(frozen=True, slots=True)
class Template:
    """A built-in export: the rows it reads, its columns, filters and summed amount."""

    name: str
    title_zh: str
    title_en: str
    root: Any
    key: Any  # a unique column: the rows' order, so a re-run writes the same bytes
    time: Any  # the timestamp date_from/date_to filter on (merchant-local days)
    columns: tuple[Column, ...]
    joins: tuple[tuple[Any, Any], ...] = ()
    filters: dict[str, Any] = field(default_factory=dict)
    # (minor units, currency) summed per currency into the manifest; None: nothing to sum.
    amount: tuple[Any, Any] | None = None

    def column(self, key: str) -> Column | None:
        """The column with this key, if the template has it."""
        return next((c for c in self.columns if c.key == key), None)


TEMPLATES: dict[str, Template] = {}


def register(template: Template) -> Template:
    """Add a template to the registry (its name must be new)."""
    if template.name in TEMPLATES and TEMPLATES[template.name] is not template:
        raise ValueError(f"export template {template.name!r} is registered twice")
    TEMPLATES[template.name] = template
    return template


# --- column builders --------------------------------------------------------------------------


# --- the same cells rendered in PostgreSQL ---------------------------------------------------


def sql_safe(expr: Any) -> Any:
    """A text cell neutralised (`_text`'s leading `'`), not yet quoted."""
    return case(
        (func.left(expr, 1).in_(FORMULA_START), literal("'") + expr),
        else_=expr,
    )


def sql_quote(safe: Any, raw: Any = None) -> Any:
    """A neutralised text cell quoted when it holds a comma, a quote or a line break (the csv
    module's minimal quoting). `raw`: the text before neutralising, tested instead of `safe`
    (the same characters, without evaluating the neutraliser four more times)."""
    probe = safe if raw is None else raw
    return case(
        (
            or_(
                func.strpos(probe, ",") > 0,
                func.strpos(probe, '"') > 0,
                func.strpos(probe, "\n") > 0,
                func.strpos(probe, "\r") > 0,
            ),
            literal('"') + func.replace(safe, '"', '""') + literal('"'),
        ),
        else_=safe,
    )


def sql_text(expr: Any) -> Any:
    """A text cell as the CSV writer writes it: neutralised, then quoted when it must be."""
    return sql_quote(sql_safe(expr), expr)


@functools.cache
def _digits() -> dict[int, tuple[str, ...]]:
    """ISO-4217 codes by their number of digits, those other than 2 (`money.exponent`)."""
    out: dict[int, list[str]] = {}
    for code in sorted(list_currencies()):
        digits = int(get_currency_precision(code))
        if digits != 2:
            out.setdefault(digits, []).append(code)
    return {d: tuple(codes) for d, codes in out.items()}


@functools.cache
def _not_two() -> tuple[str, ...]:
    return tuple(sorted(code for codes in _digits().values() for code in codes))


def sql_from_minor(minor: Any, currency: Any) -> Any:
    """`str(from_minor(minor, currency))`: minor units times 10^-digits, an exact numeric whose
    scale is the currency's digits (0.01 has scale 2, so 1990 * 0.01 is 19.90)."""
    amount = cast(minor, Numeric)
    return cast(
        case(
            # Two digits first: one lookup for most rows (about a third less CPU than the
            # other digits' lists tried first, measured on 200,000 orders).
            (currency.not_in(_not_two()), amount * literal("0.01", Numeric)),
            *(
                (currency.in_(codes), amount * literal(f"{Decimal(1).scaleb(-d):f}", Numeric))
                for d, codes in sorted(_digits().items())
            ),
        ),
        Text,
    )


def _half_even(value: Any) -> Any:
    """ROUND_HALF_EVEN to an integer (PostgreSQL's round() takes halves away from zero)."""
    low = func.floor(value)
    return case(
        (value - low == literal("0.5", Numeric), low + func.abs(func.mod(low, 2))),
        else_=func.round(value),
    )


def sql_local(expr: Any) -> Any:
    """`_local`: ISO time in the session's zone (the export's) with its offset, microseconds
    only when there are any (as `isoformat` writes them)."""
    return func.replace(func.to_char(expr, "YYYY-MM-DD HH24:MI:SS.USTZH:TZM"), ".000000", "")


def sql_utc(expr: Any) -> Any:
    """`_utc`: ISO time in UTC ending in Z."""
    naive = func.timezone("UTC", expr)
    return func.replace(func.to_char(naive, "YYYY-MM-DD HH24:MI:SS.US"), ".000000", "") + "Z"


def _is_text(expr: Any) -> bool:
    return isinstance(getattr(expr, "type", None), String)


def text(key: str, zh: str, en: str, expr: Any) -> Column:
    """A text (or integer) column read as it is stored."""
    sql: SqlRender | None = None
    value: SqlRender | None = None
    kind = "text"
    if _is_text(expr):
        sql = lambda v: sql_text(v[0])  # noqa: E731
        value = lambda v: sql_safe(v[0])  # noqa: E731
    elif isinstance(getattr(expr, "type", None), Integer):
        sql = lambda v: cast(v[0], Text)  # noqa: E731
        kind = "int"
    return Column(key, zh, en, (expr,), lambda v, _: v[0], sql=sql, kind=kind, sql_value=value)


def flag(key: str, zh: str, en: str, expr: Any) -> Column:
    """A boolean column written as 1/0."""
    return Column(
        key,
        zh,
        en,
        (expr,),
        lambda v, _: None if v[0] is None else int(bool(v[0])),
        sql=lambda v: case((v[0].is_(None), None), (v[0], "1"), else_="0"),
        kind="int",
    )


def json_text(key: str, zh: str, en: str, expr: Any) -> Column:
    """A JSON document written as compact, key-sorted JSON text."""
    return Column(
        key,
        zh,
        en,
        (expr,),
        lambda v, _: (
            orjson.dumps(v[0], option=orjson.OPT_SORT_KEYS).decode() if v[0] is not None else None
        ),
    )


def money(key: str, zh: str, en: str, minor: Any, currency: Any) -> Column:
    """An amount as a Decimal with its currency's digits (never a float)."""
    return Column(
        key,
        zh,
        en,
        (minor, currency),
        lambda v, _: None if v[0] is None else from_minor(v[0], v[1]),
        sql=lambda v: sql_from_minor(v[0], v[1]),
        kind="money",
        currency=currency,
    )


def base_money(
    key: str, zh: str, en: str, base_minor: Any, minor: Any, currency: Any, rate: Any, base: Any
) -> Column:
    """The base-currency amount at the rate locked on the row (stored, or converted at it)."""

    def render(v: Sequence[Any], _: RenderContext) -> Cell:
        base_value, amount, cur, fx, base_cur = v
        if base_value is None:
            if amount is None or not fx:
                return None
            base_value = amount if cur == base_cur else convert_minor(amount, cur, fx, base_cur)
        return from_minor(base_value, base_cur)

    def sql(v: Sequence[Any]) -> Any:
        base_value, amount, cur, fx, base_cur = v
        converted = _half_even(
            cast(sql_from_minor(amount, cur), Numeric)
            * cast(fx, Numeric)
            * cast(func.power(literal(10, Numeric), _sql_digits(base_cur)), Numeric)
        )
        value = case(
            (base_value.is_not(None), base_value),
            (or_(amount.is_(None), fx.is_(None), fx == ""), None),
            (cur == base_cur, amount),
            else_=cast(converted, base_value.type),
        )
        return sql_from_minor(value, base_cur)

    return Column(
        key,
        zh,
        en,
        (base_minor, minor, currency, rate, base),
        render,
        sql=sql,
        kind="money",
        currency=base,
    )


def _sql_digits(currency: Any) -> Any:
    """The currency's digits as an integer expression."""
    return case(
        (currency.not_in(_not_two()), literal(2)),
        *((currency.in_(codes), literal(d)) for d, codes in sorted(_digits().items())),
    )


def _local(value: datetime | None, ctx: RenderContext) -> str | None:
    if value is None:
        return None
    return clock.as_utc(value).astimezone(ctx.timezone).isoformat(sep=" ")


def _utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return clock.as_utc(value).isoformat(sep=" ").replace("+00:00", "Z")


def times(key: str, zh: str, en: str, expr: Any) -> tuple[Column, Column]:
    """A timestamp as two columns: merchant-local with its offset (the zone in the header),
    and UTC."""
    return (
        Column(
            f"{key}_local",
            f"{zh}({{tz}})",
            f"{en} ({{tz}})",
            (expr,),
            lambda v, c: _local(v[0], c),
            sql=lambda v: sql_local(v[0]),
        ),
        Column(
            f"{key}_utc",
            f"{zh}(UTC)",
            f"{en} (UTC)",
            (expr,),
            lambda v, _: _utc(v[0]),
            sql=lambda v: sql_utc(v[0]),
        ),
    )


def local_date(key: str, zh: str, en: str, expr: Any) -> Column:
    """The merchant-local business day of a timestamp."""

    def render(v: Sequence[Any], ctx: RenderContext) -> Cell:
        if v[0] is None:
            return None
        return clock.as_utc(v[0]).astimezone(ctx.timezone).date().isoformat()

    return Column(
        key,
        f"{zh}({{tz}})",
        f"{en} ({{tz}})",
        (expr,),
        render,
        sql=lambda v: func.to_char(v[0], "YYYY-MM-DD"),
    )


def pii(key: str, zh: str, en: str, masked: Any, encrypted: Any, purpose: str) -> Column:
    """Personal data: the stored mask, or the decrypted value for a role that may see it."""

    def render(v: Sequence[Any], ctx: RenderContext) -> Cell:
        if ctx.unmask_pii and v[1]:
            return get_cipher().decrypt(v[1], purpose)
        return v[0]

    # In SQL only as the stored mask: a clear value needs the cipher (the Python path).
    return Column(
        key,
        zh,
        en,
        (masked, encrypted),
        render,
        pii=True,
        sql=lambda v: sql_text(v[0]) if _is_text(masked) else None,
        sql_value=lambda v: sql_safe(v[0]) if _is_text(masked) else None,
    )


def address(
    key: str, zh: str, en: str, parts: tuple[Any, ...], encrypted: Any, purpose: str
) -> Column:
    """A shipping address: province/city/district in clear, the street only for a role that may
    see personal data."""

    def render(v: Sequence[Any], ctx: RenderContext) -> Cell:
        region = " ".join(p for p in v[:-1] if p)
        if not (ctx.unmask_pii and v[-1]):
            return region
        doc = orjson.loads(get_cipher().decrypt(v[-1], purpose))
        street = " ".join(str(doc.get(k) or "") for k in ("line1", "line2") if doc.get(k))
        return f"{region} {street}".strip()

    def value(v: Sequence[Any]) -> Any:
        # " ".join(p for p in parts if p): concat_ws skips NULLs, NULLIF turns "" into one.
        return sql_safe(func.concat_ws(" ", *(func.nullif(p, "") for p in v[:-1])))

    # In SQL only as the region: the street needs the cipher (the Python path).
    return Column(
        key,
        zh,
        en,
        (*parts, encrypted),
        render,
        pii=True,
        sql=lambda v: sql_text(func.concat_ws(" ", *(func.nullif(p, "") for p in v[:-1]))),
        sql_value=value,
    )


# --- the same cells as SpreadsheetML (the XLSX sheet rendered by PostgreSQL) -----------------

# Excel's longest cell text; a longer one is cut there (as XlsxWriter does).
XLSX_MAX_CHARS = 32_767
# Style indexes of the XLSX writer's `styles.xml`: 0 General, 1 + d a number with d digits.
XLSX_MONEY_STYLE = 1
# White space that makes a cell need xml:space="preserve" at either end (Python's `\s`).
_SPACES = "\\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = [c for c in range(1, 32) if c not in (9, 10)]


def _const(text: str) -> Any:
    """A text constant written into the statement (not a parameter: a row has hundreds of them,
    more than a statement's parameters may be)."""
    return literal(text, Text, literal_execute=True)  # rendered inline when compiled


# A row's free text, joined by spaces, holds something to escape: markup, a backslash, tab or
# line break (COPY would escape those), a control character (`_xHHHH_`, and `_xHHHH_` itself),
# white space at either end of a cell (two spaces in a row, or at either end), or what a CSV
# cell is quoted for (a comma, a quote, CR, LF). Tested once per row: a row without any
# (nearly every row) is written without escaping or quoting.
_ROW_SPECIAL = (
    f'[&<>\\\\\x01-\x1f,"]|_x[0-9A-Fa-f]{{4}}_|^[{_SPACES}]|[{_SPACES}]$|[{_SPACES}]{{2}}'
)


def _xml_escape(value: Any) -> Any:
    """Text as XML character data, the way XlsxWriter and rust_xlsxwriter write it: `_xHHHH_`
    for control characters (and for `_xHHHH_` already in the text), entities for markup;
    tab, LF and backslash as character references (the same characters to an XML reader,
    none of them escaped again by COPY)."""
    out = func.regexp_replace(
        value, _const("(_x[0-9A-Fa-f]{4}_)"), _const("_x005F\\1"), _const("g")
    )
    for char, entity in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("\\", "&#92;"),
        ("\t", "&#9;"),
        ("\n", "&#10;"),
    ):
        out = func.replace(out, _const(char), _const(entity))
    for code in _CONTROL:
        out = func.replace(out, _const(chr(code)), _const(f"_x{code:04X}_"))
    return out


def never_null(column: Column, root: Any) -> bool:
    """Whether a column's SQL value is never NULL: everything it reads is a NOT NULL column of
    the template's own table (a joined table's may be missing: joins are outer). Free text may
    still be empty."""
    table = root.__table__
    for expr in column.reads:
        col = getattr(expr, "expression", expr)
        if getattr(col, "table", None) is not table or getattr(col, "nullable", True):
            return False
    return True


# A row's parts: constant text (merged with its neighbours) or SQL text expressions.
Parts = list[Any]


def _when(value: Any, then: str, otherwise: str | None = None) -> Any:
    return case((value != _const(""), _const(then)), else_=_const(otherwise) if otherwise else None)


def _xml_text(value: Any, escape: bool, present: bool) -> Parts:
    """An inline-string cell (`<c/>` when empty): escaped (free text in a row that needs it),
    or as it is."""
    if present:
        return ['<c t="inlineStr"><is><t>', value, "</t></is></c>"]
    if not escape:
        opening = _when(value, '<c t="inlineStr"><is><t>', "<c/>")
        return [opening, value, _when(value, "</t></is></c>")]
    cut = func.left(value, literal(XLSX_MAX_CHARS, Integer, literal_execute=True))
    opening = case(
        (value == _const(""), _const("<c/>")),
        (
            cut.op("~")(_const(f"^[{_SPACES}]|[{_SPACES}]$")),
            _const('<c t="inlineStr"><is><t xml:space="preserve">'),
        ),
        (value.is_not(None), _const('<c t="inlineStr"><is><t>')),
        else_=_const("<c/>"),
    )
    return [opening, _xml_escape(cut), _when(value, "</t></is></c>")]


def sql_style(currency: Any) -> Any:
    """The XLSX style index (text) of an amount in this currency: a number with its digits."""
    return case(
        (currency.not_in(_not_two()), _const(str(XLSX_MONEY_STYLE + 2))),
        *(
            (currency.in_(codes), _const(str(XLSX_MONEY_STYLE + d)))
            for d, codes in sorted(_digits().items())
        ),
    )


def _xml_number(value: Any, style: Any, present: bool) -> Parts:
    """A number cell (`<c/>` when empty); an amount has the style of its currency's digits
    (`style`: `sql_style` of its currency, or None for an integer)."""
    if style is None:
        if present:
            return ["<c><v>", value, "</v></c>"]
        return [_when(value, "<c><v>", "<c/>"), value, _when(value, "</v></c>")]
    if present:
        return ['<c s="', style, '"><v>', value, "</v></c>"]
    return [
        case((value.is_(None), _const("<c/>")), else_=_const('<c s="')),
        case((value.is_not(None), style)),
        case((value.is_not(None), _const('"><v>'))),
        value,
        case((value.is_not(None), _const("</v></c>"))),
    ]


def _xml_cell(column: Column, value: Any, style: Any, escape: bool, present: bool) -> Parts:
    if column.kind in ("money", "int"):
        return _xml_number(value, style, present)
    free = column.sql_value is not None
    return _xml_text(value, escape and free, present and not free)


def xml_row(
    columns: Sequence[Column],
    values: Sequence[Any],
    styles: Sequence[Any],
    present: Sequence[bool],
    probe: Any = None,
) -> Any:
    """A row as SpreadsheetML (`<row><c…/>…</row>`, no cell references: each cell follows the
    last) from its columns' SQL values (`sql_value`, or `sql` when that is the value), one
    `concat` per row; `styles`: each amount's `sql_style` (None for other columns);
    `present`: the columns whose value is never NULL (`never_null`: no
    test for an empty cell). Free text is escaped only in a row whose free text needs it
    (one test of `probe`, the row's `free_text`, per row; None: no free text)."""
    rows = []
    for escape in (False, True):
        parts: Parts = ["<row>"]
        for column, value, style, known in zip(columns, values, styles, present, strict=True):
            parts.extend(_xml_cell(column, value, style, escape, known))
        parts.append("</row>")
        merged: Parts = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            else:
                merged.append(part)
        rows.append(func.concat(*(_const(p) if isinstance(p, str) else p for p in merged)))
    if probe is None:
        return rows[0]
    return case((_special(probe), rows[1]), else_=rows[0])


def _special(probe: Any) -> Any:
    # A row of fewer bytes than a cell's most characters has no cell to cut.
    return or_(
        probe.op("~")(_const(_ROW_SPECIAL)),
        func.octet_length(probe) > literal(XLSX_MAX_CHARS, Integer, literal_execute=True),
    )


def _csv_line(cells: Sequence[Any]) -> Any:
    parts: list[Any] = []
    for cell in cells:
        parts.extend((cell, _const(",")))
    return func.concat(*parts[:-1])


def csv_line(columns: Sequence[Column], values: Sequence[Any], probe: Any = None) -> Any:
    """A row as a CSV line from its columns' SQL values: free text quoted only in a row whose
    free text holds a comma, a quote or a line break (`probe`: the row's `free_text`)."""
    plain = _csv_line(values)
    if probe is None:
        return plain
    quoted = _csv_line([csv_cell(c, v) for c, v in zip(columns, values, strict=True)])
    return case((_special(probe), quoted), else_=plain)


def free_text(columns: Sequence[Column], values: Sequence[Any]) -> Any:
    """A row's free text joined by spaces (what `xml_row` tests once per row), or None."""
    free = [v for c, v in zip(columns, values, strict=True) if c.sql_value is not None]
    return func.concat_ws(_const(" "), *free) if free else None


def csv_cell(column: Column, value: Any) -> Any:
    """A column's CSV cell from its SQL value (free text is quoted; the rest is as it is)."""
    return sql_quote(value) if column.sql_value is not None else value


def sheet_cells(
    columns: Sequence[Column], root: Any
) -> tuple[list[Any], Callable[[list[Any]], tuple[Any, Any]]]:
    """What the XLSX sheet reads per row, and how the row is built from it: each column's SQL
    value (computed once, then both escaped for XML and quoted for CSV) and one style per
    distinct currency, and the row's free text (tested once); the function turns those (as the
    subquery's columns) into the row's SpreadsheetML and its CSV line."""
    values = [(c.sql_value or c.sql)(c.reads) for c in columns]  # type: ignore[misc]
    currencies: dict[int, int] = {}  # id of a currency expression: its value's index
    for column in columns:
        if column.currency is not None and id(column.currency) not in currencies:
            currencies[id(column.currency)] = len(values)
            values.append(sql_style(column.currency))
    present = [never_null(c, root) for c in columns]
    width = len(columns)
    probe = free_text(columns, values[:width])
    if probe is not None:
        values.append(probe)

    def build(refs: list[Any]) -> tuple[Any, Any]:
        styles = [
            refs[currencies[id(c.currency)]] if c.currency is not None else None for c in columns
        ]
        test = refs[-1] if probe is not None else None
        row = xml_row(columns, refs[:width], styles, present, test)
        return row, csv_line(columns, refs[:width], test)

    return values, build
