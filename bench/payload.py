"""What the benchmark sends and seeds: the order body, its SKUs and the warehouse they ship from."""

from __future__ import annotations

import orjson

CHANNEL = "wechat_mini"
PROVINCE = "上海市"
# sku -> (quantity per order, unit price)
LINES = {"TEA-LJ-250": (2, "59.90"), "CUP-CER-01": (1, "39.90")}
WAREHOUSE = {
    "code": "SH01",
    "name": "上海嘉定仓",
    "province": PROVINCE,
    "city": "上海市",
    "latitude": 31.38,
    "longitude": 121.25,
    "priority": 1,
}
# A gift box of the same units as one plain order (`--bundle-share` of the orders buy it): it
# reserves the same stock rows through the bundle's components.
BUNDLE = "GIFT-BENCH"
BUNDLE_PRICE = "149.70"
CATALOG = {
    "TEA-LJ-250": ("西湖龙井 250g", "Longjing tea 250 g"),
    "CUP-CER-01": ("青瓷茶杯", "Celadon tea cup"),
}
# Units received per SKU: enough for every order a full `make bench` creates, several times over.
STOCK_UNITS = 10_000_000

_PHONE = "13899990000"
_TEMPLATE = orjson.dumps(
    {
        "channel": CHANNEL,
        "customer": {"name": "张三", "phone": _PHONE},
        "shipping_address": {
            "name": "张三",
            "phone": _PHONE,
            "province": PROVINCE,
            "city": "上海市",
            "district": "浦东新区",
            "line1": "世纪大道1号",
            "postal_code": "200120",
        },
        "lines": [
            {"sku": sku, "quantity": quantity, "unit_price": price}
            for sku, (quantity, price) in LINES.items()
        ],
        "currency": "CNY",
    }
)
_PARTS = _TEMPLATE.split(_PHONE.encode())
_BUNDLE_DOC = orjson.loads(_TEMPLATE)
_BUNDLE_DOC["lines"] = [{"sku": BUNDLE, "quantity": 1, "unit_price": BUNDLE_PRICE}]
_BUNDLE_PARTS = orjson.dumps(_BUNDLE_DOC).split(_PHONE.encode())


def phone(n: int) -> str:
    """A valid mainland mobile number that differs for each request number."""
    return f"138{n % 100_000_000:08d}"


def order_body(n: int, bundle_share: float = 0.0) -> bytes:
    """The JSON body of request number `n` (its phone numbers differ from its neighbours');
    a `bundle_share` of the requests (spread evenly) buy the gift box instead of its parts."""
    bundle = bundle_share > 0 and (n * 61 % 100) < bundle_share * 100
    return phone(n).encode().join(_BUNDLE_PARTS if bundle else _PARTS)
