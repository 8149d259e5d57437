"""A shipped list with a CSV field longer than the csv module's limit (131,072 characters) is
refused with the ship-list problem (422) and ships nothing, instead of a 500 (issue 14)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.orders.models import SalesOrder
from tests.factories import auth
from tests.fulfillment.helpers import split_paid_order

pytestmark = pytest.mark.anyio


async def test_an_oversized_csv_field_is_a_422_and_ships_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a paid order and a shipped list whose second row has a 200,000-character cell
    order = await split_paid_order(db)
    csv_text = (
        "订单号,快递公司,运单号\n"
        f"{order.order_no},zhongtong,ZT7100000000001\n"
        f'{order.order_no},zhongtong,"{"x" * 200_000}"\n'
    )
    # When the warehouse uploads it
    r = await client.post(
        "/api/v1/shipments/import",
        content=csv_text.encode(),
        headers=auth(keys["warehouse"], **{"Content-Type": "text/csv"}),
    )
    # Then it is the ship-list problem, naming the line, and the order did not move
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "fulfillment.ship_list_invalid"
    assert "line 3" in problem["detail"]
    async with db.transaction(write=False) as session:
        status = await session.scalar(
            select(SalesOrder.status).where(SalesOrder.order_no == order.order_no)
        )
    assert status != "shipped"
