"""The canonical order: what every platform adapter (webhook, pull, file) maps its orders into.

Adapters convert at the edge: amounts to minor units of the order's currency, timestamps to
timezone-aware UTC from each platform's own convention, platform statuses to `PlatformStatus`.
The raw payload travels with the order so that nothing the platform said is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class PlatformStatus(StrEnum):
    """Where the platform says the order stands, in our words."""

    UNPAID = "unpaid"  # placed, not paid yet
    PAID = "paid"  # paid, waiting for us to ship
    SHIPPED = "shipped"  # shipped (by us or the platform)
    DELIVERED = "delivered"
    CANCELLED = "cancelled"  # cancelled before shipping (buyer, platform or timeout)
    REFUNDED = "refunded"  # refunded in full


@dataclass(frozen=True, slots=True)
class CanonicalLine:
    platform_sku: str  # the platform's SKU or item code; mapped to ours by the SKU mapping
    quantity: int
    unit_price_minor: int
    title: str = ""
    discount_minor: int = 0
    category: str = ""


@dataclass(frozen=True, slots=True)
class CanonicalAddress:
    name: str
    phone: str  # may be platform-masked ("138****1234"); kept as given
    province: str
    city: str
    district: str
    line1: str
    postal_code: str = ""
    country: str = "CN"


@dataclass(frozen=True, slots=True)
class CanonicalOrder:
    platform: str  # shopify | amazon | pinduoduo | douyin | jd | taobao | file
    external_id: str  # the platform's order id, unique per account
    status: PlatformStatus
    currency: str  # ISO 4217
    lines: tuple[CanonicalLine, ...]
    buyer_name: str
    buyer_phone: str
    address: CanonicalAddress
    placed_at: datetime  # UTC, aware
    updated_at: datetime  # UTC, aware; orders the platform's changes
    paid_at: datetime | None = None  # UTC, aware
    discount_minor: int = 0  # order-level discount on top of line discounts
    shipping_minor: int = 0  # postage the buyer paid (after any shipping discount)
    tax_minor: int = 0  # tax charged on top of the prices (0 where prices include it)
    fee_minor: int = 0  # platform fees the buyer paid on top (e.g. cash on delivery)
    # The platform's own figure of what the buyer pays (Shopify total_price, Amazon
    # OrderTotal, Pinduoduo pay_amount...): compared with our sum, never used in its place.
    platform_total_minor: int | None = None
    # The platform's ciphertext of fields it encrypts (field name -> ciphertext), kept as
    # ciphertext for the platform's decrypt API; never stored in a name or phone column.
    encrypted: dict[str, str] = field(default_factory=dict)
    # The plaintext of `encrypted` as the platform's decrypt service answered it (field name ->
    # value; Pinduoduo pdd.open.decrypt.batch), stored only inside our own encrypted columns.
    decrypted: dict[str, str] = field(default_factory=dict)
    # Why the configured decrypt service could not decrypt it ("" when it did or none is set):
    # the order is created with a blocking `address_not_decrypted` hold.
    decrypt_error: str = ""
    buyer_platform_id: str = ""  # where a platform masks phones, its stable buyer id
    buyer_email: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def subtotal_minor(self) -> int:
        return sum(line.unit_price_minor * line.quantity for line in self.lines)

    @property
    def total_minor(self) -> int:
        """Our sum: lines - discounts + shipping + tax + fees."""
        line_discounts = sum(line.discount_minor for line in self.lines)
        return (
            self.subtotal_minor
            - line_discounts
            - self.discount_minor
            + self.shipping_minor
            + self.tax_minor
            + self.fee_minor
        )
