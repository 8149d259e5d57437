"""Pinduoduo's own published example (the POP documentation's response example of
pdd.order.list.get, whose order object is the one pdd.order.number.list.increment.get returns;
see fixtures/SOURCES.md): amounts are numbers, the receiver fields are the encrypted ones with
`*_mask` beside them, and pay_amount = goods_amount - discount_amount + postage + service fees,
where goods_amount is already net of the merchant's price change (order_change_amount)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx

from ordertally.channels.adapters import pinduoduo
from ordertally.channels.canonical import PlatformStatus

FIXTURES = Path(__file__).parent / "fixtures"


def _official() -> dict[str, Any]:
    doc = json.loads((FIXTURES / "pdd_order_list_get_official.json").read_text())
    order: dict[str, Any] = doc["order_list_get_response"]["order_list"][0]
    return order


def test_the_official_example_maps_with_numbers_for_amounts_and_masks_for_display() -> None:
    # Given the documentation's example order, as published
    doc = _official()
    # When it is mapped
    order = pinduoduo.to_canonical(doc)
    # Then its numbers (DOUBLE 1.0) are read as yuan, and our sum is its pay_amount:
    # goods 1 x 1.0 - discount 1.0 + postage 1.0 + service fee 0.0 = 1.0
    assert (order.external_id, order.status, order.currency) == ("1", PlatformStatus.PAID, "CNY")
    assert [(ln.platform_sku, ln.quantity, ln.unit_price_minor) for ln in order.lines] == [
        ("1", 1, 100)
    ]
    assert (order.discount_minor, order.shipping_minor, order.fee_minor) == (100, 100, 0)
    assert (order.total_minor, order.platform_total_minor) == (100, 100)
    # And the display values are the *_mask fields, never the encrypted fields beside them
    assert (order.buyer_name, order.buyer_phone, order.address.line1) == ("str", "str", "str")


def test_a_price_change_and_service_fees_are_part_of_what_the_buyer_paid() -> None:
    # Given the example with the documented parts filled in (derived, not published): two
    # items of 59.90, the merchant took 9.80 off (order_change_amount, so goods_amount is
    # 110.00), 10.00 of discounts, 4.00 postage and an install service fee of 25.00
    doc = copy.deepcopy(_official())
    doc["item_list"][0].update(goods_price=59.9, goods_count=2, outer_id="TEA-LJ-250")
    doc.update(
        order_change_amount=9.8,
        goods_amount=110.0,
        discount_amount=10.0,
        postage=4.0,
        service_fee_detail=[{"service_fee": 25.0, "service_name": "install_fee"}],
        pay_amount=129.0,  # 110.00 - 10.00 + 4.00 + 25.00
    )
    # When it is mapped
    order = pinduoduo.to_canonical(doc)
    # Then every part is stored and our total is the platform's, to the cent
    assert (order.subtotal_minor, order.discount_minor) == (11980, 1980)
    assert (order.shipping_minor, order.fee_minor) == (400, 2500)
    assert order.total_minor == order.platform_total_minor == 12900


def test_the_documented_error_answer_and_a_decrypt_answer_are_read() -> None:
    # The POP documentation's error example, answered to a decrypt call
    error = {
        "error_response": {
            "error_msg": "公共参数错误:type",
            "sub_msg": "",
            "sub_code": None,
            "error_code": 10001,
            "request_id": "15440104776643887",
        }
    }
    asked = [("1", "~a~b~0~~"), ("1", "$c$d$0$$")]
    plain, failed = pinduoduo.decrypt_answer(httpx.Response(200, json=error), asked)
    assert plain == {}
    assert failed == dict.fromkeys(asked, "pinduoduo error 10001: 公共参数错误:type")
    # An answer in the POP SDK's shape: one entry decrypted, one refused, one missing
    answer = {
        "open_decrypt_batch_response": {
            "data_decrypt_list": [
                {
                    "data_tag": "1",
                    "data_type": 5,
                    "decrypted_data": "王小明",
                    "encrypted_data": "~a~b~0~~",
                    "error_code": 0,
                    "error_msg": "",
                },
                {
                    "data_tag": "1",
                    "data_type": 6,
                    "decrypted_data": "",
                    "encrypted_data": "$c$d$0$$",
                    "error_code": 1000001,
                    "error_msg": "解密失败",
                },
            ]
        }
    }
    asked.append(("2", "~e~f~0~~"))
    plain, failed = pinduoduo.decrypt_answer(httpx.Response(200, json=answer), asked)
    assert plain == {("1", "~a~b~0~~"): "王小明"}
    assert failed == {
        ("1", "$c$d$0$$"): "decrypt error 1000001: 解密失败",
        ("2", "~e~f~0~~"): "decrypt answered nothing for it",
    }
