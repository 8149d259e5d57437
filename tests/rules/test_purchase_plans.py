"""Purchase plans in the rules service (both databases): rows checked one by one with every
reason that refuses them, nothing written by a check; adds and deletes in the audit trail; the
list in keyset pages with its filters; and the stock cover, whose red rows are exactly the
subjects the stock alert rule fires for."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from ordertally.rules import service
from ordertally.rules.errors import PlanInvalid, PlanNotFound
from ordertally.rules.models import PurchasePlan, PurchasePlanEvent
from tests.conftest import TEST_WAREHOUSE
from tests.factories import add_warehouse, auth
from tests.rules.helpers import hits

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
OTHER = "WH-NORTH"


def plan(
    sku: str, day: str, quantity: int = 10, ref: str = "", wh: str = TEST_WAREHOUSE
) -> dict[str, Any]:
    return {
        "sku": sku,
        "warehouse": wh,
        "expected_date": date.fromisoformat(day),
        "quantity": quantity,
        "reference": ref,
    }


async def counts(db: Database) -> tuple[int, int]:
    """(plans, audit rows)."""
    async with db.transaction(write=False) as session:
        plans = await session.scalar(select(func.count()).select_from(PurchasePlan))
        events = await session.scalar(select(func.count()).select_from(PurchasePlanEvent))
    return int(plans or 0), int(events or 0)


async def stock(
    db: Database, sku: str, on_hand: int, safety: int, wh: str = TEST_WAREHOUSE
) -> None:
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=wh,
            sku=sku,
            kind="receipt",
            quantity=on_hand,
            reason="test",
            actor="tests",
        )
        await inventory_service.configure_stock(
            session, warehouse_code=wh, sku=sku, safety_stock=safety, buckets=None
        )


async def test_a_file_is_checked_row_by_row_and_the_check_writes_nothing(db: Database) -> None:
    # Given K2's plan saved already, and a second warehouse
    await add_warehouse(db, OTHER, province="北京市")
    async with db.transaction() as session:
        await service.add_plans(session, [plan("K2", "2026-12-05", 20, "PO-2")], "tests")
    before = await counts(db)
    text = (
        "\ufeffsku,warehouse,expected_date,quantity,reference\n"
        f"K1,{TEST_WAREHOUSE},2026-12-04,40,PO-1\n"  # 2: new
        f"K2,{TEST_WAREHOUSE},2026-12-05,20,PO-2\n"  # 3: saved already
        f"NOT-OURS-1,{TEST_WAREHOUSE},2026-12-05,5,\n"  # 4: unknown SKU
        "K3,WH-NOWHERE,2026-12-05,5,\n"  # 5: unknown warehouse
        f"K3,{TEST_WAREHOUSE},2026-13-01,0,\n"  # 6: bad date and quantity
        f",{TEST_WAREHOUSE},2026-12-05,5,\n"  # 7: no SKU
        "\n"  # 8: blank, skipped
        f"K1,{TEST_WAREHOUSE},2026-12-04,40,PO-1\n"  # 9: the same plan as line 2
        f"K4,{OTHER},2026-12-06,7,{'R' * 65}\n"  # 10: reference too long
        f"K4,{OTHER},2026-12-06,7,PO-9\n"  # 11: new, in the other warehouse
    )
    # When the file is previewed
    async with db.transaction(write=False) as session:
        check = await service.preview_plan_csv(session, text)
    # Then the accepted rows say which are new, the refused ones every reason
    assert [
        (r["line"], r["sku"], r["warehouse"], r["quantity"], r["new"]) for r in check.accepted
    ] == [
        (2, "K1", TEST_WAREHOUSE, 40, True),
        (3, "K2", TEST_WAREHOUSE, 20, False),
        (11, "K4", OTHER, 7, True),
    ]
    assert [(r.line, r.reasons) for r in check.rejected] == [
        (4, ["sku_unknown"]),
        (5, ["warehouse_unknown"]),
        (6, ["date_invalid", "quantity_invalid"]),
        (7, ["sku_required"]),
        (9, ["duplicate"]),
        (10, ["too_long"]),
    ]
    assert check.rejected[0].values["sku"] == "NOT-OURS-1"
    # And nothing was written
    assert await counts(db) == before
    # When a user limited to the other warehouse previews it
    async with db.transaction(write=False) as session:
        scoped = await service.preview_plan_csv(session, text, warehouses=[OTHER])
    # Then the rows of the test warehouse are refused as out of scope
    assert [r["line"] for r in scoped.accepted] == [11]
    assert (2, ["warehouse_out_of_scope"]) in [(r.line, r.reasons) for r in scoped.rejected]


async def test_a_file_without_the_columns_is_refused_whole(db: Database) -> None:
    async with db.transaction(write=False) as session:
        with pytest.raises(PlanInvalid, match="lacks columns: expected_date, quantity"):
            await service.preview_plan_csv(session, "sku,warehouse\nK1,WH-TEST\n")
    assert await counts(db) == (0, 0)


async def test_adds_and_deletes_are_in_the_audit_trail(db: Database) -> None:
    # Given two plans added by one person
    async with db.transaction() as session:
        added = await service.add_plans(
            session, [plan("K1", "2026-12-04", ref="PO-1"), plan("K2", "2026-12-05")], "user:wang"
        )
    # When the same rows are added again, by file
    async with db.transaction() as session:
        again = await service.add_plans(
            session, [plan("K1", "2026-12-04", ref="PO-1")], "user:li", action="imported"
        )
    # Then the first time added both, the second nothing, and only the first is in the trail
    assert (added, again) == (2, 0)
    assert await counts(db) == (2, 2)
    # When one is deleted
    async with db.transaction(write=False) as session:
        [k1] = await service.plan_page(session, sku_prefix="K1")
    async with db.transaction() as session:
        await service.delete_plan(session, k1.id, by="user:li")
    # Then the trail says who did what, newest first
    async with db.transaction(write=False) as session:
        events = await service.plan_events(session)
    assert [(e.action, e.sku, e.quantity, e.reference, e.actor) for e in events] == [
        ("deleted", "K1", 10, "PO-1", "user:li"),
        ("added", "K2", 10, "", "user:wang"),
        ("added", "K1", 10, "PO-1", "user:wang"),
    ]
    assert events[0].plan_id == k1.id
    # When it is deleted again, or a plan names an unknown warehouse
    async with db.transaction() as session:
        with pytest.raises(PlanNotFound):
            await service.delete_plan(session, k1.id, by="user:li")
    async with db.transaction() as session:
        with pytest.raises(PlanInvalid, match="unknown warehouses: WH-NOWHERE"):
            await service.add_plans(session, [plan("K3", "2026-12-06", wh="WH-NOWHERE")], "x")
    # Then nothing more was written
    assert await counts(db) == (1, 3)


async def test_the_list_pages_by_date_with_its_filters(db: Database) -> None:
    # Given six plans over three dates, two warehouses and three SKUs
    await add_warehouse(db, OTHER, province="北京市")
    rows = [
        plan("K1", "2026-12-06", ref="a"),
        plan("K2", "2026-12-04", ref="b"),
        plan("K1", "2026-12-05", ref="c", wh=OTHER),
        plan("K3", "2026-12-05", ref="d"),
        plan("K1", "2026-12-04", ref="e"),
        plan("K2", "2026-12-06", ref="f", wh=OTHER),
    ]
    async with db.transaction() as session:
        await service.add_plans(session, rows, "tests")
    # When the whole list is read two at a time
    seen: list[str] = []
    after = None
    async with db.transaction(write=False) as session:
        while True:
            page = await service.plan_page(session, after=after, limit=2)
            if not page:
                break
            seen += [p.reference for p in page]
            after = (page[-1].expected_date, page[-1].id)
    # Then every plan comes once, by date then by id (the order they were added)
    assert seen == ["b", "e", "c", "d", "a", "f"]
    # And the filters narrow it: SKU prefix, warehouses, date range
    async with db.transaction(write=False) as session:
        by_sku = await service.plan_page(session, sku_prefix="K1")
        by_wh = await service.plan_page(session, warehouses=[OTHER])
        by_date = await service.plan_page(session, start=date(2026, 12, 5), end=date(2026, 12, 5))
        none = await service.plan_page(session, warehouses=[])
        like = await service.plan_page(session, sku_prefix="K_")
    assert [p.reference for p in by_sku] == ["e", "c", "a"]
    assert [p.reference for p in by_wh] == ["c", "f"]
    assert [p.reference for p in by_date] == ["c", "d"]
    assert none == [] and like == []  # "_" is a character, not a wildcard


async def test_the_cover_red_rows_are_the_rules_red_alerts(db: Database) -> None:
    with clock.frozen(T0):
        # Given K1..K5 stocked: K1 below safety, nothing planned; K2 below, a receipt in 3 days;
        # K3 above safety; K4 without safety stock; K5 below, its receipt 8 days out
        for sku, on_hand, safety in (("K1", 5, 10), ("K2", 5, 10), ("K3", 50, 10)):
            await stock(db, sku, on_hand, safety)
        await stock(db, "K4", 3, 0)
        await stock(db, "K5", 1, 4)
        async with db.transaction() as session:
            await service.add_plans(
                session,
                [plan("K2", "2026-12-04", 100, "PO-1"), plan("K5", "2026-12-09", 100, "PO-2")],
                "tests",
            )
        # When the cover is read, all rows of the K SKUs
        async with db.transaction(write=False) as session:
            cover = await service.stock_cover(session, sku_prefix="K")
            short = await service.stock_cover(session, sku_prefix="K", short_only=True)
        # Then each row carries the facts the rule sees and its state
        assert [
            (r["sku"], r["free"], r["safety_stock"], r["planned_7d"], r["state"])
            for r in cover.rows
        ] == [
            ("K1", 5, 10, 0, "red"),
            ("K2", 5, 10, 100, "covered"),
            ("K3", 50, 10, 0, "ok"),
            ("K4", 3, 0, 0, "unset"),
            ("K5", 1, 4, 0, "red"),
        ]
        assert (cover.complete, cover.next_after, cover.rule) == (
            True,
            None,
            {"state": "absent", "rule_id": None},
        )
        assert [r["sku"] for r in short.rows] == ["K1", "K2", "K5"]
        # When the stock alert is installed and its daily tick runs
        async with db.transaction() as session:
            await service.install_templates(session, "tests", [service.STOCK_ALERT_TEMPLATE])
            fired = await service.run_schedule(session, clock.now())
        # Then it fires for exactly the red rows, and the cover says the rule is on
        red = {f"{r['sku']}@{r['warehouse']}" for r in cover.rows if r["state"] == "red"}
        assert fired == 2 and {h.subject for h in await hits(db)} == red
        async with db.transaction(write=False) as session:
            after = await service.stock_cover(session, sku_prefix="K")
        assert after.rule["state"] == "on" and after.rule["rule_id"] is not None
        # When the next day comes, K5's receipt falls within the 7 days: covered, not red
        clock.advance(timedelta(days=1))
        async with db.transaction(write=False) as session:
            later = await service.stock_cover(session, sku_prefix="K5")
        assert [(r["planned_7d"], r["state"]) for r in later.rows] == [(100, "covered")]


async def test_the_cover_pages_resume_after_the_last_row(db: Database) -> None:
    # Given five stock rows below safety stock and one above it
    for sku in ("K1", "K2", "K3", "K4", "K5"):
        await stock(db, sku, 1, 5)
    await stock(db, "K6", 9, 5)
    for short_only, expected in ((True, 5), (False, 6)):
        # When the rows (short ones, then all) are read two at a time
        seen: list[str] = []
        pages = 0
        after = None
        async with db.transaction(write=False) as session:
            for _ in range(5):
                page = await service.stock_cover(
                    session, sku_prefix="K", short_only=short_only, after=after, limit=2
                )
                pages += 1
                seen += [r["sku"] for r in page.rows]
                after = page.next_after
                if after is None:
                    break
        # Then each comes once, in SKU order, and the last page says there is no more
        assert seen == ["K1", "K2", "K3", "K4", "K5", "K6"][:expected]
        assert (after, pages) == (None, 3)


async def test_the_api_refuses_an_unknown_warehouse_and_audits_its_writes(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    body = {"sku": "K1", "expected_date": "2026-12-10", "quantity": 40, "reference": "PO-1"}
    # When ops posts a plan for a warehouse that does not exist
    r = await client.post(
        "/api/v1/purchase-plans",
        json={"plans": [{**body, "warehouse": "WH-NOWHERE"}]},
        headers=auth(keys["ops"]),
    )
    # Then it is a problem response naming it, and nothing is saved
    assert (r.status_code, r.json()["code"]) == (422, "rule.purchase_plan_invalid")
    assert "unknown warehouses: WH-NOWHERE" in r.json()["detail"]
    assert await counts(db) == (0, 0)
    # When ops adds it for the test warehouse by CSV, then deletes it
    csv_body = f"sku,warehouse,expected_date,quantity\nK1,{TEST_WAREHOUSE},2026-12-10,40\n"
    r = await client.post(
        "/api/v1/purchase-plans/import", content=csv_body.encode(), headers=auth(keys["ops"])
    )
    assert r.json() == {"added": 1, "skipped": 0}
    [saved] = (await client.get("/api/v1/purchase-plans", headers=auth(keys["ops"]))).json()[
        "items"
    ]
    r = await client.delete(f"/api/v1/purchase-plans/{saved['id']}", headers=auth(keys["ops"]))
    assert r.status_code == 204
    # Then the trail has both, under the key's name
    async with db.transaction(write=False) as session:
        events = await service.plan_events(session)
    assert [(e.action, e.plan_id, e.actor) for e in events] == [
        ("deleted", saved["id"], saved["created_by"]),
        ("imported", saved["id"], saved["created_by"]),
    ]
    assert saved["created_by"] == "ops-tester"
