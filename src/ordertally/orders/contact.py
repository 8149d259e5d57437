"""An order's personal data: the purposes it is encrypted under, how it is masked for display,
and revealing it to someone allowed to see it (every reveal is logged)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, phones
from ordertally.core.crypto import get_cipher
from ordertally.inventory import service as inventory_service
from ordertally.orders import repository
from ordertally.orders.errors import ContactNotAllowed, OrderNotFound
from ordertally.orders.state_machine import Status

PII_NAME = "sales_order.customer_name"
PII_PHONE = "sales_order.customer_phone"
PII_ADDRESS = "sales_order.shipping_address"
# Where a parcel is being prepared or travels: the only time a warehouse needs the recipient.
LABEL_STATUSES = frozenset({Status.ALLOCATED, Status.FULFILLING, Status.SHIPPED})
LABEL_FIELDS = frozenset(
    {"name", "phone", "province", "city", "district", "line1", "postal_code", "country"}
)


def mask_name(name: str) -> str:
    """Keep the first character of each word: 张三 -> 张*, Alice Smith -> A**** S****."""
    return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.split(" ") if part) or "*"


def address_columns(address: dict[str, str]) -> dict[str, str]:
    """The columns a shipping address is stored in: encrypted whole, masked name and phone,
    and the region parts routing and search read (as order creation writes them)."""
    phone = phones.normalise(address["phone"])
    doc = {
        "name": address["name"],
        "phone": phone,
        "province": address["province"],
        "city": address["city"],
        "district": address.get("district", ""),
        "line1": address["line1"],
        "postal_code": address.get("postal_code", ""),
    }
    return {
        "shipping_address_enc": get_cipher().encrypt(orjson.dumps(doc).decode(), PII_ADDRESS),
        "ship_name_masked": mask_name(doc["name"]),
        "ship_phone_masked": phones.mask(phone),
        "ship_province": doc["province"],
        "ship_city": doc["city"],
        "ship_district": doc["district"],
    }


async def reveal_contact(
    session: AsyncSession,
    order_no: str,
    *,
    actor_id: str,
    role: str,
    reason: str,
    source_ip: str | None,
    warehouses: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Decrypt an order's personal data for someone allowed to see it, and log that they did.

    The warehouse role and warehouse-scoped callers see it only once the order is allocated
    (to one of their warehouses, when scoped), and only what a label needs. A channel-scoped
    caller sees only orders of its channel accounts.
    """
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
    if channels is not None and order.channel not in channels:
        raise ContactNotAllowed(f"order {order_no} does not come from your channel accounts")
    label_only = role == "warehouse" or warehouses is not None
    if label_only:
        if order.status not in LABEL_STATUSES:
            raise ContactNotAllowed(
                f"order {order_no} is {order.status}: its contact is shown to warehouses only "
                "once it is allocated"
            )
        if warehouses is not None and not (
            await inventory_service.warehouses_of_order(session, order.id)
        ) & set(warehouses):
            raise ContactNotAllowed(f"order {order_no} is not allocated to your warehouse")
    cipher = get_cipher()
    await repository.add_pii_access(
        session,
        {
            "order_id": order.id,
            "actor_id": actor_id,
            "role": role,
            "reason": reason,
            "source_ip": source_ip,
            "accessed_at": clock.now(),
        },
    )
    address = orjson.loads(cipher.decrypt(order.shipping_address_enc, PII_ADDRESS))
    if label_only:  # the recipient on the label, nothing about the buyer
        return {
            "customer_name": None,
            "customer_phone": None,
            "shipping_address": {k: v for k, v in address.items() if k in LABEL_FIELDS},
        }
    return {
        "customer_name": cipher.decrypt(order.customer_name_enc, PII_NAME),
        "customer_phone": cipher.decrypt(order.customer_phone_enc, PII_PHONE),
        "shipping_address": address,
    }
