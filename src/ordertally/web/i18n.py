"""Translations and formats: the gettext catalogues (compiled from the committed .po files when
first used, so no binary is committed), money with the currency's digits, and times in the
merchant's time zone."""

from __future__ import annotations

import functools
import io
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import Translations

from ordertally.core import clock, money
from ordertally.core.settings import get_settings

LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
CATALOGUES = Path(__file__).parent / "translations"


def N_(message: str) -> str:
    """Mark a string for the catalogue without translating it here."""
    return message


def po_path(locale: str) -> Path:
    """The committed catalogue of a locale."""
    return CATALOGUES / locale / "LC_MESSAGES" / "messages.po"


@functools.cache
def translations(locale: str) -> Translations:
    """The compiled catalogue of a locale (compiled in memory from its .po)."""
    with po_path(locale).open("rb") as po:
        catalog = read_po(po, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain="messages")


@functools.cache
def _babel_locale(locale: str) -> Locale:
    # Parsing a locale name costs about a millisecond: once per locale, not once per cell.
    return Locale.parse(locale)


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def pick_locale(cookie: str | None) -> str:
    """The locale a browser asked for by cookie, or the default."""
    return cookie if cookie in LOCALES else DEFAULT_LOCALE


def fmt_money(minor: int | None, currency: str, locale: str) -> str:
    """An amount in minor units, with the currency's own number of digits."""
    if minor is None:
        return "—"
    digits = money.exponent(currency)
    amount = Decimal(minor).scaleb(-digits)
    return format_currency(
        amount, currency, locale=_babel_locale(locale), decimal_quantization=True
    )


def fmt_time(value: datetime | None, locale: str) -> str:
    """A UTC moment in the merchant's time zone."""
    if value is None:
        return "—"
    # One numeric pattern for both languages (what operators in both read at a glance).
    return (
        clock.as_utc(value).astimezone(_zone(get_settings().timezone)).strftime("%Y-%m-%d %H:%M:%S")
    )


def fmt_number(value: int | float, locale: str) -> str:
    """A count with the locale's grouping."""
    return format_decimal(value, locale=_babel_locale(locale))


def fmt_percent(value: float | None, locale: str) -> str:
    """A ratio as a percentage with one decimal."""
    if value is None:
        return "—"
    return format_percent(value, "#,##0.0%", locale=_babel_locale(locale))


def zone_name() -> str:
    """The merchant's time zone, to label times with."""
    return get_settings().timezone
