"""The purchase plans screen over HTTP (both databases): who reads and who edits, the CSRF
token on every write, a plan added (bad input refused beside its field in both languages,
changing nothing), a CSV previewed then confirmed, a delete confirmed first, the filtered list
paged and exported with formula cells neutralised, a warehouse-scoped user kept to their
warehouse, and the stock cover naming a red alert's reason."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.auth import users
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from ordertally.rules import service as rules_service
from ordertally.rules.models import PurchasePlan, PurchasePlanEvent
from tests.conftest import TEST_WAREHOUSE
from tests.factories import add_warehouse
from tests.web.conftest import SignedInClient
from tests.web.helpers import PASSWORD, csrf_of, sign_in

pytestmark = pytest.mark.anyio

PAGE = "/ui/inventory/purchase-plans"
OTHER = "WH-NORTH"


def day(offset: int) -> str:
    return (clock.now().date() + timedelta(days=offset)).isoformat()


async def counts(db: Database) -> tuple[int, int]:
    """(plans, audit rows)."""
    async with db.transaction(write=False) as session:
        plans = await session.scalar(select(func.count()).select_from(PurchasePlan))
        events = await session.scalar(select(func.count()).select_from(PurchasePlanEvent))
    return int(plans or 0), int(events or 0)


async def saved(db: Database) -> list[tuple[str, str, str, int, str, str]]:
    """(sku, warehouse, date, quantity, reference, by) of every plan, by id."""
    async with db.transaction(write=False) as session:
        plans = await rules_service.plan_page(session, limit=1000)
    return sorted(
        (
            p.sku,
            p.warehouse_code,
            p.expected_date.isoformat(),
            p.quantity,
            p.reference,
            p.created_by,
        )
        for p in plans
    )


async def add(db: Database, sku: str, offset: int, quantity: int = 10, ref: str = "") -> int:
    """A plan through the service; returns its id."""
    async with db.transaction() as session:
        await rules_service.add_plans(
            session,
            [
                {
                    "sku": sku,
                    "warehouse": TEST_WAREHOUSE,
                    "expected_date": clock.now().date() + timedelta(days=offset),
                    "quantity": quantity,
                    "reference": ref,
                }
            ],
            "tests",
        )
        [found] = [
            p
            for p in await rules_service.plan_page(session, sku_prefix=sku, limit=1000)
            if p.reference == ref and p.expected_date.isoformat() == day(offset)
        ]
        return found.id


def form(token: str, **values: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "warehouse": TEST_WAREHOUSE,
        "sku": "K1",
        "expected_date": day(3),
        "quantity": "40",
        "reference": "PO-1",
        **values,
    }


async def test_finance_and_cs_read_admin_ops_and_the_warehouse_edit(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a plan, and one person of each role
    plan_id = await add(db, "K1", 2, ref="PO-7")
    for role in ("finance", "cs"):
        reader = await signed_in(role)
        # When a reader opens the page
        page = await reader.get(PAGE)
        # Then they see the plan, with neither the forms nor a delete link
        assert page.status_code == 200
        assert re.findall(r'data-plan="(\d+)"', page.text) == [str(plan_id)]
        assert 'data-form="add-plan"' not in page.text
        assert 'data-form="import-plans"' not in page.text and "data-delete=" not in page.text
        # And every write is refused to them, nothing changed
        token = csrf_of(page.text)
        refused = [
            await reader.post(PAGE, data=form(token)),
            await reader.post(f"{PAGE}/import", data={"csrf_token": token, "text": "x"}),
            await reader.post(f"{PAGE}/import/confirm", data={"csrf_token": token, "rows": "x"}),
            await reader.post(f"{PAGE}/{plan_id}/delete", data={"csrf_token": token}),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403, 403]
        assert 'data-refused="role"' in refused[0].text
        # And the export is theirs to read
        export = await reader.get(f"{PAGE}/export.csv")
        assert export.status_code == 200 and "PO-7" in export.text
    assert await counts(db) == (1, 1)
    # When the warehouse, ops and admin each add a plan
    for role in ("warehouse", "ops", "admin"):
        editor = await signed_in(role)
        page = await editor.get(PAGE)
        assert 'data-form="add-plan"' in page.text and f'data-delete="{plan_id}"' in page.text
        response = await editor.post(PAGE, data=form(csrf_of(page.text), reference=f"PO-{role}"))
        assert response.status_code == 303, role
    # Then the three are saved under their names, and audited
    assert [(s[4], s[5]) for s in await saved(db) if s[4] != "PO-7"] == [
        ("PO-admin", "user:admin-5"),
        ("PO-ops", "user:ops-4"),
        ("PO-warehouse", "user:warehouse-3"),
    ]
    assert await counts(db) == (4, 4)
    # And the inventory links to the screen
    inventory = await editor.get("/ui/inventory")
    assert 'href="/ui/inventory/purchase-plans"' in inventory.text


async def test_every_write_without_the_pages_token_is_refused(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given ops on the page, and a plan
    plan_id = await add(db, "K2", 1)
    ops = await signed_in("ops")
    token = csrf_of((await ops.get(PAGE)).text)
    rows = f"sku,warehouse,expected_date,quantity\nK1,{TEST_WAREHOUSE},{day(2)},5\n"
    # When each write is posted without the token, or with another one
    responses = [
        await ops.post(PAGE, data={k: v for k, v in form(token).items() if k != "csrf_token"}),
        await ops.post(PAGE, data=form("forged-" + token)),
        await ops.post(f"{PAGE}/import", files={"file": ("p.csv", rows.encode())}),
        await ops.post(f"{PAGE}/import/confirm", data={"rows": rows}),
        await ops.post(f"{PAGE}/{plan_id}/delete", data={}),
    ]
    # Then each is refused as such, and nothing changed
    assert [r.status_code for r in responses] == [403] * 5
    assert all('data-refused="csrf"' in r.text for r in responses)
    assert await counts(db) == (1, 1)
    # When the confirm carries the token
    ok = await ops.post(f"{PAGE}/import/confirm", data={"csrf_token": token, "rows": rows})
    # Then the row is saved
    assert ok.status_code == 303 and await counts(db) == (2, 2)


@pytest.mark.parametrize(
    ("lang", "messages"),
    [
        (
            "zh_CN",
            {
                "sku": "商品目录中没有这个 SKU。",
                "expected_date": "预计到货日期不是有效日期（YYYY-MM-DD）。",
                "quantity": "数量须为 1 到 10,000,000 之间的整数。",
            },
        ),
        (
            "en",
            {
                "sku": "The product catalogue has no such SKU.",
                "expected_date": "The expected date is not a date (YYYY-MM-DD).",
                "quantity": "The quantity must be a whole number from 1 to 10,000,000.",
            },
        ),
    ],
)
async def test_bad_input_is_refused_beside_its_field_and_changes_nothing(
    signed_in: SignedInClient, db: Database, lang: str, messages: dict[str, str]
) -> None:
    # Given the warehouse in a language
    warehouse = await signed_in("warehouse")
    warehouse.cookies.set("ot_lang", lang)
    token = csrf_of((await warehouse.get(PAGE)).text)
    # When it saves a plan of an unknown SKU, with a bad date and no quantity
    response = await warehouse.post(
        PAGE, data=form(token, sku="NOT-OURS-1", expected_date="2026-02-30", quantity="")
    )
    # Then each field says what is wrong, in that language, the values kept
    assert response.status_code == 422
    shown = dict(re.findall(r'data-field-error="(\w+)">([^<]+)<', response.text))
    assert {k: html.unescape(v) for k, v in shown.items()} == messages
    assert 'value="NOT-OURS-1"' in response.text
    # And nothing was saved or audited
    assert await counts(db) == (0, 0)
    # When the same plan is saved twice
    first = await warehouse.post(PAGE, data=form(token))
    second = await warehouse.post(PAGE, data=form(token))
    # Then the second changes nothing and says so
    assert (first.status_code, second.status_code) == (303, 303)
    assert "done=unchanged" in second.headers["location"]
    assert await counts(db) == (1, 1)


async def test_a_csv_is_previewed_then_confirmed(signed_in: SignedInClient, db: Database) -> None:
    # Given ops, and K2's plan saved already
    await add(db, "K2", 4, 20, "PO-2")
    ops = await signed_in("ops")
    token = csrf_of((await ops.get(PAGE)).text)
    text = (
        "sku,warehouse,expected_date,quantity,reference\n"
        f"K1,{TEST_WAREHOUSE},{day(3)},40,采购单-1\n"
        f"K2,{TEST_WAREHOUSE},{day(4)},20,PO-2\n"
        f"NOT-OURS-1,{TEST_WAREHOUSE},{day(3)},5,\n"
        f"K3,{TEST_WAREHOUSE},{day(5)},-4,\n"
        f"K4,{TEST_WAREHOUSE},{day(6)},8,=1+1\n"
    )
    # When ops uploads the file (GB18030, as many channel tools write it)
    preview = await ops.post(
        f"{PAGE}/import",
        data={"csrf_token": token},
        files={"file": ("计划.csv", text.encode("gb18030"))},
    )
    # Then the preview lists what would be saved and what is refused, and why
    assert preview.status_code == 200
    figures = dict(re.findall(r'data-preview="(\w+)">(\d+)<', preview.text))
    assert figures == {"accepted": "3", "new": "2", "rejected": "2"}
    assert re.findall(r'data-accepted-line="(\d+)"', preview.text) == ["2", "3", "6"]
    assert re.findall(r'data-rejected-line="(\d+)"', preview.text) == ["4", "5"]
    assert re.findall(r'data-reason="(\w+)"', preview.text) == ["sku_unknown", "quantity_invalid"]
    assert "商品目录中没有这个 SKU。" in preview.text
    # And nothing is saved yet
    assert await counts(db) == (1, 1)
    # When ops confirms
    carried = re.search(r'<textarea name="rows" hidden>(.*?)</textarea>', preview.text, re.S)
    assert carried is not None and "采购单-1" in carried.group(1)
    rows = html.unescape(carried.group(1))
    done = await ops.post(
        f"{PAGE}/import/confirm", data={"csrf_token": csrf_of(preview.text), "rows": rows}
    )
    # Then the new rows are saved as imported, the saved one skipped
    assert done.status_code == 303
    assert "added=2" in done.headers["location"] and "skipped=1" in done.headers["location"]
    assert [s[0] for s in await saved(db)] == ["K1", "K2", "K4"]
    async with db.transaction(write=False) as session:
        events = await rules_service.plan_events(session)
    assert sorted((e.action, e.sku) for e in events) == [
        ("added", "K2"),
        ("imported", "K1"),
        ("imported", "K4"),
    ]
    page = await ops.get(done.headers["location"])
    assert 'data-plans-flash="imported"' in page.text
    # When the rows posted to the confirm step no longer pass the check (here: one edited to
    # an unknown warehouse)
    bad = rows.replace(TEST_WAREHOUSE, "WH-GONE", 1)
    again = await ops.post(f"{PAGE}/import/confirm", data={"csrf_token": token, "rows": bad})
    # Then nothing is saved and the preview is shown again
    assert again.status_code == 409 and "data-import-error" in again.text
    assert await counts(db) == (3, 3)
    # When the file lacks a column, or is empty
    wrong = await ops.post(
        f"{PAGE}/import", data={"csrf_token": token, "text": "sku,quantity\nK1,3\n"}
    )
    empty = await ops.post(f"{PAGE}/import", data={"csrf_token": token, "text": " "})
    # Then each is refused on the page
    assert (wrong.status_code, empty.status_code) == (422, 422)
    assert "data-import-error" in wrong.text and "data-import-error" in empty.text


async def test_a_delete_is_confirmed_first_and_audited(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two plans, and ops on the page
    keep = await add(db, "K1", 1)
    gone = await add(db, "K2", 2, ref="PO-9")
    ops = await signed_in("ops")
    page = await ops.get(PAGE)
    # When ops follows the delete link of one
    link = re.search(rf'href="([^"]+)"[^>]*data-delete="{gone}"', page.text)
    assert link is not None
    confirm = await ops.get(html.unescape(link.group(1)))
    # Then the page asks first, naming the plan; nothing is deleted yet
    assert re.findall(r'data-confirm-delete="(\d+)"', confirm.text) == [str(gone)]
    assert "PO-9" in confirm.text and await counts(db) == (2, 2)
    # When ops confirms
    response = await ops.post(f"{PAGE}/{gone}/delete", data={"csrf_token": csrf_of(confirm.text)})
    # Then the plan is gone, the other kept, and the trail says who deleted it
    assert response.status_code == 303
    assert [s[0] for s in await saved(db)] == ["K1"]
    after = await ops.get(response.headers["location"])
    assert re.findall(r'data-plan="(\d+)"', after.text) == [str(keep)]
    assert re.findall(r'data-plan-event="(\w+)"', after.text)[0] == "deleted"
    # When it is deleted again
    twice = await ops.post(f"{PAGE}/{gone}/delete", data={"csrf_token": csrf_of(confirm.text)})
    # Then the page says it no longer exists
    assert twice.status_code == 404 and 'data-field-error="form"' in twice.text
    assert await counts(db) == (1, 3)


async def test_the_list_filters_pages_and_exports_with_formulas_neutralised(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given 55 plans of K1 over 55 days, 2 of K2 (one with a formula-like reference)
    async with db.transaction() as session:
        await rules_service.add_plans(
            session,
            [
                {
                    "sku": "K1",
                    "warehouse": TEST_WAREHOUSE,
                    "expected_date": clock.now().date() + timedelta(days=i),
                    "quantity": i + 1,
                    "reference": f"PO-{i:03d}",
                }
                for i in range(55)
            ],
            "tests",
        )
    await add(db, "K2", 3, ref='=HYPERLINK("http://x","y")')
    await add(db, "K2", 9, ref="@SUM(A1)")
    finance = await signed_in("finance")
    # When finance filters on K1 and pages
    first = await finance.get(PAGE, params={"sku": "K1"})
    ids = re.findall(r'data-plan-sku="(\w+)"', first.text)
    link = re.search(r'href="([^"]+)"[^>]*data-action="next-page"', first.text)
    assert link is not None
    second = await finance.get(html.unescape(link.group(1)))
    # Then the first page holds 50 of K1, the second the other 5, with no next page
    assert ids == ["K1"] * 50
    assert re.findall(r'data-plan-sku="(\w+)"', second.text) == ["K1"] * 5
    assert 'data-action="next-page"' not in second.text
    assert "PO-054" in second.text and "PO-049" not in second.text
    # When finance filters on a date range and on K2
    ranged = await finance.get(PAGE, params={"date_from": day(2), "date_to": day(4)})
    assert re.findall(r'data-plan-sku="(\w+)"', ranged.text) == ["K1", "K1", "K2", "K1"]
    # And a bad date is reported, the filter left out
    bad = await finance.get(PAGE, params={"date_from": "2026-99-01", "sku": "K2"})
    assert bad.status_code == 422 and "data-filter-error" in bad.text
    assert len(re.findall(r'data-plan-sku="K2"', bad.text)) == 2
    # When finance exports K2
    export = await finance.get(f"{PAGE}/export.csv", params={"sku": "K2"})
    # Then the CSV has the import's columns and every formula cell starts with '
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert export.text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(export.text.lstrip("\ufeff"))))
    assert rows[0] == [
        "sku",
        "warehouse",
        "expected_date",
        "quantity",
        "reference",
        "created_by",
        "created_at",
    ]
    assert [(r[0], r[2], r[3], r[4]) for r in rows[1:]] == [
        ("K2", day(3), "10", '\'=HYPERLINK("http://x","y")'),
        ("K2", day(9), "10", "'@SUM(A1)"),
    ]


async def test_a_warehouse_scoped_user_plans_only_for_their_warehouse(
    web: httpx.AsyncClient, db: Database
) -> None:
    # Given a second warehouse with a plan, one in the test warehouse, and a user limited to
    # the second
    await add_warehouse(db, OTHER, province="北京市")
    await add(db, "K1", 2)
    async with db.transaction() as session:
        await rules_service.add_plans(
            session,
            [
                {
                    "sku": "K2",
                    "warehouse": OTHER,
                    "expected_date": clock.now().date() + timedelta(days=2),
                    "quantity": 5,
                    "reference": "",
                }
            ],
            "tests",
        )
        await users.create_user(session, "north", PASSWORD, "warehouse", warehouses=[OTHER])
    assert (await sign_in(web, "north")).status_code == 303
    # When they open the page
    page = await web.get(PAGE)
    # Then they see their warehouse's plan only
    assert re.findall(r'data-plan-sku="(\w+)"', page.text) == ["K2"]
    # When they add a plan for the other warehouse
    token = csrf_of(page.text)
    refused = await web.post(PAGE, data=form(token))
    # Then it is refused beside the warehouse, nothing saved
    assert refused.status_code == 422 and 'data-field-error="warehouse"' in refused.text
    assert await counts(db) == (2, 2)
    # And their own warehouse is theirs to plan
    ok = await web.post(PAGE, data=form(token, warehouse=OTHER))
    assert ok.status_code == 303 and await counts(db) == (3, 3)


async def test_the_cover_names_the_red_alerts_reason(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given K1 and K2 below their safety stock, K2 with a receipt planned in 3 days
    for sku in ("K1", "K2"):
        async with db.transaction() as session:
            await inventory_service.record_movement(
                session,
                warehouse_code=TEST_WAREHOUSE,
                sku=sku,
                kind="receipt",
                quantity=4,
                reason="test",
                actor="tests",
            )
            await inventory_service.configure_stock(
                session, warehouse_code=TEST_WAREHOUSE, sku=sku, safety_stock=10, buckets=None
            )
    await add(db, "K2", 3, 60)
    cs = await signed_in("cs")
    cs.cookies.set("ot_lang", "en")
    # When cs opens the page (below safety stock is the default view)
    page = await cs.get(PAGE)
    # Then K1 is a red alert, K2 covered, with the figures the rule compares
    states = re.findall(r'data-cover="([^"]+)" data-state="(\w+)"', page.text)
    assert states == [(f"K1@{TEST_WAREHOUSE}", "red"), (f"K2@{TEST_WAREHOUSE}", "covered")]
    k2 = re.search(rf'data-cover="K2@{TEST_WAREHOUSE}".*?</tr>', page.text, re.S)
    assert k2 is not None
    assert re.findall(r"data-(free|safety|planned)>(\d+)<", k2.group(0)) == [
        ("free", "4"),
        ("safety", "10"),
        ("planned", "60"),
    ]
    assert "Red alert: below safety stock, nothing planned in 7 days" in page.text
    assert 'data-rule-state="absent"' in page.text
    # And the view of every stock row shows the stocked ones too
    every = await cs.get(PAGE, params={"cover": "all"})
    assert f'data-cover="TEA-LJ-250@{TEST_WAREHOUSE}" data-state="unset"' in every.text
