"""The shapes every API schema reuses for untrusted input: amounts and quantities bounded so no
product of them can overflow a 64-bit column, strict integers (JSON `true` is not 1), text
without control characters or bidi overrides, and instants bounded around now."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints
from pydantic_core import PydanticCustomError

from ordertally.core import clock

# The largest amount of anything (a price, a discount, an order's total, a payment), in major
# units. With at most 4 minor digits (CLF) it is below 10^14 minor units, so even a total
# converted at an exchange rate of 90,000 stays below 2^63 - 1.
MAX_AMOUNT = Decimal("9999999999.9999")
MAX_QUANTITY = 100_000
MAX_LINES = 200
# How far ahead of our clock a client's clock may be, and how old a stated payment may be.
CLOCK_SKEW = timedelta(minutes=5)
MAX_AGE = timedelta(days=366)

# Control characters (C0 and C1, DEL), bidi embeddings/overrides/isolates, the line and
# paragraph separators, and lone surrogates. Tab and newline only in multi-line text.
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_REFUSED_IN_TEXT = re.compile(f"[{_CONTROL}\ud800-\udfff]")
_REFUSED_IN_LINE = re.compile(f"[\t\n{_CONTROL}\ud800-\udfff]")


def _refuse(pattern: re.Pattern[str], value: str) -> str:
    found = pattern.search(value)
    if found is not None:
        raise PydanticCustomError(
            "text_control_character",
            "control or bidi character U+{code} is not allowed",
            {"code": f"{ord(found.group()):04X}"},
        )
    return value


def check_line(value: str) -> str:
    """A one-line text (name, phone, address part, reference) with no control characters."""
    return _refuse(_REFUSED_IN_LINE, value)


def check_text(value: str) -> str:
    """A free text (reason, note) with no control characters but tab and newline."""
    return _refuse(_REFUSED_IN_TEXT, value)


def check_amount(value: Decimal) -> Decimal:
    """Refuse an amount above MAX_AMOUNT (a model validator for sums of amounts)."""
    if value > MAX_AMOUNT:
        raise PydanticCustomError(
            "amount_out_of_range",
            "the amount {amount} is above the maximum {maximum}",
            {"amount": str(value), "maximum": str(MAX_AMOUNT)},
        )
    return value


def check_instant(value: datetime) -> datetime:
    """An instant a person states happened: not in the future (beyond CLOCK_SKEW), not older
    than MAX_AGE."""
    now = clock.now()
    if value > now + CLOCK_SKEW:
        raise PydanticCustomError("datetime_in_future", "the time is in the future", {})
    if value < now - MAX_AGE:
        raise PydanticCustomError(
            "datetime_too_old", "the time is more than {days} days ago", {"days": MAX_AGE.days}
        )
    return value


Line = Annotated[str, AfterValidator(check_line)]
Text = Annotated[str, AfterValidator(check_text)]
# The same, stripped and required (the constraints must sit on the str, before the validator).
FilledLine = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(check_line)
]
FilledText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(check_text)
]
# A decimal string of at most 10 integer digits and 4 decimals (at most MAX_AMOUNT).
Amount = Annotated[str, StringConstraints(pattern=r"^\d{1,10}(\.\d{1,4})?$")]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
PastInstant = Annotated[AwareDatetime, AfterValidator(check_instant)]
