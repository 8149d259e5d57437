"""Helpers every adapter shares: money, times and phones at the platform edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import phonenumbers

from ordertally.core import money

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


class AdapterError(ValueError):
    """A platform payload that cannot be mapped (reported per order, never silently dropped)."""


def minor(amount: Any, currency: str) -> int:
    """A platform decimal amount (string or number) in minor units of `currency`."""
    if amount is None or amount == "":
        return 0
    try:
        return money.to_minor(Decimal(str(amount)), currency)
    except money.MoneyError as exc:
        raise AdapterError(f"amount {amount!r} in {currency}: {exc.detail}") from exc


def iso_utc(value: str) -> datetime:
    """ISO-8601 with an offset or Z, to aware UTC. A naive value is refused: its zone is
    unknowable, and guessing it is how orders get lost."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as exc:
        raise AdapterError(f"{value!r} is not an ISO-8601 time") from exc
    if parsed.tzinfo is None:
        raise AdapterError(f"{value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def beijing_utc(value: str | int | float) -> datetime:
    """A Chinese platform time: unix seconds, or "YYYY-MM-DD HH:MM:SS" in Beijing time."""
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value), UTC)
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise AdapterError(f"{value!r} is not a Beijing time") from exc
    return parsed.replace(tzinfo=BEIJING).astimezone(UTC)


def to_beijing_string(at: datetime) -> str:
    """The inverse of `beijing_utc` for string times."""
    return at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def e164_or_given(phone: str | None, region: str | None) -> str:
    """A phone in E.164 using the address's country, or as given when it cannot be parsed
    (masked phones stay masked; ingest keeps them as given)."""
    if not phone:
        return ""
    if "*" in phone:
        return phone.strip()
    try:
        parsed = phonenumbers.parse(phone, (region or "CN").upper())
    except phonenumbers.NumberParseException:
        return phone.strip()
    if not phonenumbers.is_possible_number(parsed):
        return phone.strip()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def text(value: Any) -> str:
    """A platform field as stripped text ("" for null)."""
    return "" if value is None else str(value).strip()
