"""One customer across channels: the same phone, or a platform's buyer id where phones are
masked, finds the same customer; an order that links two customers merges them."""

import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.customers.models import Customer, CustomerIdentity, CustomerOrder
from tests.customers.helpers import customer_of, ingested, live_customers, order, profile, run

pytestmark = pytest.mark.anyio

MASKED = "138****1234"  # what Taobao/JD/Douyin exports show instead of the buyer's phone


async def test_the_same_phone_on_two_channels_is_one_customer(db: Database) -> None:
    # Given one buyer ordering on the mini-program and on Taobao with the same phone,
    # written differently, and another buyer
    a = await order(db, "13812345678", channel="wechat_mini")
    b = await order(db, "+86 138 1234 5678", channel="taobao", external_id="TB-1")
    other = await order(db, "13900001111", channel="taobao", external_id="TB-2")
    # When the events are delivered
    await run(db)
    # Then the first two orders belong to one customer, the third to another
    assert await customer_of(db, a.order_no) == await customer_of(db, b.order_no)
    assert await customer_of(db, other.order_no) != await customer_of(db, a.order_no)
    assert len(await live_customers(db)) == 2
    p = await profile(db, await customer_of(db, a.order_no))
    assert (p.orders_90d, p.channels) == (2, ["taobao", "wechat_mini"])


async def test_a_masked_phone_with_the_same_buyer_id_is_the_same_customer(db: Database) -> None:
    # Given two platform orders whose phones are masked the same way, by two different buyers,
    # and a third order by the first buyer
    first = await order(db, MASKED, channel="taobao", external_id="TB-10")
    stranger = await order(db, MASKED, channel="taobao", external_id="TB-11")
    again = await order(db, MASKED, channel="taobao", external_id="TB-12")
    for o, buyer in ((first, "tb_buyer_1"), (stranger, "tb_buyer_2"), (again, "tb_buyer_1")):
        await ingested(db, o, "taobao", buyer, ["茶叶"])
    # When the events are delivered
    await run(db)
    # Then the masked phone linked nobody: the buyer id did
    assert await customer_of(db, first.order_no) == await customer_of(db, again.order_no)
    assert await customer_of(db, stranger.order_no) != await customer_of(db, first.order_no)
    async with db.transaction(write=False) as session:
        kinds = (
            await session.execute(
                select(
                    CustomerIdentity.kind, CustomerIdentity.platform, CustomerIdentity.masked
                ).where(CustomerIdentity.customer_id == await customer_of(db, first.order_no))
            )
        ).all()
    assert [tuple(k) for k in kinds] == [("platform_buyer", "taobao", "taobao:tb******_1")]
    # the orders merged in from the temporary per-order customers are all counted once
    assert len(await live_customers(db)) == 2
    p = await profile(db, await customer_of(db, first.order_no))
    assert (p.orders_90d, p.favourite_categories) == (2, ["茶叶"])


async def test_an_order_linking_two_customers_merges_them_into_the_older(db: Database) -> None:
    # Given customer 1 known by phone P1 and Taobao buyer B1, customer 2 known by phone P2
    one = await order(db, "13811112222", channel="taobao", external_id="TB-20")
    await ingested(db, one, "taobao", "B1")
    two = await order(db, "13933334444", channel="wechat_mini")
    await run(db)
    c1, c2 = await customer_of(db, one.order_no), await customer_of(db, two.order_no)
    assert c1 < c2
    # When a Taobao order arrives with phone P2 and buyer id B1
    bridge = await order(db, "13933334444", channel="taobao", external_id="TB-21")
    await ingested(db, bridge, "taobao", "B1")
    await run(db)
    # Then the younger customer is merged into the older, which owns everything
    assert await live_customers(db) == [c1]
    for o in (one, two, bridge):
        assert await customer_of(db, o.order_no) == c1
    async with db.transaction(write=False) as session:
        merged = await session.get(Customer, c2)
        assert merged is not None and merged.merged_into_id == c1
        identities = await session.scalar(
            select(func.count())
            .select_from(CustomerIdentity)
            .where(CustomerIdentity.customer_id == c1)
        )
        orders = await session.scalar(
            select(func.count()).select_from(CustomerOrder).where(CustomerOrder.customer_id == c1)
        )
    assert (identities, orders) == (3, 3)
    assert (await profile(db, c1)).orders_90d == 3
