import secrets

import pytest
from cryptography.exceptions import InvalidTag

from ordertally.core import phones
from ordertally.core.crypto import PiiCipher


def test_encrypt_round_trip_and_fresh_nonces() -> None:
    cipher = PiiCipher(secrets.token_bytes(32), "k1")
    first = cipher.encrypt("13812345678", "sales_order.customer_phone")
    second = cipher.encrypt("13812345678", "sales_order.customer_phone")
    assert first != second
    assert first.startswith("k1:")
    assert cipher.decrypt(first, "sales_order.customer_phone") == "13812345678"


def test_ciphertext_is_bound_to_its_column() -> None:
    cipher = PiiCipher(secrets.token_bytes(32), "k1")
    token = cipher.encrypt("张三", "sales_order.customer_name")
    with pytest.raises(InvalidTag):
        cipher.decrypt(token, "sales_order.shipping_address")


def test_blind_index_is_stable_and_keyed() -> None:
    one = PiiCipher(secrets.token_bytes(32), "k1")
    other = PiiCipher(secrets.token_bytes(32), "k1")
    assert one.blind_index("+8613812345678", "phone") == one.blind_index("+8613812345678", "phone")
    assert one.blind_index("+8613812345678", "phone") != other.blind_index(
        "+8613812345678", "phone"
    )
    assert "13812345678" not in one.blind_index("+8613812345678", "phone")


def test_phone_normalise_and_mask() -> None:
    assert phones.normalise("138 1234 5678") == "+8613812345678"
    assert phones.normalise("+86 138-1234-5678") == "+8613812345678"
    assert phones.mask("+8613812345678") == "138****5678"
    assert phones.last4("+8613812345678") == "5678"
    with pytest.raises(phones.InvalidPhone):
        phones.normalise("12")
