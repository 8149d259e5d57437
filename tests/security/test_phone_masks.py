"""Finding: phone masks leaked most digits of short national numbers (`912*4567`)."""

from __future__ import annotations

import pytest

from ordertally.core import phones


@pytest.mark.parametrize(
    ("e164", "masked", "last4"),
    [
        ("+8613812345678", "138****5678", "5678"),  # mainland mobile: the convention search uses
        ("+85291234567", "****4567", "4567"),  # Hong Kong, 8 digits: half shown
        ("+85361234567", "****4567", "4567"),  # Macau, 8 digits
        ("+6591234567", "****4567", "4567"),  # Singapore, 8 digits
        ("+14155550100", "******0100", "0100"),  # US, 10 digits
        ("+861012345678", "******5678", "5678"),  # Beijing landline, 10 national digits
        ("+35312345", "***45", "45"),  # 5 national digits: two shown
        ("+4930123456789", "301****6789", "6789"),  # 12 digits keep the 3 + 4 form
    ],
)
def test_a_mask_never_shows_more_than_half_of_a_short_number(
    e164: str, masked: str, last4: str
) -> None:
    # Given a number of a given length / When it is masked / Then at most half is shown
    assert phones.mask(e164) == masked
    assert phones.last4(e164) == last4
    digits = phones.national_digits(e164)
    shown = sum(ch.isdigit() for ch in masked)
    assert len(masked) == len(digits)
    assert shown <= (7 if len(digits) >= 11 else len(digits) // 2)
