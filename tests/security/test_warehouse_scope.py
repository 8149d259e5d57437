"""Finding: the warehouse role saw the full contact of an unpaid, unallocated order, and a
warehouse key confirmed and shipped another warehouse's parcel."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.auth import service as auth_service
from ordertally.core.db import Database
from ordertally.fulfillment.models import Shipment
from ordertally.orders.models import PiiAccess
from tests.factories import add_warehouse, auth, make_order
from tests.fulfillment.helpers import SECOND_WAREHOUSE, shipments, split_paid_order

pytestmark = pytest.mark.anyio
LABEL = {
    "name": "李四",
    "phone": "+8613987654321",
    "province": "上海市",
    "city": "上海市",
    "district": "浦东新区",
    "line1": "世纪大道1号",
    "postal_code": "200120",
}


async def _scoped_key(db: Database, *warehouses: str) -> str:
    async with db.transaction() as session:
        _, raw = await auth_service.create_api_key(
            session, f"wh-{'-'.join(warehouses)}", "warehouse", list(warehouses)
        )
    return raw


async def _accesses(db: Database) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(PiiAccess)) or 0)


def _contact(client: httpx.AsyncClient, order_no: str, key: str):  # type: ignore[no-untyped-def]
    return client.get(
        f"/api/v1/orders/{order_no}/contact", params={"reason": "print label"}, headers=auth(key)
    )


async def test_the_warehouse_role_sees_no_contact_of_an_unallocated_order(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an unpaid order and a paid (not yet allocated) one
    unpaid = await make_order(db)
    paid = await make_order(db, status="paid")
    # When the (unscoped) warehouse role asks for their contact
    refused = [await _contact(client, o.order_no, keys["warehouse"]) for o in (unpaid, paid)]
    # Then both are refused, and no access was logged
    assert [r.status_code for r in refused] == [403, 403]
    assert refused[0].json()["code"] == "order.contact_not_allowed"
    assert await _accesses(db) == 0


async def test_the_warehouse_role_sees_only_the_label_of_an_allocated_order(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an allocated order
    order = await make_order(db, status="allocated")
    # When the warehouse role and ops read its contact
    warehouse = await _contact(client, order.order_no, keys["warehouse"])
    ops = await _contact(client, order.order_no, keys["ops"])
    # Then the warehouse gets the recipient for the label and nothing about the buyer
    assert warehouse.status_code == 200
    assert warehouse.json() == {
        "customer_name": None,
        "customer_phone": None,
        "shipping_address": LABEL,
    }
    assert (
        ops.json()["customer_name"] == "张三" and ops.json()["customer_phone"] == "+8613812345678"
    )
    assert await _accesses(db) == 2


async def test_a_scoped_key_sees_and_ships_only_its_own_warehouse(
    client: httpx.AsyncClient, db: Database
) -> None:
    # Given an order split over WH-TEST and WH-B, and keys scoped to WH-B and to a third warehouse
    order = await split_paid_order(db)
    await add_warehouse(db, "WH-C")
    wh_b = await _scoped_key(db, SECOND_WAREHOUSE)
    wh_c = await _scoped_key(db, "WH-C")
    theirs, mine = sorted(
        await shipments(db, order.id), key=lambda s: s.warehouse_code != "WH-TEST"
    )
    assert (theirs.warehouse_code, mine.warehouse_code) == ("WH-TEST", SECOND_WAREHOUSE)
    # When each key reads the contact and confirms/ships the other warehouse's parcel and its own
    other_contact = await _contact(client, order.order_no, wh_c)
    own_contact = await _contact(client, order.order_no, wh_b)
    confirm_theirs = await client.post(f"/api/v1/shipments/{theirs.id}/confirm", headers=auth(wh_b))
    ship_theirs = await client.post(
        f"/api/v1/shipments/{theirs.id}/ship", json={"waybill_no": "SF0001"}, headers=auth(wh_b)
    )
    confirm_mine = await client.post(f"/api/v1/shipments/{mine.id}/confirm", headers=auth(wh_b))
    by_list = await client.post(
        "/api/v1/shipments/import",
        content=b"order_no,waybill_no\n",
        headers=auth(wh_b, **{"Content-Type": "text/csv"}),
    )
    # Then only its own warehouse's work is allowed; the other parcel is untouched
    assert other_contact.status_code == 403
    assert own_contact.status_code == 200 and own_contact.json()["shipping_address"] == LABEL
    assert (confirm_theirs.status_code, ship_theirs.status_code) == (403, 403)
    assert confirm_theirs.json()["code"] == "auth.forbidden"
    assert confirm_mine.status_code == 200, confirm_mine.text
    assert by_list.status_code == 403
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                Shipment.warehouse_code, Shipment.status, Shipment.confirmed_by, Shipment.waybill_no
            )
        )
        state = {code: (status, by, waybill) for code, status, by, waybill in rows.all()}
    assert state == {
        "WH-TEST": ("planned", "", None),
        SECOND_WAREHOUSE: ("planned", f"wh-{SECOND_WAREHOUSE}", None),
    }
    assert await _accesses(db) == 1
