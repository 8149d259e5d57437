"""Phone numbers: canonical E.164 for the blind index, and the masked display form."""

from __future__ import annotations

import phonenumbers

from ordertally.core.errors import OrdertallyError


class InvalidPhone(OrdertallyError):
    status = 422
    code = "customer.invalid_phone"
    title = "Invalid phone number"


def normalise(raw: str, region: str = "CN") -> str:
    """Return the E.164 form of a phone number, refusing impossible ones."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{raw!r} is not a phone number", field="phone") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone(f"{raw!r} is not a possible phone number", field="phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def national_digits(e164: str) -> str:
    """The national significant number (e.g. 13812345678 for +8613812345678)."""
    return str(phonenumbers.parse(e164).national_number)


def mask(e164: str) -> str:
    """Masked display: first three and last four digits of the national number."""
    digits = national_digits(e164)
    if len(digits) <= 7:
        return digits[:1] + "*" * (len(digits) - 3) + digits[-2:]
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def last4(e164: str) -> str:
    """The last four digits, kept in clear for fragment search."""
    return national_digits(e164)[-4:]
