"""Reshipments (补发) and exchanges (换货) ship goods: a replacement shipment of the original
order reserves the case's units like any order, is shipped through fulfillment, consumes them
on ship and charges nothing; not enough stock leaves the case waiting with the reason."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.aftersales import goods, service
from ordertally.aftersales.models import AftersaleRefund
from ordertally.aftersales.schemas import Inspection, ParcelIn
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.models import OutboxEvent
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment.models import Shipment, ShipmentLine
from ordertally.inventory import service as inventory_service
from ordertally.inventory.models import Stock, StockMovement
from ordertally.ops.doctor import run_checks
from ordertally.orders.state_machine import Actor, ActorKind
from ordertally.payments.models import Payment
from tests.aftersales.helpers import (
    approve,
    case_status,
    on_hand_and_ledger,
    open_case,
    order_status,
    paid_order,
)
from tests.conftest import TEST_WAREHOUSE
from tests.factories import add_warehouse, auth

pytestmark = pytest.mark.anyio

WAREHOUSE = Actor(ActorKind.WAREHOUSE, "wh-1")


async def _receipt(db: Database, sku: str, units: int) -> None:
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=TEST_WAREHOUSE,
            sku=sku,
            kind="receipt",
            quantity=units,
            reason="test receipt",
            actor="t",
        )


async def _stock(db: Database, sku: str) -> tuple[int, int]:
    """(on hand, reserved) of a SKU in the test warehouse."""
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(func.sum(Stock.on_hand), func.sum(Stock.reserved)).where(Stock.sku == sku)
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def _shipments(db: Database, order_id: int) -> list[tuple[Shipment, list[ShipmentLine]]]:
    async with db.transaction(write=False) as session:
        found = await fulfillment_service.shipments_of(session, order_id)
        lines = await fulfillment_service.lines_by_shipment(session, [s.id for s in found])
    return [(s, lines.get(s.id, [])) for s in found]


async def _counts(db: Database) -> dict[str, int]:
    async with db.transaction(write=False) as session:
        return {
            name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in (
                ("payments", Payment),
                ("refunds", AftersaleRefund),
                ("shipments", Shipment),
                ("movements", StockMovement),
                ("events", OutboxEvent),
            )
        }


async def _stock_checks_ok(db: Database) -> bool:
    """The doctor's stock checks: reserved = live reservations, on hand = Σ movements."""
    checks = {c.name: c for c in await run_checks(db, get_settings())}
    return all(
        checks[name].ok for name in ("reserved_matches_reservations", "on_hand_matches_ledger")
    )


async def _ship(db: Database, shipment_id: int, waybill_no: str) -> None:
    async with db.transaction() as session:
        await fulfillment_service.confirm(session, shipment_id, WAREHOUSE)
        await fulfillment_service.ship(session, shipment_id, WAREHOUSE, waybill_no=waybill_no)


async def test_a_reship_waits_for_stock_then_ships_exactly_its_units_free_of_charge(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered order of 3 RARE-1 (5 received, 3 shipped: 2 left)
    await _receipt(db, "RARE-1", 5)
    order, _ = await paid_order(
        db,
        None,
        "delivered",
        lines=[
            {"sku": "RARE-1", "quantity": 3, "unit_price": "10.00"},
            {"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"},
        ],
    )
    assert await _stock(db, "RARE-1") == (2, 0)
    # And an approved reship case for the 3 units of line 1
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="reship",
        reason_code="missing_item",
        lines=[{"line_no": 1, "quantity": 3}],
    )
    assert await approve(db, case_no) == "approved"
    before = await _counts(db)
    # When it is sent again with 2 units on hand
    url = f"/api/v1/aftersales/{case_no}/reship"
    refused = await client.post(url, headers=auth(keys["cs"]))
    # Then the case waits, saying what is missing, and nothing was written
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "aftersales.waiting_for_stock"
    assert "RARE-1" in problem["detail"]
    assert problem["skus"] == [{"sku": "RARE-1", "requested": 3, "missing": 1}]
    assert problem["case_status"] == "approved"
    assert await case_status(db, case_no) == "approved"
    assert await _counts(db) == before
    assert await _stock(db, "RARE-1") == (2, 0)
    # When stock arrives and it is sent again (twice: the second changes nothing)
    await _receipt(db, "RARE-1", 4)
    for _ in range(2):
        sent = await client.post(url, headers=auth(keys["cs"]))
        assert (sent.status_code, sent.json()["status"]) == (200, "reshipped"), sent.text
    # Then one replacement shipment of the original order holds exactly the case's units
    [(shipment, lines)] = await _shipments(db, order.id)
    assert (shipment.order_no, shipment.status) == (order.order_no, "planned")
    assert [(ln.line_no, ln.sku, ln.quantity) for ln in lines] == [(1, "RARE-1", 3)]
    assert await _stock(db, "RARE-1") == (6, 3)
    assert await _stock_checks_ok(db)
    async with db.transaction(write=False) as session:
        view = await service.view(session, case_no)
    assert view.events[-1].event == "reship"
    assert view.events[-1].detail["shipments"] == [shipment.id]
    assert view.events[-1].detail["order_no"] == order.order_no
    # When the warehouse ships it
    await _ship(db, shipment.id, "ZT-REship-1")
    # Then its units leave (consumed), the order stays delivered, nothing was charged
    assert await _stock(db, "RARE-1") == (3, 0)
    on_hand, ledger = await on_hand_and_ledger(db, "RARE-1")
    assert on_hand == ledger == 3
    assert await order_status(db, order.order_no) == "delivered"
    after = await _counts(db)
    assert (after["payments"], after["refunds"]) == (before["payments"], before["refunds"])
    async with db.transaction(write=False) as session:
        shipped = await session.scalar(
            select(func.sum(StockMovement.quantity)).where(
                StockMovement.sku == "RARE-1",
                StockMovement.kind == "shipment",
                StockMovement.order_id == order.id,
            )
        )
        types = set(
            (
                await session.scalars(
                    select(OutboxEvent.event_type).where(
                        OutboxEvent.aggregate_id.in_([order.order_no, case_no])
                    )
                )
            ).all()
        )
    assert shipped == -6  # the order's 3, then the reship's 3
    assert {"AftersaleReshipped", "ShipmentShipped"} <= types


async def test_an_exchange_ships_the_units_that_came_back_once_inspected(db: Database) -> None:
    # Given a delivered order and an exchange of one of its two teas, returned and inspected
    order, _ = await paid_order(db, None, "delivered")
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="exchange",
        reason_code="wrong_size",
        lines=[{"line_no": 1, "quantity": 1}],
    )
    assert await approve(db, case_no) == "awaiting_return"
    async with db.transaction() as session:
        # An exchange waiting for its goods sends nothing yet
        with pytest.raises(Exception) as early:
            await service.exchange(session, case_no, "cs-1")
    assert getattr(early.value, "code", None) == "aftersales.illegal_transition"
    async with db.transaction() as session:
        await goods.receive_parcel(
            session, ParcelIn(warehouse=TEST_WAREHOUSE, case_no=case_no), "wh-1"
        )
    async with db.transaction() as session:
        await goods.inspect(
            session,
            case_no,
            Inspection(warehouse=TEST_WAREHOUSE, lines=[{"line_no": 1, "good": 1, "damaged": 0}]),
            "wh-1",
        )
    on_hand_before, reserved_before = await _stock(db, "TEA-LJ-250")
    # When the replacement is sent and shipped
    async with db.transaction() as session:
        assert (await service.exchange(session, case_no, "cs-1")).status == "exchanged"
    [(shipment, lines)] = await _shipments(db, order.id)
    assert [(ln.line_no, ln.quantity) for ln in lines] == [(1, 1)]
    assert await _stock(db, "TEA-LJ-250") == (on_hand_before, reserved_before + 1)
    await _ship(db, shipment.id, "ZT-EXCH-1")
    # Then exactly one unit left and the ledger still adds up
    assert await _stock(db, "TEA-LJ-250") == (on_hand_before - 1, reserved_before)
    on_hand, ledger = await on_hand_and_ledger(db, "TEA-LJ-250")
    assert on_hand == ledger
    assert await order_status(db, order.order_no) == "delivered"


async def test_a_reship_split_over_two_warehouses_consumes_each_shipment_on_its_own(
    db: Database,
) -> None:
    # Given a delivered order of 3 RARE-1, then 2 left here and 1 at a second warehouse
    await _receipt(db, "RARE-1", 5)
    order, _ = await paid_order(
        db, None, "delivered", lines=[{"sku": "RARE-1", "quantity": 3, "unit_price": "10.00"}]
    )
    await add_warehouse(db, "WH-RS2")
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code="WH-RS2",
            sku="RARE-1",
            kind="receipt",
            quantity=1,
            reason="test receipt",
            actor="t",
        )
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="reship",
        reason_code="missing_item",
        lines=[{"line_no": 1, "quantity": 3}],
    )
    await approve(db, case_no)
    # When the case is sent again
    async with db.transaction() as session:
        await service.reship(session, case_no, "cs-1")
    # Then one replacement shipment per warehouse holds its part
    planned = {
        s.warehouse_code: (s.id, sum(ln.quantity for ln in lines))
        for s, lines in await _shipments(db, order.id)
    }
    assert {code: units for code, (_, units) in planned.items()} == {TEST_WAREHOUSE: 2, "WH-RS2": 1}
    assert await _stock(db, "RARE-1") == (3, 3)
    # And shipping one consumes only its own units
    await _ship(db, planned["WH-RS2"][0], "ZT-SPLIT-1")
    assert await _stock(db, "RARE-1") == (2, 2)
    await _ship(db, planned[TEST_WAREHOUSE][0], "ZT-SPLIT-2")
    assert await _stock(db, "RARE-1") == (0, 0)
    on_hand, ledger = await on_hand_and_ledger(db, "RARE-1")
    assert on_hand == ledger == 0
    assert await _stock_checks_ok(db)
