"""Shared steps of the customers tests: drive orders, publish channel events, drain, read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

import ordertally.customers.consumers
import ordertally.rules.consumers  # noqa: F401  (the consumers, the job, the rules raising flags)
from ordertally.channels.events import ChannelOrderIngested
from ordertally.core.db import Base, Database
from ordertally.core.settings import get_settings
from ordertally.customers import service
from ordertally.customers.models import (
    Customer,
    CustomerFlag,
    CustomerIdentity,
    CustomerOrder,
    CustomerProfile,
    CustomerTag,
)
from ordertally.events import outbox
from ordertally.events.dispatcher import drain
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import make_order

CUSTOMER_TABLES: tuple[type[Base], ...] = (
    Customer,
    CustomerIdentity,
    CustomerOrder,
    CustomerProfile,
    CustomerTag,
    CustomerFlag,
    ExceptionCase,
)


async def order(db: Database, phone: str, status: str = "paid", **overrides: Any) -> SalesOrder:
    """An order of the buyer with this phone, created through the service, walked to `status`."""
    return await make_order(db, status, customer={"name": "王小明", "phone": phone}, **overrides)


async def ingested(
    db: Database, o: SalesOrder, platform: str, buyer_id: str, categories: list[str] | None = None
) -> None:
    """Publish what the channels domain publishes after storing a platform order."""
    async with db.transaction() as session:
        await outbox.publish(
            session,
            "ChannelOrderIngested",
            ChannelOrderIngested(
                order_id=o.id,
                order_no=o.order_no,
                account=f"{platform}-shop",
                platform=platform,
                external_id=o.external_id or o.order_no,
                created=True,
                buyer_platform_id=buyer_id,
                categories=categories or [],
            ),
            aggregate_type="order",
            aggregate_id=o.order_no,
        )


async def transition(db: Database, order_no: str, name: str, kind: ActorKind) -> None:
    """Drive one order transition."""
    async with db.transaction() as session:
        await orders_service.transition(session, order_no, name, Actor(kind, "tests"))


async def run(db: Database) -> int:
    """Deliver every pending event to the consumers."""
    return await drain(db, get_settings())


async def customer_of(db: Database, order_no: str) -> int:
    """The live customer an order belongs to."""
    async with db.transaction(write=False) as session:
        row = await session.scalar(select(CustomerOrder).where(CustomerOrder.order_no == order_no))
        assert row is not None, f"{order_no} is not linked"
        return (await service.resolve(session, row.customer_id)).id


async def live_customers(db: Database) -> list[int]:
    """Ids of the customers not merged into another."""
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(Customer.id).where(Customer.merged_into_id.is_(None)).order_by(Customer.id)
        )
        return list(rows.all())


async def profile(db: Database, customer_id: int) -> CustomerProfile:
    async with db.transaction(write=False) as session:
        row = await session.get(CustomerProfile, customer_id)
        assert row is not None
        return row


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the customers tables (and exception cases), for before/after comparisons."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.transaction(write=False) as session:
        for model in CUSTOMER_TABLES:
            table = model.__table__
            rows = (await session.execute(select(table).order_by(*table.primary_key))).all()
            out[table.name] = [tuple(r) for r in rows]
    return out
