"""The parser: rows into canonical orders, in file order, each good order with the file lines it
came from and each rejected row with its line number and reason. A rejected row rejects its
whole order, and the order's other rows are reported too.

Rows of one order must be together (exports list them so): an order id that comes back after
another order started is rejected with its rows ("sort the file by order id").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ordertally.channels.adapters.common import is_ciphertext
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)
from ordertally.channels.files.cells import (
    parse_amount,
    parse_quantity,
    parse_time,
    split_address,
    text_of,
)
from ordertally.channels.files.errors import FileError, RowError
from ordertally.channels.files.reading import Cell, Source, read_rows
from ordertally.channels.files.templates import TEMPLATES, Grouping, Template
from ordertally.core import money


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
        # Summed fields: every accepted header the file has (the first one is also in `index`).
        self.all: dict[str, list[int]] = {}
        for fieldname, accepted in template.columns.items():
            found = [position[text] for text in accepted if text in position]
            if found:
                self.index[fieldname] = found[0]
                self.all[fieldname] = found if fieldname in template.summed else found[:1]
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

    def header_of(self, fieldname: str) -> str:
        """The header text of a field's (first) column in this file."""
        i = self.index.get(fieldname)
        return self.names[i] if i is not None else fieldname

    def amount(self, texts: Sequence[str], fieldname: str, currency: str) -> int:
        """A field's amount in minor units (the sum of its columns for a summed field)."""
        total = 0
        for i in self.all.get(fieldname, ()):
            if i < len(texts):
                total += parse_amount(texts[i], currency, self.names[i])
        return total

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
            except RowError as exc:
                reasons[row.line] = str(exc)
        try:
            header_values = self._order_fields(group.rows[0], currency)
        except RowError as exc:
            line = group.rows[0].line
            reasons[line] = "; ".join(r for r in (reasons.get(line), str(exc)) if r)
        if reasons:
            raise _GroupError(reasons)
        status, placed_at, paid_at, updated_at, amounts = header_values
        discount, shipping, tax, fee, paid_total = amounts
        subtotal = sum(line.unit_price_minor * line.quantity for line in lines)
        line_discounts = sum(line.discount_minor for line in lines)
        if discount + line_discounts > subtotal:
            raise _GroupError(
                {
                    group.rows[0].line: "优惠超过商品金额 / discounts exceed the order's subtotal",
                    **{r.line: "" for r in group.rows[1:]},
                }
            )
        ours = subtotal - line_discounts - discount + shipping + tax + fee
        if status in (PlatformStatus.UNPAID, PlatformStatus.CANCELLED):
            # Nothing was paid: exports write 0.00 (or nothing) as what the buyer paid.
            paid_total = None
        if paid_total is not None and ours != paid_total:
            # The file's own columns disagree: refused, never adjusted (the merchant fixes the
            # file or the template, and imports it again).
            raise _GroupError(
                {
                    group.rows[0].line: self._mismatch(
                        currency,
                        subtotal,
                        line_discounts + discount,
                        shipping,
                        tax,
                        fee,
                        ours,
                        paid_total,
                    ),
                    **{r.line: "" for r in group.rows[1:]},
                }
            )
        # Encrypted recipient fields (Douyin "##...##", "$$...$$") are kept as ciphertext for
        # the platform's decrypt API and never read as a name, phone or address.
        encrypted = {
            name: value
            for name in ("receiver_name", "receiver_phone", "buyer_name", "buyer_phone", "address")
            if is_ciphertext(value := h.text(first, name))
        }

        def plain(name: str) -> str:
            return "" if name in encrypted else h.text(first, name)

        receiver_name = plain("receiver_name") or plain("buyer_name")
        receiver_phone = plain("receiver_phone") or plain("buyer_phone")
        buyer_phone = plain("buyer_phone") or receiver_phone
        if not buyer_phone and not encrypted.keys() & {"receiver_phone", "buyer_phone"}:
            raise _GroupError(
                {
                    group.rows[0].line: "缺少手机号 / missing phone",
                    **{r.line: "" for r in group.rows[1:]},
                }
            )
        province = h.text(first, "province")
        city = h.text(first, "city")
        district = h.text(first, "district")
        street = " ".join(p for p in (h.text(first, "street"), plain("address")) if p)
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
            buyer_name=plain("buyer_name") or receiver_name,
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
            tax_minor=tax,
            fee_minor=fee,
            platform_total_minor=paid_total,
            buyer_platform_id=h.text(first, "buyer_platform_id"),
            buyer_email=h.text(first, "buyer_email"),
            encrypted=encrypted,
            raw=raw,
        )

    def _mismatch(
        self,
        currency: str,
        subtotal: int,
        discounts: int,
        shipping: int,
        tax: int,
        fee: int,
        ours: int,
        paid: int,
    ) -> str:
        """Why an order's amount columns do not add up, in both languages, with the numbers."""
        assert self._header is not None

        def f(value: int) -> str:
            return money.format_minor(value, currency)

        column = self._header.header_of("paid_total")
        return (
            f"金额不符 / the amounts do not add up: 商品 goods {f(subtotal)} - 优惠 discounts "
            f"{f(discounts)} + 运费 shipping {f(shipping)} + 税 tax {f(tax)} + 服务费 fees "
            f"{f(fee)} = {f(ours)}, but {column} is {f(paid)}"
        )

    def _line(self, row: _Row, currency: str) -> CanonicalLine:
        h = self._header
        assert h is not None
        sku = h.text(row.texts, "sku") or h.text(row.texts, "sku_fallback")
        if not sku:
            raise RowError("缺少商品编码 / missing SKU")
        quantity = parse_quantity(h.get(row.cells, "quantity"))
        discount = parse_amount(h.text(row.texts, "line_discount"), currency, "line discount")
        if h.text(row.texts, "unit_price") or "line_total" not in h.index:
            price = parse_amount(h.text(row.texts, "unit_price"), currency, "unit price")
        else:
            # Only the line's amount: the unit price rounded up, the rest a line discount.
            total = parse_amount(h.text(row.texts, "line_total"), currency, "line total")
            price = -(-total // quantity)
            discount += price * quantity - total
        if discount > price * quantity:
            raise RowError("行优惠超过行金额 / line discount exceeds the line amount")
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
    ) -> tuple[
        PlatformStatus, datetime, datetime | None, datetime, tuple[int, int, int, int, int | None]
    ]:
        """Status, times and (discount, shipping, tax, fee, paid total or None) of an order."""
        h = self._header
        assert h is not None
        cells, texts = row.cells, row.texts
        word = h.text(texts, "status")
        status = self.template.statuses.get(word)
        if status is None:
            raise RowError(f"未知订单状态 / unknown status {word!r}")
        placed_at = parse_time(h.get(cells, "placed_at"), self.template, self.tz, "placed at")
        if placed_at is None:
            raise RowError("缺少下单时间 / missing order time")
        paid_at = parse_time(h.get(cells, "paid_at"), self.template, self.tz, "paid at")
        finished_at = parse_time(h.get(cells, "finished_at"), self.template, self.tz, "finished")
        updated_at = max(t for t in (placed_at, paid_at, finished_at) if t is not None)
        discount = h.amount(texts, "order_discount", currency)
        shipping = h.amount(texts, "shipping", currency)
        tax = h.amount(texts, "tax", currency)
        fee = h.amount(texts, "fee", currency)
        paid = h.text(texts, "paid_total")
        paid_total = h.amount(texts, "paid_total", currency) if paid else None
        return status, placed_at, paid_at, updated_at, (discount, shipping, tax, fee, paid_total)


class _GroupError(Exception):
    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__("order rejected")
        self.reasons = reasons


def parse_file(
    path: Source, template: Template | None, platform: str
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
