"""Scheduled rules and purchase plans: a SKU below safety stock with no receipt planned in the
next 7 days raises a red alert once a day (and a planned receipt spares it); five empty pulls
in a row raise the channel alert; purchase plans by API and CSV, a bad file saving nothing."""

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from ordertally.channels import service as channels_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from ordertally.rules import service
from tests.channels.helpers import make_account
from tests.conftest import TEST_WAREHOUSE
from tests.factories import auth
from tests.rules.helpers import cases, hits

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


async def _stock(db: Database, sku: str, on_hand: int, safety: int) -> None:
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=TEST_WAREHOUSE,
            sku=sku,
            kind="receipt",
            quantity=on_hand,
            reason="test",
            actor="tests",
        )
        await inventory_service.configure_stock(
            session, warehouse_code=TEST_WAREHOUSE, sku=sku, safety_stock=safety, buckets=None
        )


async def _tick(db: Database) -> int:
    async with db.transaction() as session:
        return await service.run_schedule(session, clock.now())


async def test_below_safety_stock_without_a_plan_raises_a_red_alert_once_a_day(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    with clock.frozen(T0):
        # Given the template installed, K1 and K2 below safety stock, K3 above it
        async with db.transaction() as session:
            await service.install_templates(
                session, "tests", ["builtin.stock_below_safety_no_plan"]
            )
        await _stock(db, "K1", 5, 10)
        await _stock(db, "K2", 5, 10)
        await _stock(db, "K3", 50, 10)
        # and a receipt of K2 planned in 3 days (K1's is 8 days out: too late)
        r = await client.post(
            "/api/v1/purchase-plans",
            json={
                "plans": [
                    {
                        "sku": "K2",
                        "warehouse": TEST_WAREHOUSE,
                        "expected_date": "2026-12-04",
                        "quantity": 100,
                        "reference": "PO-1",
                    },
                    {
                        "sku": "K1",
                        "warehouse": TEST_WAREHOUSE,
                        "expected_date": "2026-12-09",
                        "quantity": 100,
                        "reference": "PO-2",
                    },
                ]
            },
            headers=auth(keys["ops"]),
        )
        assert r.json() == {"added": 2, "skipped": 0}
        # When the tick runs, twice the same day
        assert await _tick(db) == 1
        assert await _tick(db) == 0
        # Then K1 alone is alerted, once, with the facts it was seen with
        [hit] = await hits(db)
        assert hit.subject == f"K1@{TEST_WAREHOUSE}"
        assert hit.facts["stock"] == {
            "sku": "K1",
            "warehouse": TEST_WAREHOUSE,
            "on_hand": 5,
            "reserved": 0,
            "safety_stock": 10,
            "available": -5,
            "planned_7d": 0,
        }
        assert await cases(db) == [(None, "rule.stock_red_alert", False)]
        # When the next day comes, K1's receipt (12-09) falls within the 7 days
        clock.advance(timedelta(days=1))
        # Then nothing is alerted any more
        assert await _tick(db) == 0


async def test_five_empty_pulls_raise_the_channel_alert(db: Database) -> None:
    # Given the template and two accounts: one 5 empty pulls in, one 4
    await make_account(db, "shop_a")
    await make_account(db, "shop_b")
    async with db.transaction() as session:
        await service.install_templates(session, "tests", ["builtin.empty_channel_pulls"])
        for code, streak in (("shop_a", 5), ("shop_b", 4)):
            account = await channels_service.get_account(session, code)
            state = await channels_service.sync_state(session, account.id)
            state.empty_streak, state.orders_seen = streak, 12
    # When the tick runs / Then shop_a alone is alerted
    assert await _tick(db) == 1
    assert [h.subject for h in await hits(db)] == ["shop_a"]
    assert await cases(db) == [(None, "rule.channel_empty_pulls", False)]


async def test_purchase_plans_by_csv_a_bad_file_saving_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    good = (
        "sku,warehouse,expected_date,quantity,reference\n"
        "K1,WH-TEST,2026-12-10,40,PO-7\nK2,WH-TEST,2026-12-11,5,\n"
    )
    bad = good + "K3,WH-TEST,2026-13-01,5,PO-8\n"
    unknown = "sku,warehouse,expected_date,quantity\nNOT-OURS-1,WH-TEST,2026-12-10,4\n"
    # When a file with a bad date, or an unknown SKU, is imported
    for body, message in ((bad, "line 4"), (unknown, "unknown SKUs: NOT-OURS-1")):
        r = await client.post(
            "/api/v1/purchase-plans/import",
            content=body.encode(),
            headers=auth(keys["ops"], **{"content-type": "text/csv"}),
        )
        # Then it is refused, naming the problem
        assert (r.status_code, r.json()["code"]) == (422, "rule.purchase_plan_invalid")
        assert message in r.json()["detail"]
    r = await client.get("/api/v1/purchase-plans", headers=auth(keys["warehouse"]))
    assert r.json() == {"items": []}
    # When the good file is imported twice
    first = await client.post(
        "/api/v1/purchase-plans/import", content=good.encode(), headers=auth(keys["ops"])
    )
    again = await client.post(
        "/api/v1/purchase-plans/import", content=good.encode(), headers=auth(keys["ops"])
    )
    # Then its rows are saved once
    assert (first.json(), again.json()) == ({"added": 2, "skipped": 0}, {"added": 0, "skipped": 2})
    r = await client.get("/api/v1/purchase-plans?sku=K1", headers=auth(keys["warehouse"]))
    [plan] = r.json()["items"]
    assert (plan["warehouse"], plan["expected_date"], plan["quantity"], plan["reference"]) == (
        "WH-TEST",
        date(2026, 12, 10).isoformat(),
        40,
        "PO-7",
    )
    # And a warehouse key may read plans but not delete them; ops may
    r = await client.delete(f"/api/v1/purchase-plans/{plan['id']}", headers=auth(keys["warehouse"]))
    assert r.status_code == 403
    r = await client.delete(f"/api/v1/purchase-plans/{plan['id']}", headers=auth(keys["ops"]))
    assert r.status_code == 204
    r = await client.delete(f"/api/v1/purchase-plans/{plan['id']}", headers=auth(keys["ops"]))
    assert (r.status_code, r.json()["code"]) == (404, "rule.purchase_plan_not_found")
