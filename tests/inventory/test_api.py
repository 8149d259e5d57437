"""The inventory HTTP API and the inventory parts of the order JSON."""

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.inventory.models import StockMovement
from ordertally.orders.models import SalesOrder
from tests.factories import auth, order_body

pytestmark = pytest.mark.anyio

SH = {"code": "SH01", "name": "上海仓", "province": "上海市", "city": "上海市", "priority": 1}
GZ = {"code": "GZ01", "name": "广州仓", "province": "广东省", "city": "广州市", "priority": 2}


async def _setup(client: AsyncClient, keys: dict[str, str]) -> None:
    for body in (SH, GZ):
        r = await client.post("/api/v1/warehouses", json=body, headers=auth(keys["ops"]))
        assert r.status_code == 201, r.text
    for wh, sku, qty in (("SH01", "TEA-X", 2), ("GZ01", "TEA-X", 5), ("GZ01", "CUP-X", 5)):
        r = await client.post(
            "/api/v1/stock/movements",
            json={
                "warehouse": wh,
                "sku": sku,
                "kind": "receipt",
                "quantity": qty,
                "reason": "opening",
            },
            headers=auth(keys["warehouse"]),
        )
        assert r.status_code == 201, r.text


async def test_warehouses_crud(client: AsyncClient, keys: dict[str, str]) -> None:
    created = await client.post("/api/v1/warehouses", json=SH, headers=auth(keys["ops"]))
    assert created.json()["cost_factor"] == 1.0 and created.json()["active"] is True
    dup = await client.post("/api/v1/warehouses", json=SH, headers=auth(keys["ops"]))
    assert dup.status_code == 409 and dup.json()["code"] == "inventory.warehouse_exists"
    patched = await client.patch(
        "/api/v1/warehouses/SH01", json={"priority": 7, "active": False}, headers=auth(keys["ops"])
    )
    assert (patched.json()["priority"], patched.json()["active"]) == (7, False)
    listed = await client.get("/api/v1/warehouses", headers=auth(keys["cs"]))
    assert [w["code"] for w in listed.json()] == ["SH01", "WH-TEST"]
    refused = await client.post("/api/v1/warehouses", json=GZ, headers=auth(keys["warehouse"]))
    assert refused.status_code == 403
    unknown = await client.get("/api/v1/warehouses/NOPE", headers=auth(keys["cs"]))
    assert unknown.status_code == 404


async def test_movements_are_idempotent_and_validated(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    await client.post("/api/v1/warehouses", json=SH, headers=auth(keys["ops"]))
    body = {"warehouse": "SH01", "sku": "K", "kind": "receipt", "quantity": 5, "reason": "PO-1"}
    headers = auth(keys["warehouse"], **{"Idempotency-Key": "po-1"})
    first = await client.post("/api/v1/stock/movements", json=body, headers=headers)
    again = await client.post("/api/v1/stock/movements", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    bad = await client.post(
        "/api/v1/stock/movements",
        json={**body, "kind": "receipt", "quantity": -1},
        headers=auth(keys["warehouse"]),
    )
    assert bad.status_code == 422 and bad.json()["code"] == "inventory.invalid_movement"
    shipment = await client.post(
        "/api/v1/stock/movements",
        json={**body, "kind": "shipment"},
        headers=auth(keys["warehouse"]),
    )
    assert shipment.status_code == 422 and shipment.json()["code"] == "request.invalid"
    view = await client.get("/api/v1/stock/K", headers=auth(keys["cs"]))
    assert view.json()["total"] == {"on_hand": 5, "reserved": 0, "safety_stock": 0, "available": 5}
    async with db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count()).select_from(StockMovement).where(StockMovement.sku == "K")
        )
    assert count == 1


async def test_order_json_explains_routing_and_plans_shipments(
    client: AsyncClient, keys: dict[str, str]
) -> None:
    await _setup(client, keys)
    body = order_body(
        lines=[
            {"sku": "TEA-X", "quantity": 4, "unit_price": "10.00"},
            {"sku": "CUP-X", "quantity": 1, "unit_price": "5.00"},
        ]
    )
    created = await client.post("/api/v1/orders", json=body, headers=auth(keys["ops"]))
    assert created.status_code == 201, created.text
    order = created.json()
    # GZ01 holds every line; SH01 is nearer to Shanghai but would need a split
    assert order["shipment_plan"] == [
        {
            "warehouse": "GZ01",
            "lines": [
                {"line_no": 1, "sku": "TEA-X", "quantity": 4},
                {"line_no": 2, "sku": "CUP-X", "quantity": 1},
            ],
        }
    ]
    assert order["allocation"]["splits"] == 1
    assert order["allocation"]["chosen"][0]["warehouse"] == "GZ01"
    assert [
        (r["warehouse"], r["sku"], r["quantity"], r["state"]) for r in order["reservations"]
    ] == [("GZ01", "TEA-X", 4, "held"), ("GZ01", "CUP-X", 1, "held")]
    fetched = await client.get(f"/api/v1/orders/{order['order_no']}", headers=auth(keys["cs"]))
    assert fetched.json()["allocation"] == order["allocation"]


async def test_simulate_reserves_nothing(client: AsyncClient, keys: dict[str, str]) -> None:
    await _setup(client, keys)
    sim = await client.post(
        "/api/v1/allocation/simulate",
        json={"shipping_province": "上海市", "lines": [{"sku": "TEA-X", "quantity": 6}]},
        headers=auth(keys["cs"]),
    )
    assert sim.status_code == 200
    assert sim.json()["feasible"] is True and sim.json()["warehouses"] == ["GZ01", "SH01"]
    assert sim.json()["splits"] == 2
    view = await client.get("/api/v1/stock/TEA-X", headers=auth(keys["cs"]))
    assert view.json()["total"]["reserved"] == 0
    short = await client.post(
        "/api/v1/allocation/simulate",
        json={"shipping_province": "上海市", "lines": [{"sku": "TEA-X", "quantity": 60}]},
        headers=auth(keys["cs"]),
    )
    assert short.json()["feasible"] is False and short.json()["shortfall"] == {"TEA-X": 53}


async def test_unstocked_sku_is_409_and_creates_nothing(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    body = order_body(lines=[{"sku": "NEVER-STOCKED", "quantity": 1, "unit_price": "1.00"}])
    refused = await client.post(
        "/api/v1/orders", json=body, headers=auth(keys["ops"], **{"Idempotency-Key": "x1"})
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "inventory.insufficient"
    assert refused.json()["skus"] == [{"sku": "NEVER-STOCKED", "requested": 1, "missing": 1}]
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 0
