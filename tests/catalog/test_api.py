"""The catalog HTTP API: SKUs with barcodes and history, categories, bundles ordered through
their components, and unknown codes refused where they enter (nothing written)."""

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.catalog.errors import InvalidBarcode
from ordertally.catalog.models import Sku, SkuChange
from ordertally.catalog.service import check_barcode, gtin_check_digit
from ordertally.core.db import Database
from ordertally.inventory.models import Reservation, Stock, StockMovement
from ordertally.orders.models import OrderLine, SalesOrder
from tests.factories import add_bundle, auth, order_body, receive

pytestmark = pytest.mark.anyio

TEA = {
    "code": "TEA-LJ-500",
    "name": "西湖龙井 500克",
    "name_en": "West Lake Longjing 500 g",
    "spec": {"weight": "500g", "grade": "明前"},
    "barcode": "6901234567892",
    "unit": "罐",
    "weight_g": 560,
    "length_mm": 120,
    "width_mm": 120,
    "height_mm": 160,
    "brand": "狮峰",
    "cost_minor": 21000,
    "min_price_minor": 39900,
    "currency": "CNY",
    "image_ref": "sku/tea-lj-500.jpg",
}


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def test_barcode_check_digits() -> None:
    # Given EAN-13 (a 69 code), UPC-A and EAN-8 bodies, When their check digits are computed
    # Then they are the GS1 ones; a wrong digit or length is refused
    assert gtin_check_digit("690123456789") == 2
    assert check_barcode("036000291452") == "036000291452"  # UPC-A
    assert check_barcode("96385074") == "96385074"  # EAN-8
    for bad in ("6901234567891", "12345", "69012345678a2"):
        with pytest.raises(InvalidBarcode):
            check_barcode(bad)


async def test_create_lookup_patch_and_history(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a category tree and a SKU in a child category
    for body in (
        {"code": "tea", "name": "茶叶", "name_en": "Tea"},
        {"code": "green", "name": "绿茶", "name_en": "Green tea", "parent": "tea"},
    ):
        r = await client.post("/api/v1/catalog/categories", json=body, headers=auth(keys["ops"]))
        assert r.status_code == 201, r.text
    created = await client.post(
        "/api/v1/catalog/skus", json={**TEA, "category": "green"}, headers=auth(keys["ops"])
    )
    assert created.status_code == 201, created.text
    assert created.json()["spec_text"] == "500g / 明前"
    # When a scanner looks its barcode up, both ways
    by_query = await client.get(
        "/api/v1/catalog/skus", params={"barcode": TEA["barcode"]}, headers=auth(keys["warehouse"])
    )
    by_path = await client.get(
        f"/api/v1/catalog/barcode/{TEA['barcode']}", headers=auth(keys["warehouse"])
    )
    # Then it finds the SKU
    assert by_query.json()["code"] == by_path.json()["code"] == "TEA-LJ-500"
    assert by_path.json()["category"] == "green" and by_path.json()["dimensions_mm"] == [
        120,
        120,
        160,
    ]
    # When the name is changed, then deactivated
    patched = await client.patch(
        "/api/v1/catalog/skus/TEA-LJ-500",
        json={"name": "西湖龙井 特级 500克"},
        headers=auth(keys["admin"]),
    )
    assert patched.json()["name"] == "西湖龙井 特级 500克"
    off = await client.post("/api/v1/catalog/skus/TEA-LJ-500/deactivate", headers=auth(keys["ops"]))
    assert off.json()["active"] is False
    # Then the history says who changed what
    history = (
        await client.get("/api/v1/catalog/skus/TEA-LJ-500/history", headers=auth(keys["cs"]))
    ).json()
    assert [(h["action"], h["actor"]) for h in history] == [
        ("create", "ops-tester"),
        ("update", "admin-tester"),
        ("update", "ops-tester"),
    ]
    assert history[1]["changes"] == {
        "name": {"from": "西湖龙井 500克", "to": "西湖龙井 特级 500克"}
    }
    assert history[2]["changes"] == {"active": {"from": True, "to": False}}
    # And an inactive SKU can no longer be ordered
    refused = await client.post(
        "/api/v1/orders",
        json=order_body(lines=[{"sku": "TEA-LJ-500", "quantity": 1, "unit_price": "399.00"}]),
        headers=auth(keys["cs"]),
    )
    assert refused.status_code == 422 and refused.json()["code"] == "catalog.inactive_sku"
    # And the category filter includes descendants; the prefix filter matches names
    listed = await client.get(
        "/api/v1/catalog/skus", params={"category": "tea"}, headers=auth(keys["cs"])
    )
    assert [s["code"] for s in listed.json()["items"]] == ["TEA-LJ-500"]
    named = await client.get("/api/v1/catalog/skus", params={"q": "西湖"}, headers=auth(keys["cs"]))
    assert [s["code"] for s in named.json()["items"]] == ["TEA-LJ-500"]


async def test_refusals_write_nothing(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a SKU with a barcode
    r = await client.post("/api/v1/catalog/skus", json=TEA, headers=auth(keys["ops"]))
    assert r.status_code == 201
    skus, changes = await _count(db, Sku), await _count(db, SkuChange)
    # When a second SKU takes the same barcode, a wrong check digit, a duplicate code, a
    # bundle of an unknown code, or a role without catalog.manage creates one
    cases = [
        ({**TEA, "code": "OTHER"}, "ops", 409, "catalog.barcode_taken"),
        (
            {**TEA, "code": "OTHER", "barcode": "6901234567891"},
            "ops",
            422,
            "catalog.invalid_barcode",
        ),
        (TEA, "ops", 409, "catalog.sku_exists"),
        (
            {"code": "BOX", "name": "礼盒", "components": [{"sku": "NOPE", "quantity": 1}]},
            "ops",
            422,
            "catalog.unknown_sku",
        ),
        ({**TEA, "code": "OTHER", "barcode": None}, "cs", 403, None),
    ]
    for body, role, status, code in cases:
        refused = await client.post("/api/v1/catalog/skus", json=body, headers=auth(keys[role]))
        # Then each is refused with its problem
        assert refused.status_code == status, refused.text
        if code:
            assert refused.json()["code"] == code
    # And nothing was written
    assert (await _count(db, Sku), await _count(db, SkuChange)) == (skus, changes)


async def test_unknown_codes_are_refused_by_orders_and_receipts(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given nothing in the catalogue named GHOST-1
    orders, lines, stock, moves = (
        await _count(db, SalesOrder),
        await _count(db, OrderLine),
        await _count(db, Stock),
        await _count(db, StockMovement),
    )
    # When an API order names it
    order = await client.post(
        "/api/v1/orders",
        json=order_body(
            lines=[
                {"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "10.00"},
                {"sku": "GHOST-1", "quantity": 1, "unit_price": "10.00"},
            ]
        ),
        headers=auth(keys["cs"]),
    )
    # Then it is refused with a problem naming the code
    assert order.status_code == 422
    assert order.json()["code"] == "catalog.unknown_sku"
    assert order.json()["skus"] == ["GHOST-1"]
    # When a warehouse receives it
    receipt = await client.post(
        "/api/v1/stock/movements",
        json={
            "warehouse": "WH-TEST",
            "sku": "GHOST-1",
            "kind": "receipt",
            "quantity": 3,
            "reason": "PO 9",
        },
        headers=auth(keys["warehouse"]),
    )
    # Then it is refused too, and no SKU, stock row, movement or order was created
    assert receipt.status_code == 422 and receipt.json()["code"] == "catalog.unknown_sku"
    assert (
        await _count(db, SalesOrder),
        await _count(db, OrderLine),
        await _count(db, Stock),
        await _count(db, StockMovement),
    ) == (orders, lines, stock, moves)
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(Sku).where(Sku.code == "GHOST-1")) is None


async def test_an_order_for_a_bundle_reserves_and_ships_its_components(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a gift box of one tea and two cups, 5 teas and 7 cups in stock
    await add_bundle(db, "GIFT-1", {"GT-TEA": 1, "GT-CUP": 2}, spec_text="礼盒装")
    await receive(db, "WH-TEST", "GT-TEA", 5)
    await receive(db, "WH-TEST", "GT-CUP", 7)
    avail = await client.get("/api/v1/catalog/skus/GIFT-1/availability", headers=auth(keys["cs"]))
    assert avail.json()["available"] == 3  # min(5 // 1, 7 // 2)
    # When a buyer orders two boxes and pays
    created = await client.post(
        "/api/v1/orders",
        json=order_body(lines=[{"sku": "GIFT-1", "quantity": 2, "unit_price": "199.00"}]),
        headers=auth(keys["cs"]),
    )
    assert created.status_code == 201, created.text
    order = created.json()
    # Then the order line stays the bundle line, with its name, and the reservations are the
    # components'
    assert [(ln["sku"], ln["name"], ln["spec"], ln["quantity"]) for ln in order["lines"]] == [
        ("GIFT-1", "礼盒 GIFT-1", "礼盒装", 2)
    ]
    assert sorted(
        (r["line_no"], r["sku"], r["quantity"], r["state"]) for r in order["reservations"]
    ) == [(1, "GT-CUP", 4, "held"), (1, "GT-TEA", 2, "held")]
    after = await client.get("/api/v1/catalog/skus/GIFT-1/availability", headers=auth(keys["cs"]))
    assert after.json()["available"] == 1  # min(3 // 1, 3 // 2)
    # When it is paid, allocated, and shipped
    no = order["order_no"]
    from ordertally.orders import transitions
    from ordertally.orders.state_machine import Actor
    from tests.factories import DRIVERS

    async with db.transaction() as session:
        for name in ("payment_succeeded", "allocate", "start_fulfillment", "ship"):
            await transitions.transition(
                session, no, name, Actor(DRIVERS[name], "t", evidence_ref="e")
            )
    # Then the components left the warehouse; the bundle never had stock
    async with db.transaction(write=False) as session:
        shipped = (
            await session.execute(
                select(StockMovement.sku, StockMovement.quantity)
                .where(StockMovement.kind == "shipment")
                .order_by(StockMovement.sku)
            )
        ).all()
        states = set(
            await session.scalars(select(Reservation.state).where(Reservation.sku.like("GT-%")))
        )
        bundle_stock = await session.scalar(
            select(func.count()).select_from(Stock).where(Stock.sku == "GIFT-1")
        )
    assert [tuple(r) for r in shipped] == [("GT-CUP", -4), ("GT-TEA", -2)]
    assert states == {"consumed"} and bundle_stock == 0
    # And a later rename of the bundle does not rewrite the order's line
    await client.patch(
        "/api/v1/catalog/skus/GIFT-1", json={"name": "新礼盒"}, headers=auth(keys["ops"])
    )
    again = await client.get(f"/api/v1/orders/{no}", headers=auth(keys["cs"]))
    assert again.json()["lines"][0]["name"] == "礼盒 GIFT-1"


async def test_a_bundle_cannot_hold_stock_nor_contain_a_bundle(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a bundle
    await add_bundle(db, "GIFT-2", {"GT-TEA": 1})
    # When stock is received for it, or another bundle contains it
    receipt = await client.post(
        "/api/v1/stock/movements",
        json={
            "warehouse": "WH-TEST",
            "sku": "GIFT-2",
            "kind": "receipt",
            "quantity": 3,
            "reason": "PO",
        },
        headers=auth(keys["warehouse"]),
    )
    nested = await client.post(
        "/api/v1/catalog/skus",
        json={"code": "GIFT-3", "name": "套中套", "components": [{"sku": "GIFT-2", "quantity": 1}]},
        headers=auth(keys["ops"]),
    )
    # Then both are refused
    assert receipt.status_code == 422 and receipt.json()["code"] == "catalog.invalid_bundle"
    assert nested.status_code == 422 and nested.json()["code"] == "catalog.invalid_bundle"
    assert await _count(db, StockMovement) == 3  # the conftest seed only


async def test_categories_and_keyset_pages(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a tree tea > green and three SKUs in green
    ops = auth(keys["ops"])
    await client.post("/api/v1/catalog/categories", json={"code": "tea", "name": "茶"}, headers=ops)
    await client.post(
        "/api/v1/catalog/categories",
        json={"code": "green", "name": "绿茶", "parent": "tea"},
        headers=ops,
    )
    for n in (1, 2, 3):
        r = await client.post(
            "/api/v1/catalog/skus",
            json={"code": f"PG-{n}", "name": f"绿茶 {n}", "category": "green", "brand": "狮峰"},
            headers=ops,
        )
        assert r.status_code == 201, r.text
    # When the SKUs of the brand are read two at a time
    first = (
        await client.get("/api/v1/catalog/skus", params={"brand": "狮峰", "limit": 2}, headers=ops)
    ).json()
    second = (
        await client.get(
            "/api/v1/catalog/skus",
            params={"brand": "狮峰", "limit": 2, "after": first["next_after"]},
            headers=ops,
        )
    ).json()
    # Then the pages follow each other by code
    assert [s["code"] for s in first["items"]] == ["PG-1", "PG-2"]
    assert [s["code"] for s in second["items"]] == ["PG-3"] and second["next_after"] is None
    # When tea is moved under its own child, or a used category is deleted
    cycle = await client.patch(
        "/api/v1/catalog/categories/tea", json={"parent": "green"}, headers=ops
    )
    used = await client.delete("/api/v1/catalog/categories/green", headers=ops)
    # Then both are refused and the tree is unchanged
    assert (cycle.status_code, cycle.json()["code"]) == (422, "catalog.invalid_category")
    assert (used.status_code, used.json()["code"]) == (422, "catalog.invalid_category")
    tree = (await client.get("/api/v1/catalog/categories", headers=ops)).json()
    assert [(c["code"], c["parent"]) for c in tree] == [("green", "tea"), ("tea", None)]
    # When an unused category is added, renamed and deleted
    await client.post(
        "/api/v1/catalog/categories", json={"code": "cups", "name": "杯"}, headers=ops
    )
    renamed = await client.patch(
        "/api/v1/catalog/categories/cups", json={"name": "茶杯", "name_en": "Cups"}, headers=ops
    )
    deleted = await client.delete("/api/v1/catalog/categories/cups", headers=ops)
    # Then it is gone
    assert renamed.json()["name"] == "茶杯" and deleted.status_code == 204
    codes = [
        c["code"] for c in (await client.get("/api/v1/catalog/categories", headers=ops)).json()
    ]
    assert codes == ["green", "tea"]


async def test_a_held_bundle_order_is_reserved_by_components_when_its_hold_is_resolved(
    client: AsyncClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the hold policy, a bundle of one tea and two cups, 1 tea and 3 cups in stock, and
    # an unpaid order for two boxes: held for the shortage, nothing reserved
    from ordertally.core.settings import reset_settings

    monkeypatch.setenv("ORDERTALLY_STOCK_SHORTAGE_POLICY", "hold")
    reset_settings()
    await add_bundle(db, "GIFT-H", {"GH-TEA": 1, "GH-CUP": 2})
    await receive(db, "WH-TEST", "GH-TEA", 1)
    await receive(db, "WH-TEST", "GH-CUP", 3)
    created = await client.post(
        "/api/v1/orders",
        json=order_body(lines=[{"sku": "GIFT-H", "quantity": 2, "unit_price": "99.00"}]),
        headers=auth(keys["ops"]),
    )
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["reservations"] == []
    assert [h["type"] for h in order["holds"]] == ["stock_shortage"]
    # When the missing components arrive and ops resolve the hold
    await receive(db, "WH-TEST", "GH-TEA", 1)
    await receive(db, "WH-TEST", "GH-CUP", 1)
    resolved = await client.post(
        f"/api/v1/exceptions/{order['holds'][0]['id']}/resolve",
        json={"resolution": "stock received"},
        headers=auth(keys["ops"]),
    )
    # Then the bundle line holds exactly its components' units
    assert resolved.status_code == 200, resolved.text
    shown = (
        await client.get(f"/api/v1/orders/{order['order_no']}", headers=auth(keys["ops"]))
    ).json()
    assert sorted(
        (r["line_no"], r["sku"], r["quantity"], r["state"]) for r in shown["reservations"]
    ) == [
        (1, "GH-CUP", 4, "held"),
        (1, "GH-TEA", 2, "held"),
    ]
