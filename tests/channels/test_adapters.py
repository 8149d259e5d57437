"""Adapters on the platforms' public sample payloads (tests/channels/fixtures)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ordertally.channels.adapters import amazon, pinduoduo, shopify
from ordertally.channels.adapters.common import AdapterError, beijing_utc
from ordertally.channels.canonical import PlatformStatus

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_shopify_sample_order() -> None:
    order = shopify.to_canonical(load("shopify_order.json"))
    assert order.external_id == "450789469"
    assert order.currency == "USD"
    assert order.status is PlatformStatus.PAID  # financial_status "authorized"
    # 2008-01-10T11:00:00-05:00 is 16:00 UTC.
    assert order.placed_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)
    assert [(ln.platform_sku, ln.quantity, ln.unit_price_minor) for ln in order.lines] == [
        ("IPOD2008GREEN", 1, 19900),
        ("IPOD2008RED", 1, 19900),
        ("IPOD2008BLACK", 1, 19900),
    ]
    # The sample says subtotal_price "398.00" for three lines of 199.00; we trust the lines.
    assert order.subtotal_minor == 59700
    assert order.address.province == "Kentucky" and order.address.country == "US"
    assert order.buyer_phone == "+15556251199"
    assert order.buyer_platform_id == "207119551"
    assert order.raw["name"] == "#1001"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"financial_status": "pending"}, PlatformStatus.UNPAID),
        ({"financial_status": "paid"}, PlatformStatus.PAID),
        ({"financial_status": "paid", "fulfillment_status": "fulfilled"}, PlatformStatus.SHIPPED),
        ({"cancelled_at": "2008-01-11T10:00:00-05:00"}, PlatformStatus.CANCELLED),
        ({"financial_status": "refunded"}, PlatformStatus.REFUNDED),
        ({"financial_status": "voided"}, PlatformStatus.CANCELLED),
    ],
)
def test_shopify_status(changes: dict[str, Any], expected: PlatformStatus) -> None:
    doc = load("shopify_order.json")["order"]
    doc.update(changes)
    assert shopify.to_canonical(doc).status is expected


def test_shopify_discounts_and_shipping() -> None:
    doc = load("shopify_order.json")["order"]
    doc["total_discounts"] = "10.00"
    doc["line_items"][0]["discount_allocations"] = [{"amount": "4.00"}]
    doc["shipping_lines"][0]["price"] = "7.50"
    order = shopify.to_canonical(doc)
    assert order.lines[0].discount_minor == 400
    assert order.discount_minor == 600
    assert order.shipping_minor == 750


def test_shopify_hmac() -> None:
    body = b'{"id": 1}'
    header = shopify.sign("s3cret", body)
    assert shopify.verify("s3cret", body, header)
    assert not shopify.verify("s3cret", body + b" ", header)
    assert not shopify.verify("other", body, header)
    assert not shopify.verify("s3cret", body, None)


def test_amazon_sample_order() -> None:
    order_doc = load("amazon_get_orders.json")["payload"]["Orders"][0]
    items = load("amazon_get_order_items.json")["payload"]["OrderItems"]
    order = amazon.to_canonical(order_doc, items)
    assert order.external_id == "902-3159896-1390916"
    assert order.status is PlatformStatus.UNPAID  # Pending
    assert order.updated_at == datetime(2017, 1, 20, 19, 49, 35, tzinfo=UTC)
    (line,) = order.lines
    # ItemPrice is the whole item: 51.98 for 2 -> 25.99 each; PromotionDiscount 2.00.
    assert (line.platform_sku, line.quantity, line.unit_price_minor) == ("CBA_OTF_1", 2, 2599)
    assert line.discount_minor == 200
    assert order.shipping_minor == 126
    assert order.address.province == "MI" and order.buyer_name == "John Doe"


@pytest.mark.parametrize(("raw", "expected"), list(amazon.STATUS.items()))
def test_amazon_status(raw: str, expected: PlatformStatus) -> None:
    doc = dict(load("amazon_get_orders.json")["payload"]["Orders"][0], OrderStatus=raw)
    assert (
        amazon.to_canonical(
            doc, load("amazon_get_order_items.json")["payload"]["OrderItems"]
        ).status
        is expected
    )


def test_amazon_refuses_unknown_status() -> None:
    doc = dict(load("amazon_get_orders.json")["payload"]["Orders"][0], OrderStatus="Weird")
    with pytest.raises(AdapterError):
        amazon.to_canonical(doc, [])


def test_pinduoduo_sample_order() -> None:
    doc = load("pdd_increment.json")["order_sn_increment_get_response"]["order_sn_list"][0]
    order = pinduoduo.to_canonical(doc)
    assert order.external_id == "231120-048294856210731"
    assert order.status is PlatformStatus.PAID
    # Beijing 2023-11-21 00:02:40 is 2023-11-20 16:02:40 UTC: the day boundary is not a gap.
    assert order.updated_at == datetime(2023, 11, 20, 16, 2, 40, tzinfo=UTC)
    assert order.placed_at == datetime(2023, 11, 20, 15, 58, 12, tzinfo=UTC)
    (line,) = order.lines
    assert (line.platform_sku, line.quantity, line.unit_price_minor) == ("TEA-LJ-250", 2, 5990)
    assert order.discount_minor == 1000 and order.shipping_minor == 400
    assert order.buyer_phone == "138****1234"
    assert order.currency == "CNY"


def test_pinduoduo_times_and_status() -> None:
    assert beijing_utc(1700495920) == datetime(2023, 11, 20, 15, 58, 40, tzinfo=UTC)
    doc = load("pdd_increment.json")["order_sn_increment_get_response"]["order_sn_list"][0]
    assert pinduoduo.status_of(dict(doc, refund_status=4)) is PlatformStatus.REFUNDED
    assert pinduoduo.status_of(dict(doc, confirm_status=2)) is PlatformStatus.CANCELLED
    assert pinduoduo.status_of(dict(doc, confirm_status=0)) is PlatformStatus.UNPAID
    assert pinduoduo.status_of(dict(doc, order_status=2)) is PlatformStatus.SHIPPED
    assert pinduoduo.status_of(dict(doc, order_status=3)) is PlatformStatus.DELIVERED


def test_pinduoduo_sign_is_stable() -> None:
    params = {"type": pinduoduo.API, "client_id": "c", "timestamp": "1", "data_type": "JSON"}
    assert pinduoduo.sign(params, "s") == pinduoduo.sign(dict(reversed(params.items())), "s")
    assert len(pinduoduo.sign(params, "s")) == 32
