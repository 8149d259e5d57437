"""Money: integer minor units in storage, Decimal at the edges, ISO-4217 exponents from CLDR."""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from babel.numbers import get_currency_precision, list_currencies

from ordertally.core.errors import OrdertallyError

# Minor-unit rounding for FX conversions; amounts themselves are never rounded silently.
FX_SCALE = Decimal("0.00000001")


class MoneyError(OrdertallyError):
    status = 422
    code = "money.invalid"
    title = "Invalid amount"


class UnknownCurrency(MoneyError):
    code = "money.unknown_currency"
    title = "Unknown currency"


class FxRateUnavailable(OrdertallyError):
    status = 409
    code = "money.fx_rate_unavailable"
    title = "No exchange rate for this currency"


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(list_currencies())


@functools.cache
def exponent(currency: str) -> int:
    """Digits after the decimal point for a currency (CNY 2, JPY 0, BHD 3)."""
    if currency not in _known():
        raise UnknownCurrency(f"{currency!r} is not an ISO-4217 currency")
    return int(get_currency_precision(currency))


def check_currency(currency: str) -> str:
    """Validate an ISO-4217 code and return it."""
    exponent(currency)
    return currency


def to_minor(amount: Decimal | str, currency: str) -> int:
    """Convert a decimal amount to integer minor units; refuse extra precision."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise MoneyError(f"{amount!r} is not a decimal amount") from exc
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{amount} has more decimals than {currency} allows ({exponent(currency)})",
            field="amount",
        )
    return int(scaled)


# Below this many minor units `Decimal(minor).scaleb(-exp)` is exact and already carries the
# currency's exponent (the digits fit the context's 28); quantize only beyond it.
_EXACT_MINOR = 10**27


def from_minor(minor: int, currency: str) -> Decimal:
    """Integer minor units back to a Decimal with the currency's exponent."""
    exp = exponent(currency)
    value = Decimal(minor).scaleb(-exp)
    if -_EXACT_MINOR < minor < _EXACT_MINOR:
        return value
    return value.quantize(Decimal(1).scaleb(-exp))


def format_minor(minor: int, currency: str) -> str:
    """The JSON form of an amount: a decimal string such as "119.80"."""
    return str(from_minor(minor, currency))


def split_by_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split an integer amount across weights so the parts add up exactly."""
    if total == 0 or not weights:
        return [0] * len(weights)
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise MoneyError("cannot split an amount across zero weights")
    shares = [total * w // weight_sum for w in weights]
    remainders = [(total * w % weight_sum, -i) for i, w in enumerate(weights)]
    left = total - sum(shares)
    for _, neg_index in sorted(remainders, reverse=True)[:left]:
        shares[-neg_index] += 1
    return shares


def quantize_rate(rate: Decimal) -> Decimal:
    """Rates are kept to 8 decimal places."""
    return rate.quantize(FX_SCALE, rounding=ROUND_HALF_EVEN)


def convert_minor(minor: int, currency: str, rate: Decimal | str, base_currency: str) -> int:
    """An amount in minor units of `currency` in minor units of `base_currency` at `rate`
    (rounded half-even)."""
    value = from_minor(minor, currency) * Decimal(rate)
    return int(value.scaleb(exponent(base_currency)).to_integral_value(rounding=ROUND_HALF_EVEN))
