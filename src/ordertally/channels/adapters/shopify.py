"""Shopify: order JSON (webhook body or Admin REST order) -> CanonicalOrder, and webhook HMAC.

Prices are strings in the shop currency; times carry offsets; `financial_status`,
`cancelled_at` and `fulfillment_status` decide the platform status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from ordertally.channels.adapters.common import (
    AdapterError,
    e164_or_given,
    iso_utc,
    minor,
    text,
)
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)

TOPICS = ("orders/create", "orders/updated", "orders/cancelled", "orders/paid", "orders/fulfilled")
# Topics stored like the others and applied by another domain (callbacks.TOPIC_HANDLERS).
OTHER_TOPICS = ("refunds/create",)

_FINANCIAL = {
    "pending": PlatformStatus.UNPAID,
    "authorized": PlatformStatus.PAID,
    "partially_paid": PlatformStatus.PAID,
    "paid": PlatformStatus.PAID,
    "partially_refunded": PlatformStatus.PAID,
    "refunded": PlatformStatus.REFUNDED,
    "voided": PlatformStatus.CANCELLED,
}


def sign(secret: str, body: bytes) -> str:
    """X-Shopify-Hmac-Sha256: base64 of HMAC-SHA256(secret, raw body)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time comparison of the header with our own signature of the raw body."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def status_of(doc: dict[str, Any]) -> PlatformStatus:
    """A Shopify order's status in canonical words."""
    financial = text(doc.get("financial_status")).lower()
    if financial == "refunded":
        return PlatformStatus.REFUNDED
    if doc.get("cancelled_at") or financial == "voided":
        return PlatformStatus.CANCELLED
    status = _FINANCIAL.get(financial, PlatformStatus.UNPAID)
    if status is PlatformStatus.PAID and text(doc.get("fulfillment_status")) == "fulfilled":
        return PlatformStatus.SHIPPED
    return status


def to_canonical(doc: dict[str, Any]) -> CanonicalOrder:
    """One Shopify order (the object itself, or {"order": {...}})."""
    if "order" in doc and isinstance(doc["order"], dict):
        doc = doc["order"]
    try:
        external_id = text(doc["id"])
        currency = text(doc["currency"]).upper()
        placed_at = iso_utc(doc["created_at"])
        updated_at = iso_utc(doc.get("updated_at") or doc["created_at"])
    except KeyError as exc:
        raise AdapterError(f"Shopify order lacks {exc.args[0]!r}") from exc
    lines: list[CanonicalLine] = []
    line_discounts = 0
    for item in doc.get("line_items") or []:
        quantity = int(item.get("quantity") or 0)
        discount = sum(
            minor(a.get("amount"), currency) for a in item.get("discount_allocations") or []
        )
        line_discounts += discount
        sku = text(item.get("sku")) or f"variant-{text(item.get('variant_id'))}"
        lines.append(
            CanonicalLine(
                platform_sku=sku,
                quantity=quantity,
                unit_price_minor=minor(item.get("price"), currency),
                title=text(item.get("name") or item.get("title"))[:200],
                discount_minor=discount,
                category=text(item.get("product_type")),
            )
        )
    total_discounts = minor(doc.get("total_discounts"), currency)
    ship = doc.get("shipping_address") or doc.get("billing_address") or {}
    customer = doc.get("customer") or {}
    region = text(ship.get("country_code")) or None
    phone = e164_or_given(
        text(ship.get("phone")) or text(doc.get("phone")) or text(customer.get("phone")), region
    )
    name = text(ship.get("name")) or " ".join(
        p for p in (text(ship.get("first_name")), text(ship.get("last_name"))) if p
    )
    buyer = " ".join(
        p for p in (text(customer.get("first_name")), text(customer.get("last_name"))) if p
    )
    paid = status_of(doc) in (PlatformStatus.PAID, PlatformStatus.SHIPPED)
    return CanonicalOrder(
        platform="shopify",
        external_id=external_id,
        status=status_of(doc),
        currency=currency,
        lines=tuple(lines),
        buyer_name=buyer or name,
        buyer_phone=phone,
        address=CanonicalAddress(
            name=name,
            phone=phone,
            province=text(ship.get("province")) or text(ship.get("province_code")),
            city=text(ship.get("city")),
            district="",
            line1=" ".join(
                p for p in (text(ship.get("address1")), text(ship.get("address2"))) if p
            ),
            postal_code=text(ship.get("zip")),
            country=text(ship.get("country_code")) or "CN",
        ),
        placed_at=placed_at,
        updated_at=updated_at,
        paid_at=iso_utc(doc["processed_at"]) if paid and doc.get("processed_at") else None,
        discount_minor=max(total_discounts - line_discounts, 0),
        shipping_minor=sum(
            minor(s.get("price"), currency) for s in doc.get("shipping_lines") or []
        ),
        # Prices that include tax (`taxes_included`) carry it already: nothing is added.
        tax_minor=0 if doc.get("taxes_included") else minor(doc.get("total_tax"), currency),
        fee_minor=minor(doc.get("total_tip_received"), currency),
        platform_total_minor=(
            minor(doc["total_price"], currency) if doc.get("total_price") is not None else None
        ),
        buyer_platform_id=text(customer.get("id")),
        buyer_email=text(doc.get("email") or customer.get("email")),
        raw=doc,
    )
