"""What a template and its columns are, and how a column turns selected values into cells.

A column reads one or more SQL expressions (model attributes, never statements: those are
built in `exports/repository.py`) and renders them with the export's context: the merchant
time zone chosen for the export and whether personal data may be shown in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.money import convert_minor, from_minor

Cell = str | int | Decimal | None


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What rendering a row depends on besides the row."""

    timezone: ZoneInfo
    unmask_pii: bool


Render = Callable[[Sequence[Any], RenderContext], Cell]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a file: its key (for custom templates), its headers and how it renders."""

    key: str
    header_zh: str
    header_en: str
    reads: tuple[Any, ...]
    render: Render
    pii: bool = False

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


def text(key: str, zh: str, en: str, expr: Any) -> Column:
    """A text (or integer) column read as it is stored."""
    return Column(key, zh, en, (expr,), lambda v, _: v[0])


def flag(key: str, zh: str, en: str, expr: Any) -> Column:
    """A boolean column written as 1/0."""
    return Column(key, zh, en, (expr,), lambda v, _: None if v[0] is None else int(bool(v[0])))


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

    return Column(key, zh, en, (base_minor, minor, currency, rate, base), render)


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
            f"{key}_local", f"{zh}({{tz}})", f"{en} ({{tz}})", (expr,), lambda v, c: _local(v[0], c)
        ),
        Column(f"{key}_utc", f"{zh}(UTC)", f"{en} (UTC)", (expr,), lambda v, _: _utc(v[0])),
    )


def local_date(key: str, zh: str, en: str, expr: Any) -> Column:
    """The merchant-local business day of a timestamp."""

    def render(v: Sequence[Any], ctx: RenderContext) -> Cell:
        if v[0] is None:
            return None
        return clock.as_utc(v[0]).astimezone(ctx.timezone).date().isoformat()

    return Column(key, f"{zh}({{tz}})", f"{en} ({{tz}})", (expr,), render)


def pii(key: str, zh: str, en: str, masked: Any, encrypted: Any, purpose: str) -> Column:
    """Personal data: the stored mask, or the decrypted value for a role that may see it."""

    def render(v: Sequence[Any], ctx: RenderContext) -> Cell:
        if ctx.unmask_pii and v[1]:
            return get_cipher().decrypt(v[1], purpose)
        return v[0]

    return Column(key, zh, en, (masked, encrypted), render, pii=True)


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

    return Column(key, zh, en, (*parts, encrypted), render, pii=True)
