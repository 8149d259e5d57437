"""Amazon SP-API Orders v0: getOrders + getOrderItems shapes -> CanonicalOrder, and the client.

`ItemPrice` is the price of the whole order item (unit price x quantity); Money is
{CurrencyCode, Amount}; times are ISO-8601 UTC. The pull window is `LastUpdatedAfter` /
`LastUpdatedBefore` (Before at least two minutes behind now), paged by `NextToken`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
from ordertally.core import clock

MIN_LAG = timedelta(minutes=2)
MAX_RESULTS = 100

# Reports API 2021-06-30: the seller-fulfilled returns report, tab-separated, with the columns
# of Amazon's "Returns reports attributes" page in its order (after-sales reads it; the channel
# simulator serves it).
RETURNS_REPORT = "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE"
# The returns report's columns, as Amazon's "Returns reports attributes" page lists them.
RETURNS_COLUMNS = (
    "Order ID",
    "Order date",
    "Return request date",
    "Return request status",
    "Amazon RMA ID",
    "Merchant RMA ID",
    "Label type",
    "Label cost",
    "Currency code",
    "Return carrier",
    "Tracking ID",
    "Label to be paid by",
    "A-to-Z Claim",
    "Is prime",
    "ASIN",
    "Merchant SKU",
    "Item Name",
    "Return quantity",
    "Return Reason",
    "In policy",
    "Return type",
    "Resolution",
    "Invoice number",
    "Return delivery date",
    "Order Amount",
    "Order quantity",
    "SafeT Action reason",
    "SafeT claim id",
    "SafeT claim state",
    "SafeT claim creation time",
    "SafeT claim reimbursement amount",
    "Refunded Amount",
)

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


# Marketplace id -> (country, currency): a Pending order has no OrderTotal nor ItemPrice, and
# an order without a shipping address is still in its marketplace's country (SP-API docs,
# "Marketplace IDs").
MARKETPLACES: dict[str, tuple[str, str]] = {
    "ATVPDKIKX0DER": ("US", "USD"),
    "A2EUQ1WTGCTBG2": ("CA", "CAD"),
    "A1AM78C64UM0Y8": ("MX", "MXN"),
    "A2Q3Y263D00KWC": ("BR", "BRL"),
    "A1F83G8C2ARO7P": ("GB", "GBP"),
    "A1PA6795UKMFR9": ("DE", "EUR"),
    "A13V1IB3VIYZZH": ("FR", "EUR"),
    "APJ6JRA9NG5V4": ("IT", "EUR"),
    "A1RKKUPIHCS9HS": ("ES", "EUR"),
    "A1805IZSGTT6HS": ("NL", "EUR"),
    "AMEN7PMS3EDWL": ("BE", "EUR"),
    "A2NODRKZP88ZB9": ("SE", "SEK"),
    "A1C3SOZRARQ6R3": ("PL", "PLN"),
    "A33AVAJ2PDY3EV": ("TR", "TRY"),
    "ARBP9OOSHTCHU": ("EG", "EGP"),
    "A17E79C6D8DWNP": ("SA", "SAR"),
    "A2VIGQ35RCS4UG": ("AE", "AED"),
    "A21TJRUUN4KGV": ("IN", "INR"),
    "A1VC38T7YXB528": ("JP", "JPY"),
    "A39IBJ37TRP1C6": ("AU", "AUD"),
    "A19VAU5U5O7RUS": ("SG", "SGD"),
}
# Marketplaces whose prices exclude sales tax: ItemTax/ShippingTax come on top of the prices
# and are part of OrderTotal. Elsewhere prices include VAT/GST and the tax fields only state it.
TAX_ON_TOP = frozenset({"ATVPDKIKX0DER", "A2EUQ1WTGCTBG2"})


def iso(at: datetime) -> str:
    """ISO-8601 UTC with a Z, as SP-API wants it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: dict[str, Any] | None, currency: str) -> int:
    if not value:
        return 0
    if text(value.get("CurrencyCode")) not in ("", currency):
        raise AdapterError(f"mixed currencies {value.get('CurrencyCode')} and {currency}")
    return minor(value.get("Amount"), currency)


def to_canonical(
    order: dict[str, Any], items: list[dict[str, Any]], *, fallback_currency: str = ""
) -> CanonicalOrder:
    """An Amazon order and its items as a canonical order. `fallback_currency` (the account's
    `config.currency`) serves a Pending order of a marketplace this table does not know."""
    try:
        external_id = text(order["AmazonOrderId"])
        status = STATUS[text(order["OrderStatus"])]
        placed_at = iso_utc(order["PurchaseDate"])
        updated_at = iso_utc(order["LastUpdateDate"])
    except KeyError as exc:
        raise AdapterError(f"Amazon order lacks or has an unknown {exc.args[0]!r}") from exc
    marketplace = text(order.get("MarketplaceId"))
    country, market_currency = MARKETPLACES.get(marketplace, ("", ""))
    currency = text((order.get("OrderTotal") or {}).get("CurrencyCode"))
    if not currency:
        currency = next(
            (
                text((i.get("ItemPrice") or {}).get("CurrencyCode"))
                for i in items
                if i.get("ItemPrice")
            ),
            market_currency or fallback_currency,
        )
    if not currency:
        raise AdapterError(f"Amazon order {external_id} has no currency")
    lines: list[CanonicalLine] = []
    shipping = tax = 0
    tax_on_top = marketplace in TAX_ON_TOP
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
        if tax_on_top:
            tax += _money(item.get("ItemTax"), currency) + _money(item.get("ShippingTax"), currency)
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
            country=text(ship.get("CountryCode")) or country,
        ),
        placed_at=placed_at,
        updated_at=updated_at,
        paid_at=placed_at if status in (PlatformStatus.PAID, PlatformStatus.SHIPPED) else None,
        shipping_minor=max(shipping, 0),
        tax_minor=max(tax, 0),
        platform_total_minor=(
            _money(order["OrderTotal"], currency) if order.get("OrderTotal") else None
        ),
        buyer_platform_id=text(buyer.get("BuyerEmail")),
        buyer_email=text(buyer.get("BuyerEmail")),
        raw={"order": order, "items": items},
    )


# Login with Amazon's token endpoint: a refresh token is exchanged here for an access token.
LWA_TOKEN_URL = "https://api.amazon.com/auth/o2/token"
LWA_MARGIN = timedelta(seconds=60)  # refresh this long before the token expires


class LwaError(AdapterError):
    """Login with Amazon refused the refresh token or the client credentials."""


@dataclass(frozen=True, slots=True)
class LwaCredentials:
    url: str
    client_id: str
    client_secret: str
    refresh_token: str


_TOKENS: dict[tuple[str, str, str], tuple[str, datetime]] = {}


async def lwa_access_token(
    http: httpx.AsyncClient, lwa: LwaCredentials, *, force: bool = False
) -> str:
    """An SP-API access token for these LWA credentials: the cached one until shortly before it
    expires (or `force`), else a new one from the LWA token endpoint (grant_type
    refresh_token)."""
    key = (lwa.url, lwa.client_id, hashlib.sha256(lwa.refresh_token.encode()).hexdigest())
    cached = _TOKENS.get(key)
    if cached is not None and not force and clock.now() < cached[1] - LWA_MARGIN:
        return cached[0]
    response = await http.post(
        lwa.url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": lwa.refresh_token,
            "client_id": lwa.client_id,
            "client_secret": lwa.client_secret,
        },
        headers={"accept": "application/json"},
    )
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if response.status_code != 200 or not doc.get("access_token"):
        raise LwaError(
            f"LWA answered {response.status_code}: "
            f"{doc.get('error', '')} {doc.get('error_description', '')}".strip()
        )
    token = str(doc["access_token"])
    _TOKENS[key] = (token, clock.now() + timedelta(seconds=int(doc.get("expires_in") or 3600)))
    return token


class AmazonClient:
    """getOrders / getOrderItems over HTTP. The access token comes from LWA (exchanged from the
    account's refresh token, cached until expiry, exchanged again on a 401/403), or is a fixed
    token the operator supplied."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        access_token: str | None = None,
        *,
        lwa: LwaCredentials | None = None,
    ) -> None:
        if access_token is None and lwa is None:
            raise ValueError("an access token or LWA credentials are needed")
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = access_token
        self.lwa = lwa
        self.refreshed = 0  # access tokens exchanged again after a 401/403
        self.rdt: str | None = None  # a Restricted Data Token for getOrders (buyer PII)

    async def restricted_data_token(self) -> str | None:
        """Ask the Tokens API for an RDT covering getOrders' buyerInfo and shippingAddress;
        None when the application lacks the PII role (403) — the orders then come without
        names, address lines and phones."""
        body = {
            "restrictedResources": [
                {
                    "method": "GET",
                    "path": "/orders/v0/orders",
                    "dataElements": ["buyerInfo", "shippingAddress"],
                }
            ]
        }
        response = await self.http.post(
            f"{self.base_url}/tokens/2021-03-01/restrictedDataToken",
            json=body,
            headers={"x-amz-access-token": await self._token(), "accept": "application/json"},
        )
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise AdapterError(f"createRestrictedDataToken answered {response.status_code}")
        token = response.json().get("restrictedDataToken")
        return str(token) if token else None

    async def _token(self, *, force: bool = False) -> str:
        if self.lwa is None:
            assert self.token is not None
            return self.token
        return await lwa_access_token(self.http, self.lwa, force=force)

    async def _get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        response = await self._send(path, params, await self._token())
        if response.status_code in (401, 403) and self.lwa is not None:
            # An expired or revoked access token: exchange the refresh token again, once.
            self.refreshed += 1
            response = await self._send(path, params, await self._token(force=True))
        return response

    async def _send(self, path: str, params: dict[str, Any], token: str) -> httpx.Response:
        return await self.http.get(
            f"{self.base_url}{path}",
            params=params,
            headers={"x-amz-access-token": token, "accept": "application/json"},
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
        if self.rdt is not None:
            response = await self._send("/orders/v0/orders", params, self.rdt)
            if response.status_code not in (401, 403):
                return response
            self.rdt = await self.restricted_data_token()  # expired: once more
            if self.rdt is not None:
                return await self._send("/orders/v0/orders", params, self.rdt)
        return await self._get("/orders/v0/orders", params)

    async def get_order_items(self, order_id: str, next_token: str | None) -> httpx.Response:
        params = {"NextToken": next_token} if next_token else {}
        return await self._get(f"/orders/v0/orders/{order_id}/orderItems", params)
