"""ingest_orders: create, dedupe, platform changes, holds, masked phones, concurrency."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from sqlalchemy import func, select

from ordertally.channels.canonical import PlatformStatus
from ordertally.channels.errors import AccountNotFound
from ordertally.channels.ingest import ingest_orders
from ordertally.channels.models import ChannelOrderLink
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import OrderEvent, SalesOrder
from tests.channels.helpers import canonical, make_account

pytestmark = pytest.mark.anyio


async def _count(db: Database, model: type, *where: object) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _order(db: Database, order_no: str) -> SalesOrder:
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))
        assert order is not None
        return order


async def _cases(db: Database, order_no: str) -> list[ExceptionCase]:
    order = await _order(db, order_no)
    async with db.transaction(write=False) as session:
        return list(
            (
                await session.scalars(
                    select(ExceptionCase).where(ExceptionCase.order_id == order.id)
                )
            ).all()
        )


async def test_creates_then_dedupes(db: Database) -> None:
    await make_account(db)
    orders = [canonical(f"E{i}") for i in range(5)]
    first = await ingest_orders(db, "shop_a", orders, via="pull")
    assert (first.created, first.updated, first.duplicates, first.held) == (5, 0, 0, 0)
    again = await ingest_orders(db, "shop_a", orders + orders[:2], via="webhook")
    assert (again.created, again.updated, again.duplicates) == (0, 0, 7)
    assert await _count(db, SalesOrder) == 5
    assert await _count(db, ChannelOrderLink) == 5
    order = await _order(db, first.order_nos["E0"])
    assert order.status == "paid" and order.channel == "shop_a" and order.external_id == "E0"
    assert order.total_minor == 5990
    assert await _count(db, OrderEvent, OrderEvent.order_id == order.id) == 1
    types = [t for t in (await _types(db))]
    assert types.count("OrderCreated") == 5 and types.count("ChannelOrderIngested") == 5


async def _types(db: Database) -> list[str]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(OutboxEvent.event_type))).all())


async def test_unknown_account(db: Database) -> None:
    with pytest.raises(AccountNotFound):
        await ingest_orders(db, "nope", [canonical("X")], via="file")


async def test_invalid_order_reported_others_stored(db: Database) -> None:
    await make_account(db)
    bad = canonical("BAD", currency="XXQ")
    result = await ingest_orders(db, "shop_a", [canonical("OK1"), bad], via="file")
    assert result.created == 1
    assert [e for e, _ in result.errors] == ["BAD"]


async def test_unmapped_sku_is_held(db: Database) -> None:
    await make_account(db)
    result = await ingest_orders(db, "shop_a", [canonical("U1", sku="PLATFORM-ONLY-9")], via="pull")
    assert result.created == 1 and result.held == 1
    types = {c.type for c in await _cases(db, result.order_nos["U1"])}
    assert "sku_unmapped" in types
    case = next(c for c in await _cases(db, result.order_nos["U1"]) if c.type == "sku_unmapped")
    assert case.blocking and case.detail["platform_skus"] == ["PLATFORM-ONLY-9"]


async def test_buyer_cancel_before_payment(db: Database) -> None:
    await make_account(db)
    result = await ingest_orders(
        db, "shop_a", [canonical("C1", status=PlatformStatus.UNPAID)], via="pull"
    )
    order_no = result.order_nos["C1"]
    assert (await _order(db, order_no)).status == "pending_payment"
    later = canonical("C1", status=PlatformStatus.CANCELLED, updated=timedelta(minutes=5))
    result = await ingest_orders(db, "shop_a", [later], via="webhook")
    assert result.updated == 1
    assert (await _order(db, order_no)).status == "closed"
    # The same change again is a duplicate.
    assert (await ingest_orders(db, "shop_a", [later], via="pull")).duplicates == 1


async def test_paid_on_the_platform_pays_our_order_and_unpaid_ones_wait_for_the_platform(
    db: Database,
) -> None:
    await make_account(db)
    result = await ingest_orders(
        db, "shop_a", [canonical("P1", status=PlatformStatus.UNPAID)], via="pull"
    )
    order_no = result.order_nos["P1"]
    unpaid = await _order(db, order_no)
    # Our timeout backstops the platform's own unpaid window (72 h), not our 30 minutes
    assert unpaid.payment_deadline_at is not None
    window = unpaid.payment_deadline_at - unpaid.created_at
    assert window == timedelta(hours=72)
    # When the platform says it is paid, our order is paid by channel_sync, with its evidence
    later = canonical("P1", status=PlatformStatus.PAID, updated=timedelta(minutes=3))
    await ingest_orders(db, "shop_a", [later], via="webhook")
    assert (await _order(db, order_no)).status == "paid"
    async with db.transaction(write=False) as session:
        paid = await session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == unpaid.id, OrderEvent.event == "payment_succeeded"
            )
        )
    assert paid is not None
    assert (paid.actor_kind, paid.actor_id) == ("channel_sync", "channel:shop_a")
    assert paid.evidence_ref and paid.evidence_ref.startswith("shopify:P1@")
    assert [c.type for c in await _cases(db, order_no)] == []


async def test_cancel_after_payment_opens_case(db: Database) -> None:
    await make_account(db)
    result = await ingest_orders(db, "shop_a", [canonical("C2")], via="pull")
    later = canonical("C2", status=PlatformStatus.CANCELLED, updated=timedelta(minutes=5))
    await ingest_orders(db, "shop_a", [later], via="pull")
    order_no = result.order_nos["C2"]
    assert (await _order(db, order_no)).status == "paid"
    cases = {c.type: c for c in await _cases(db, order_no)}
    assert cases["platform_cancelled"].blocking


async def test_address_change_before_shipping(db: Database) -> None:
    await make_account(db)
    result = await ingest_orders(db, "shop_a", [canonical("A1")], via="pull")
    moved = canonical("A1", line1="陆家嘴环路1000号", updated=timedelta(minutes=1))
    older = canonical("A1", line1="旧地址", updated=timedelta(seconds=-1))
    result2 = await ingest_orders(db, "shop_a", [older, moved], via="pull")
    assert result2.updated == 1 and result2.duplicates == 1
    cases = {c.type: c for c in await _cases(db, result.order_nos["A1"])}
    assert cases["address_changed"].blocking
    assert "line1" not in cases["address_changed"].detail


async def test_masked_phone_kept_with_own_index(db: Database) -> None:
    await make_account(db, "pdd_a", "pinduoduo")
    one = canonical("P1", phone="138****1234", buyer_id="buyer-1", platform="pinduoduo")
    two = canonical("P2", phone="138****1234", buyer_id="buyer-2", platform="pinduoduo")
    real = canonical("P3", phone="13800001234", platform="pinduoduo")
    result = await ingest_orders(db, "pdd_a", [one, two, real], via="pull")
    assert result.created == 3
    o1, o2, o3 = [await _order(db, result.order_nos[k]) for k in ("P1", "P2", "P3")]
    assert o1.customer_phone_masked == "138****1234" and o1.customer_phone_last4 == "1234"
    assert o1.customer_phone_bidx != o2.customer_phone_bidx
    assert o3.customer_phone_masked == "138****1234"
    assert o3.customer_phone_bidx not in (o1.customer_phone_bidx, o2.customer_phone_bidx)


async def test_concurrent_duplicate_delivery_makes_one_order(db: Database) -> None:
    await make_account(db)
    orders = [canonical(f"R{i}") for i in range(30)]
    results = []

    async def deliver(via: str) -> None:
        results.append(await ingest_orders(db, "shop_a", orders, via=via))

    async with anyio.create_task_group() as tg:
        for via in ("webhook", "pull", "file", "pull"):
            tg.start_soon(deliver, via)
    assert sum(r.created for r in results) == 30
    assert sum(r.duplicates for r in results) == 90
    assert await _count(db, SalesOrder) == 30
