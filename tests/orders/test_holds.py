"""Lifting a stock-shortage hold: the order's units are reserved again in the same transaction,
or the hold stays open while the stock is still short, and the allocator then ships it as any
paid order with stock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.events.models import OutboxEvent
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.errors import StillShort
from ordertally.exceptions.models import ExceptionCase
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment.models import Shipment
from ordertally.inventory import service as inventory_service
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import holds
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import add_warehouse, auth, order_body, receive

pytestmark = pytest.mark.anyio

SKU = "HOLD-K1"


def _body(phone: str) -> dict[str, Any]:
    return order_body(
        customer={"name": "王五", "phone": phone},
        lines=[{"sku": SKU, "quantity": 2, "unit_price": "10.00"}],
    )


async def _reservations(db: Database) -> list[tuple[int, str, int]]:
    """(order id, state, units) of every reservation of the test SKU, in creation order."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(Reservation.order_id, Reservation.state, Reservation.quantity)
            .where(Reservation.sku == SKU)
            .order_by(Reservation.id)
        )
        return [(a, b, c) for a, b, c in rows.all()]


async def _stock(db: Database) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(func.sum(Stock.on_hand), func.sum(Stock.reserved)).where(Stock.sku == SKU)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def _writes(db: Database) -> tuple[int, int]:
    """(audit rows, outbox events) written so far."""
    async with db.transaction(write=False) as session:
        audit = await session.scalar(select(func.count()).select_from(OrderEvent))
        events = await session.scalar(select(func.count()).select_from(OutboxEvent))
    return int(audit or 0), int(events or 0)


async def _case(db: Database, case_id: int) -> tuple[str, str, str | None]:
    async with db.transaction(write=False) as session:
        case = await session.get(ExceptionCase, case_id)
        assert case is not None
        return case.type, case.status, case.resolution


async def _order_id(db: Database, order_no: str) -> int:
    async with db.transaction(write=False) as session:
        return int(
            await session.scalar(select(SalesOrder.id).where(SalesOrder.order_no == order_no))
        )


async def _paid_after_the_sweep_without_stock(
    db: Database, client: AsyncClient, keys: dict[str, str]
) -> tuple[str, int, int]:
    """An order whose reservation was swept, then paid while another order holds the stock:
    (order no, order id, stock_shortage case id)."""
    await add_warehouse(db, "W1")
    await receive(db, "W1", SKU, 2)
    with clock.frozen(clock.now() - timedelta(hours=1)):
        created = await client.post(
            "/api/v1/orders", json=_body("13811110001"), headers=auth(keys["ops"])
        )
    assert created.status_code == 201, created.text
    order_no = created.json()["order_no"]
    async with db.transaction() as session:
        assert await inventory_service.sweep_expired(session, clock.now()) == 1
    other = await client.post(
        "/api/v1/orders", json=_body("13822220002"), headers=auth(keys["ops"])
    )
    assert other.status_code == 201, other.text
    async with db.transaction() as session:
        await orders_service.transition(
            session, order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "wechat")
        )
    shown = await client.get(f"/api/v1/orders/{order_no}", headers=auth(keys["ops"]))
    assert shown.json()["status"] == "paid"
    assert [(h["type"], h["blocking"]) for h in shown.json()["holds"]] == [("stock_shortage", True)]
    return order_no, await _order_id(db, order_no), shown.json()["holds"][0]["id"]


async def test_resolving_a_shortage_hold_reserves_again_and_the_allocator_ships_it(
    db: Database, client: AsyncClient, keys: dict[str, str]
) -> None:
    # Given a paid order on a stock_shortage hold with nothing reserved (the other order
    # holds the two units), and two more units received since
    order_no, order_id, case_id = await _paid_after_the_sweep_without_stock(db, client, keys)
    other_id = order_id + 1  # the order that took the units, created next
    assert await _reservations(db) == [(order_id, "released", 2), (other_id, "held", 2)]
    received = await client.post(
        "/api/v1/stock/movements",
        json={"warehouse": "W1", "sku": SKU, "kind": "receipt", "quantity": 2, "reason": "PO 7"},
        headers=auth(keys["warehouse"]),
    )
    assert received.status_code == 201, received.text
    async with db.transaction() as session:
        assert await fulfillment_service.allocate_waiting(session, 100) == 0

    # When ops resolve the hold
    resolved = await client.post(
        f"/api/v1/exceptions/{case_id}/resolve",
        json={"resolution": "stock received"},
        headers=auth(keys["ops"]),
    )

    # Then the hold is resolved and the order's two units are committed again
    assert resolved.status_code == 200, resolved.text
    assert (resolved.json()["status"], resolved.json()["resolution"]) == (
        "resolved",
        "stock received",
    )
    assert await _reservations(db) == [
        (order_id, "released", 2),
        (other_id, "held", 2),
        (order_id, "committed", 2),
    ]
    assert await _stock(db) == (4, 4)
    shown = await client.get(f"/api/v1/orders/{order_no}", headers=auth(keys["ops"]))
    assert (shown.json()["status"], shown.json()["holds"]) == ("paid", [])
    # And the allocator picks it up like any paid order with stock, once
    async with db.transaction() as session:
        assert await fulfillment_service.allocate_waiting(session, 100) == 1
    async with db.transaction() as session:
        assert await fulfillment_service.allocate_waiting(session, 100) == 0
        shipments = (
            await session.scalars(select(Shipment).where(Shipment.order_id == order_id))
        ).all()
    assert [(s.warehouse_code, s.status) for s in shipments] == [("W1", "planned")]
    shown = await client.get(f"/api/v1/orders/{order_no}", headers=auth(keys["ops"]))
    assert shown.json()["status"] == "allocated"


async def test_resolving_while_still_short_is_refused_and_changes_nothing(
    db: Database, client: AsyncClient, keys: dict[str, str]
) -> None:
    # Given the paid order on a stock_shortage hold, with one unit received: still one short
    order_no, _, case_id = await _paid_after_the_sweep_without_stock(db, client, keys)
    await receive(db, "W1", SKU, 1)
    before = (await _reservations(db), await _stock(db), await _writes(db))

    # When ops try to resolve the hold
    refused = await client.post(
        f"/api/v1/exceptions/{case_id}/resolve",
        json={"resolution": "stock received"},
        headers=auth(keys["ops"]),
    )

    # Then it is refused, naming the missing SKU, and nothing changed: the hold is open,
    # nothing is reserved, no audit row or event was written
    assert refused.status_code == 409
    problem = refused.json()
    assert (problem["code"], problem["case_id"], problem["order_no"], problem["skus"]) == (
        "exceptions.still_short",
        case_id,
        order_no,
        [{"sku": SKU, "missing": 2}],
    )
    assert await _case(db, case_id) == ("stock_shortage", "open", None)
    assert (await _reservations(db), await _stock(db), await _writes(db)) == before
    assert before[1] == (3, 2)
    async with db.transaction() as session:
        assert await fulfillment_service.allocate_waiting(session, 100) == 0
    shown = await client.get(f"/api/v1/orders/{order_no}", headers=auth(keys["ops"]))
    assert (shown.json()["status"], len(shown.json()["holds"])) == ("paid", 1)


async def test_a_shortage_hold_on_an_order_that_kept_its_units_resolves_as_before(
    db: Database,
) -> None:
    # Given a paid order whose units are committed and a stock_shortage case opened by hand
    await add_warehouse(db, "W1")
    await receive(db, "W1", SKU, 2)
    async with db.transaction() as session:
        snap, _ = await orders_service.create_order(
            session,
            OrderCreate.model_validate(_body("13833330003")),
            Actor(ActorKind.API, "t"),
            check_fingerprint=False,
        )
        await orders_service.transition(
            session,
            snap.order.order_no,
            "payment_succeeded",
            Actor(ActorKind.PAYMENT_CALLBACK, "t"),
        )
        case_id = await exceptions_service.open_case(
            session,
            order_id=snap.order.id,
            category="inventory",
            type="stock_shortage",
            blocking=True,
            detail={},
        )
    # When it is resolved
    async with db.transaction() as session:
        case = await holds.resolve_case(session, case_id, "ops", "miscounted")
    # Then it is resolved and no second reservation was made
    assert (case.status, case.resolved_by) == ("resolved", "ops")
    assert await _reservations(db) == [(snap.order.id, "committed", 2)]
    assert await _stock(db) == (2, 2)


async def test_a_creation_hold_on_an_unpaid_order_holds_the_units_until_payment(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unpaid order created on hold by the merchant's shortage policy, then stock
    monkeypatch.setenv("ORDERTALLY_STOCK_SHORTAGE_POLICY", "hold")
    reset_settings()
    await add_warehouse(db, "W1")
    async with db.transaction() as session:
        snap, _ = await orders_service.create_order(
            session,
            OrderCreate.model_validate(_body("13844440004")),
            Actor(ActorKind.API, "t"),
            check_fingerprint=False,
        )
    case_id = snap.holds[0].id
    async with db.transaction() as session:
        with pytest.raises(StillShort) as short:
            await holds.resolve_case(session, case_id, "ops", "too early")
    assert short.value.extra["skus"] == [{"sku": SKU, "missing": 2}]
    assert await _case(db, case_id) == ("stock_shortage", "open", None)
    await receive(db, "W1", SKU, 5)
    # When the hold is resolved
    async with db.transaction() as session:
        await holds.resolve_case(session, case_id, "ops", "stock received")
    # Then the units are held for the unpaid order, and committed when it is paid
    assert await _reservations(db) == [(snap.order.id, "held", 2)]
    async with db.transaction() as session:
        await orders_service.transition(
            session,
            snap.order.order_no,
            "payment_succeeded",
            Actor(ActorKind.PAYMENT_CALLBACK, "t"),
        )
    assert await _reservations(db) == [(snap.order.id, "committed", 2)]
    assert await _stock(db) == (5, 2)
