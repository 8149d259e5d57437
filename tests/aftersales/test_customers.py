"""The customer profile's 30-day return count comes from after-sales returns: a return case
counts once, a refund-only case does not, and the count ages out after 30 days."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from tests.aftersales.helpers import open_case, paid_order
from tests.customers.helpers import customer_of, profile, run

pytestmark = pytest.mark.anyio


async def test_returns_in_the_profile_come_from_after_sales_cases(db: Database) -> None:
    # Given a buyer with three delivered orders, linked to their profile
    orders = [(await paid_order(db, None, "delivered", external_id=f"C{i}"))[0] for i in range(3)]
    await run(db)
    customer = await customer_of(db, orders[0].order_no)
    assert (await profile(db, customer)).returns_30d == 0
    # When two orders get a return case (one of them twice) and the third a refund only
    for order in (orders[0], orders[1]):
        await open_case(
            db,
            order_no=order.order_no,
            type="return_refund",
            reason_code="size",
            lines=[{"line_no": 1, "quantity": 1}],
            refund_goods="59.90",
        )
    await open_case(
        db,
        order_no=orders[0].order_no,
        type="return_refund",
        reason_code="size",
        lines=[{"line_no": 1, "quantity": 1}],
        refund_goods="59.90",
    )
    await open_case(
        db, order_no=orders[2].order_no, type="refund_only", reason_code="late", refund_goods="5.00"
    )
    await run(db)
    # Then the profile counts two returned orders
    assert (await profile(db, customer)).returns_30d == 2
    # And 31 days later, once the profile ages, none
    clock.advance(timedelta(days=31))
    from ordertally.customers import service as customers_service

    async with db.transaction() as session:
        await customers_service.recompute_profile(session, customer)
    assert (await profile(db, customer)).returns_30d == 0
