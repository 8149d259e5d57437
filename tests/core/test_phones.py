"""The mainland-mobile fast path gives exactly what phonenumbers gives."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertally.core import phones


def _parsed(raw: str) -> str:
    parsed = phonenumbers.parse(raw, "CN")
    assert phonenumbers.is_possible_number(parsed)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@given(
    prefix=st.sampled_from(["", "+86", "86", "0086", " ", "+86 "]),
    second=st.integers(3, 9),
    rest=st.integers(0, 999_999_999),
)
def test_fast_path_matches_the_parser(prefix: str, second: int, rest: int) -> None:
    raw = f"{prefix}1{second}{rest:09d}"
    e164 = phones.normalise(raw)
    assert e164 == _parsed(raw)
    national = str(phonenumbers.parse(e164).national_number)
    assert phones.national_digits(e164) == national
    assert phones.mask(e164) == national[:3] + "****" + national[-4:]
    assert phones.last4(e164) == national[-4:]


@pytest.mark.parametrize("raw", ["010-12345678", "+1 415 555 0100", "+852 9123 4567"])
def test_other_numbers_still_go_through_the_parser(raw: str) -> None:
    assert phones.normalise(raw) == _parsed(raw)


@pytest.mark.parametrize("raw", ["", "abc", "1"])
def test_impossible_numbers_are_refused(raw: str) -> None:
    with pytest.raises(phones.InvalidPhone):
        phones.normalise(raw)
