"""An order's personal data: the purposes it is encrypted under, how it is masked for display,
and revealing it to someone allowed to see it (every reveal is logged)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.orders import repository
from ordertally.orders.errors import OrderNotFound

PII_NAME = "sales_order.customer_name"
PII_PHONE = "sales_order.customer_phone"
PII_ADDRESS = "sales_order.shipping_address"


def mask_name(name: str) -> str:
    """Keep the first character of each word: 张三 -> 张*, Alice Smith -> A**** S****."""
    return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.split(" ") if part) or "*"


async def reveal_contact(
    session: AsyncSession,
    order_no: str,
    *,
    actor_id: str,
    role: str,
    reason: str,
    source_ip: str | None,
) -> dict[str, Any]:
    """Decrypt an order's personal data for someone allowed to see it, and log that they did."""
    order = await repository.get_by_no(session, order_no)
    if order is None:
        raise OrderNotFound(f"order {order_no} does not exist")
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
    return {
        "customer_name": cipher.decrypt(order.customer_name_enc, PII_NAME),
        "customer_phone": cipher.decrypt(order.customer_phone_enc, PII_PHONE),
        "shipping_address": orjson.loads(cipher.decrypt(order.shipping_address_enc, PII_ADDRESS)),
    }
