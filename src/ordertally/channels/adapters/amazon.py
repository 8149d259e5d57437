"""Amazon SP-API Orders v0: getOrders + getOrderItems shapes -> CanonicalOrder, and the client.

`ItemPrice` is the price of the whole order item (unit price x quantity); Money is
{CurrencyCode, Amount}; times are ISO-8601 UTC. The pull window is `LastUpdatedAfter` /
`LastUpdatedBefore` (Before at least two minutes behind now), paged by `NextToken`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ordertally.channels.adapters.common import AdapterError, e164_or_given, iso_utc, minor, text
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)

MIN_LAG = timedelta(minutes=2)
MAX_RESULTS = 100

STATUS = {
    "Pending": PlatformStatus.UNPAID,
    "PendingAvailability": PlatformStatus.UNPAID,
    "Unshipped": PlatformStatus.PAID,
    "PartiallyShipped": PlatformStatus.PAID,
    "Shipped": PlatformStatus.SHIPPED,
    "InvoiceUnconfirmed": PlatformStatus.SHIPPED,
    "Canceled": PlatformStatus.CANCELLED,
    "Unfulfillable": PlatformStatus.CANCELLED,
}


def iso(at: datetime) -> str:
    """ISO-8601 UTC with a Z, as SP-API wants it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: dict[str, Any] | None, currency: str) -> int:
    if not value:
        return 0
    if text(value.get("CurrencyCode")) not in ("", currency):
        raise AdapterError(f"mixed currencies {value.get('CurrencyCode')} and {currency}")
    return minor(value.get("Amount"), currency)


def to_canonical(order: dict[str, Any], items: list[dict[str, Any]]) -> CanonicalOrder:
    """An Amazon order and its items as a canonical order."""
    try:
        external_id = text(order["AmazonOrderId"])
        status = STATUS[text(order["OrderStatus"])]
        placed_at = iso_utc(order["PurchaseDate"])
        updated_at = iso_utc(order["LastUpdateDate"])
    except KeyError as exc:
        raise AdapterError(f"Amazon order lacks or has an unknown {exc.args[0]!r}") from exc
    currency = text((order.get("OrderTotal") or {}).get("CurrencyCode"))
    if not currency:
        currency = next(
            (
                text((i.get("ItemPrice") or {}).get("CurrencyCode"))
                for i in items
                if i.get("ItemPrice")
            ),
            "",
        )
    if not currency:
        raise AdapterError(f"Amazon order {external_id} has no currency")
    lines: list[CanonicalLine] = []
    shipping = 0
    for item in items:
        quantity = int(item.get("QuantityOrdered") or 0)
        if quantity <= 0:
            continue  # a cancelled item line
        total = _money(item.get("ItemPrice"), currency)
        unit = -(-total // quantity)  # ceil: the rounding goes into the line discount
        discount = unit * quantity - total + _money(item.get("PromotionDiscount"), currency)
        shipping += _money(item.get("ShippingPrice"), currency) - _money(
            item.get("ShippingDiscount"), currency
        )
        lines.append(
            CanonicalLine(
                platform_sku=text(item.get("SellerSKU")) or text(item.get("ASIN")),
                quantity=quantity,
                unit_price_minor=unit,
                title=text(item.get("Title"))[:200],
                discount_minor=discount,
            )
        )
    ship = order.get("ShippingAddress") or {}
    buyer = order.get("BuyerInfo") or {}
    region = text(ship.get("CountryCode")) or None
    phone = e164_or_given(text(ship.get("Phone")), region)
    line1 = " ".join(
        p
        for p in (text(ship.get(k)) for k in ("AddressLine1", "AddressLine2", "AddressLine3"))
        if p
    )
    return CanonicalOrder(
        platform="amazon",
        external_id=external_id,
        status=status,
        currency=currency,
        lines=tuple(lines),
        buyer_name=text(buyer.get("BuyerName")) or text(ship.get("Name")),
        buyer_phone=phone,
        address=CanonicalAddress(
            name=text(ship.get("Name")),
            phone=phone,
            province=text(ship.get("StateOrRegion")),
            city=text(ship.get("City")),
            district=text(ship.get("District") or ship.get("County")),
            line1=line1,
            postal_code=text(ship.get("PostalCode")),
            country=text(ship.get("CountryCode")) or "CN",
        ),
        placed_at=placed_at,
        updated_at=updated_at,
        paid_at=placed_at if status in (PlatformStatus.PAID, PlatformStatus.SHIPPED) else None,
        shipping_minor=max(shipping, 0),
        buyer_platform_id=text(buyer.get("BuyerEmail")),
        buyer_email=text(buyer.get("BuyerEmail")),
        raw={"order": order, "items": items},
    )


class AmazonClient:
    """getOrders / getOrderItems over HTTP; base URL and token come from the account."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, access_token: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = access_token

    async def _get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        return await self.http.get(
            f"{self.base_url}{path}",
            params=params,
            headers={"x-amz-access-token": self.token, "accept": "application/json"},
        )

    async def get_orders(
        self,
        marketplace_id: str,
        after: datetime,
        before: datetime,
        *,
        page_size: int,
        next_token: str | None,
    ) -> httpx.Response:
        params: dict[str, Any] = {
            "MarketplaceIds": marketplace_id,
            "LastUpdatedAfter": iso(after),
            "LastUpdatedBefore": iso(before),
            "MaxResultsPerPage": min(page_size, MAX_RESULTS),
        }
        if next_token:
            params["NextToken"] = next_token
        return await self._get("/orders/v0/orders", params)

    async def get_order_items(self, order_id: str, next_token: str | None) -> httpx.Response:
        params = {"NextToken": next_token} if next_token else {}
        return await self._get(f"/orders/v0/orders/{order_id}/orderItems", params)
