"""Review decisions are rows of the transition table (paid → paid): cs hold an order waiting in
review with a reason and pass it later, or edit its address, remark and warehouse; each
decision writes its audit row and event, and a refused one writes nothing."""

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import ordertally.fulfillment.consumers
import ordertally.rules.consumers  # noqa: F401
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.fulfillment import allocation
from ordertally.inventory import service as inventory_service
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderEvent
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import add_warehouse, auth, make_order, receive

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
TEA = [{"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"}]
ADDRESS = {
    "name": "王五",
    "phone": "13700001111",
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "line1": "文三路 1 号",
}


async def _in_review(db: Database, monkeypatch: pytest.MonkeyPatch) -> str:
    """A paid order waiting in review (paid too recently)."""
    monkeypatch.setenv("ORDERTALLY_ORDERS_REVIEW_STRATEGY", "auto")
    monkeypatch.setenv("ORDERTALLY_ORDERS_REVIEW_MIN_PAID_MINUTES", "30")
    reset_settings()
    order = await make_order(db, lines=TEA)
    async with db.transaction() as session:
        await orders_service.transition(
            session, order.order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "t")
        )
    await drain(db, get_settings())
    return order.order_no


async def _trail(db: Database, order_no: str) -> list[tuple[str, str, str, str]]:
    """(event, from, to, actor kind) of the order's audit rows after payment."""
    async with db.transaction(write=False) as session:
        events = await orders_service.events_of(session, order_no)
    return [
        (e.event, str(e.from_status), e.to_status, e.actor_kind)
        for e in events
        if e.event.startswith("review_")
    ]


async def _counts(db: Database) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        audit = await session.scalar(select(func.count()).select_from(OrderEvent))
        events = await session.scalar(select(func.count()).select_from(OutboxEvent))
    return int(audit or 0), int(events or 0)


async def _order(db: Database, order_no: str) -> Any:
    async with db.transaction(write=False) as session:
        order = await orders_service.get_order(session, order_no)
        committed = await inventory_service.committed_by_warehouse(session, order.id)
        return order, set(committed)


async def _sweep(db: Database) -> int:
    async with db.transaction() as session:
        return await allocation.allocate_waiting(session, 100)


async def test_cs_hold_an_order_in_review_and_pass_it_later(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with clock.frozen(T0):
        order_no = await _in_review(db, monkeypatch)
        # When cs hold it, waiting for the buyer
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/hold",
            json={"reason": "等买家确认地址"},
            headers=auth(keys["cs"]),
        )
        assert r.status_code == 200, r.text
        # Then the queue shows it held with the reason, and nothing allocates it
        r = await client.get("/api/v1/review/queue?stage=cs", headers=auth(keys["cs"]))
        [item] = r.json()["items"]
        assert (item["order_no"], item["held"]) == (order_no, "等买家确认地址")
        assert await _sweep(db) == 0
        # When they hold it again, or the warehouse tries: refused, nothing written
        before = await _counts(db)
        again = await client.post(
            f"/api/v1/orders/{order_no}/review/hold",
            json={"reason": "again"},
            headers=auth(keys["cs"]),
        )
        assert (again.status_code, again.json()["code"]) == (409, "conflict")
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/hold",
            json={"reason": "x"},
            headers=auth(keys["warehouse"]),
        )
        assert r.status_code == 403
        assert await _counts(db) == before
        # When cs pass it
        r = await client.post(f"/api/v1/orders/{order_no}/review/pass", headers=auth(keys["cs"]))
        assert r.json() == {"order_no": order_no, "stage": "passed"}
        # Then the hold is lifted with the review, and the allocation consumer allocates the
        # order (not the minutely sweep: nothing is left for it)
        await drain(db, get_settings())
        assert (await _order(db, order_no))[0].status == "allocated"
        assert await _sweep(db) == 0
        assert await _trail(db, order_no) == [
            ("review_hold", "paid", "paid", "operator"),
            ("review_pass", "paid", "paid", "operator"),
        ]
        async with db.transaction(write=False) as session:
            types = (
                await session.scalars(
                    select(OutboxEvent.event_type)
                    .where(OutboxEvent.aggregate_id == order_no)
                    .order_by(OutboxEvent.id)
                )
            ).all()
        assert [t for t in types if t.startswith("OrderReview")] == [
            "OrderReviewHeld",
            "OrderReviewPassed",
        ]


async def test_cs_edit_address_remark_and_warehouse_of_an_order_in_review(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with clock.frozen(T0):
        # Given an order in review, reserved in WH-TEST, and two warehouses opened since
        order_no = await _in_review(db, monkeypatch)
        await add_warehouse(db, "WH-HZ", province="浙江省")
        await receive(db, "WH-HZ", "TEA-LJ-250", 5)
        await add_warehouse(db, "WH-EMPTY", province="浙江省")
        order, warehouses = await _order(db, order_no)
        assert warehouses == {"WH-TEST"}
        version = order.version
        # When cs give a warehouse holding nothing, or a phone that is no phone
        before = await _counts(db)
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/edit",
            json={"warehouse": "WH-EMPTY", "remark": "不会保存"},
            headers=auth(keys["cs"]),
        )
        assert (r.status_code, r.json()["code"]) == (409, "inventory.insufficient")
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/edit",
            json={"shipping_address": {**ADDRESS, "phone": "12"}},
            headers=auth(keys["cs"]),
        )
        assert r.status_code in (400, 422), r.text
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/edit", json={}, headers=auth(keys["cs"])
        )
        assert r.status_code == 422
        # Then nothing changed
        assert await _counts(db) == before
        order, warehouses = await _order(db, order_no)
        assert (order.version, order.remark, warehouses) == (version, None, {"WH-TEST"})
        # When cs change the address, the remark and the warehouse at once
        r = await client.post(
            f"/api/v1/orders/{order_no}/review/edit",
            json={"shipping_address": ADDRESS, "remark": "改发杭州仓", "warehouse": "WH-HZ"},
            headers=auth(keys["cs"]),
        )
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == ["address", "remark", "warehouse"]
        # Then the order carries them, ships from WH-HZ alone, and still waits in review
        order, warehouses = await _order(db, order_no)
        assert (order.ship_province, order.ship_city, order.ship_name_masked) == (
            "浙江省",
            "杭州市",
            "王*",
        )
        assert (order.remark, warehouses, order.status) == ("改发杭州仓", {"WH-HZ"}, "paid")
        assert await _sweep(db) == 0
        async with db.transaction(write=False) as session:
            stock = await inventory_service.stock_view(session, "TEA-LJ-250")
        by_warehouse = {w["warehouse"]: w for w in stock["warehouses"]}
        assert by_warehouse["WH-HZ"]["reserved"] == 1
        assert by_warehouse["WH-TEST"]["reserved"] == 0
        # and the edit is one audit row naming the fields (no personal data)
        assert await _trail(db, order_no) == [("review_edit", "paid", "paid", "operator")]
        async with db.transaction(write=False) as session:
            trail = await orders_service.events_of(session, order_no)
        [edit] = [e for e in trail if e.event == "review_edit"]
    assert edit.note == "edited: address, remark, warehouse"
