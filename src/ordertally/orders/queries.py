"""What other domains read and write of the orders domain, by name.

Fulfillment and customers call these instead of reading or writing `sales_order` themselves:
the orders domain stays the only one that touches its tables. Session functions never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.crypto import get_cipher
from ordertally.orders import repository
from ordertally.orders.models import OrderLine, SalesOrder
from ordertally.orders.service import PII_ADDRESS
from ordertally.orders.state_machine import Status

# The length of `sales_order.waybill_nos`.
WAYBILL_NOS_MAX = 500


async def get_by_id(session: AsyncSession, order_id: int) -> SalesOrder | None:
    """One order by id, read fresh."""
    return await repository.get_by_id(session, order_id)


async def get_by_no(session: AsyncSession, order_no: str) -> SalesOrder | None:
    """One order by its number."""
    return await repository.get_by_no(session, order_no)


async def get_many(session: AsyncSession, order_ids: Sequence[int]) -> list[SalesOrder]:
    """Orders by id, in id order, without locks (a read)."""
    if not order_ids:
        return []
    return await repository.get_many(session, sorted(set(order_ids)))


async def lock(session: AsyncSession, order_ids: Sequence[int]) -> list[SalesOrder]:
    """Orders by id, read fresh and locked in id order: one order, one writer, no deadlock."""
    if not order_ids:
        return []
    return await repository.lock_many(session, sorted(set(order_ids)))


async def hold(session: AsyncSession, order_ids: Sequence[int]) -> None:
    """Lock orders as `lock` does (id order; one order, one writer) without loading them: for a
    writer that must hold the order but rarely changes it."""
    if order_ids:
        await repository.hold(session, sorted(set(order_ids)))


async def lines_of(session: AsyncSession, order_id: int) -> list[OrderLine]:
    """An order's lines in line order."""
    return await repository.lines_of(session, order_id)


async def lines_of_many(session: AsyncSession, order_ids: Sequence[int]) -> list[OrderLine]:
    """Lines of many orders, by order then line number."""
    return await repository.lines_of_many(session, list(order_ids))


async def statuses_of(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, str]:
    """The current status of each of these orders (missing ones are left out)."""
    if not order_ids:
        return {}
    return await repository.statuses_of(session, sorted(set(order_ids)))


async def paid_order_ids(session: AsyncSession, *, after_id: int, limit: int) -> list[int]:
    """Ids of paid orders (not allocated yet), ascending from after `after_id`."""
    return await repository.ids_in_status(
        session, Status.PAID.value, after_id=after_id, limit=limit
    )


def shipping_address(order: SalesOrder) -> dict[str, Any]:
    """The order's decrypted shipping address (name, phone, province, city, district, line1…),
    for a carrier's waybill: never for display."""
    doc: dict[str, Any] = orjson.loads(
        get_cipher().decrypt(order.shipping_address_enc, PII_ADDRESS)
    )
    return doc


async def set_waybills(
    session: AsyncSession, order_id: int, waybill_nos: Sequence[str], at: datetime
) -> None:
    """Record the waybill numbers an order left with (sorted, space separated, truncated to the
    column), as search and exports show them."""
    joined = " ".join(sorted(set(waybill_nos)))[:WAYBILL_NOS_MAX]
    await repository.set_waybill_nos(session, order_id, joined, at)


async def set_waybills_many(
    session: AsyncSession, waybills: dict[int, Sequence[str]], at: datetime
) -> None:
    """`set_waybills` for several orders ({order id: waybill numbers}) in one statement."""
    if waybills:
        await repository.set_waybill_nos_many(
            session,
            [
                {"oid": order_id, "nos": " ".join(sorted(set(nos)))[:WAYBILL_NOS_MAX], "at": at}
                for order_id, nos in sorted(waybills.items())
            ],
        )
