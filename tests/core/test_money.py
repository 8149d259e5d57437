from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertally.core import money


def test_exponents_follow_iso_4217() -> None:
    assert money.exponent("CNY") == 2
    assert money.exponent("JPY") == 0
    assert money.exponent("BHD") == 3


def test_to_minor_and_back() -> None:
    assert money.to_minor("119.80", "CNY") == 11980
    assert money.to_minor(Decimal("1500"), "JPY") == 1500
    assert money.format_minor(11980, "CNY") == "119.80"
    assert money.format_minor(5, "BHD") == "0.005"
    assert money.format_minor(1500, "JPY") == "1500"


def test_refuses_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(money.MoneyError) as err:
        money.to_minor("1.234", "CNY")
    assert err.value.code == "money.invalid"
    with pytest.raises(money.MoneyError):
        money.to_minor("10.5", "JPY")


def test_refuses_unknown_currency_and_garbage() -> None:
    with pytest.raises(money.UnknownCurrency):
        money.to_minor("1", "XYZ")
    with pytest.raises(money.MoneyError):
        money.to_minor("abc", "CNY")
    with pytest.raises(money.MoneyError):
        money.to_minor("NaN", "CNY")


def test_split_by_largest_remainder_example() -> None:
    assert money.split_by_largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert money.split_by_largest_remainder(0, [5, 7]) == [0, 0]


@given(
    total=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=50),
)
def test_split_always_adds_up_and_is_fair(total: int, weights: list[int]) -> None:
    total = min(total, sum(weights))
    shares = money.split_by_largest_remainder(total, weights)
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        exact = Decimal(total) * weight / sum(weights)
        assert abs(Decimal(share) - exact) < 1


@given(
    minor=st.one_of(st.integers(-(10**27) + 1, 10**27 - 1), st.integers(-1000, 1000)),
    currency=st.sampled_from(["CNY", "JPY", "BHD", "USD", "CLF"]),
)
def test_from_minor_has_the_currencys_exponent_and_round_trips(minor: int, currency: str) -> None:
    exp = money.exponent(currency)
    value = money.from_minor(minor, currency)
    # The same value and digits as quantizing to the currency's exponent
    expected = Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))
    assert str(value) == str(expected)
    assert value.as_tuple().exponent == -exp
    assert money.to_minor(value, currency) == minor
