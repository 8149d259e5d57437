"""The orders screen's saved views and bulk actions in a real browser (Debian's Chromium
through Playwright) against the real server on PostgreSQL (the HTTP tests cover both
databases): ops saves the unpaid orders as a view, applies it, ticks two orders with the
keyboard, previews tagging them, confirms, and watches the batch finish; ops imports the
Douyin shop's export, watches its progress and downloads the rejected row. Each screen is
photographed in both languages when ORDERTALLY_SCREENSHOTS=1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser

from ordertally.casework import batch as casework_batch
from ordertally.casework import repository as casework_repository
from ordertally.channels import file_imports
from ordertally.core.db import Database
from tests.channels.test_import import FIXTURES, account
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.web.browser import ImportPage, OrdersList
from tests.web.helpers import make_user
from tests.web.test_browser_screens import both_languages, signed_in_page

DOUYIN = FIXTURES / "douyin_orders.csv"  # the shop's export (see fixtures/SOURCES.md)
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]


async def test_ops_saves_a_view_and_tags_two_of_its_orders_in_a_batch(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given three unpaid orders, a paid one, and ops in a browser
    unpaid = [await make_order(db, "pending_payment") for _ in range(3)]
    await make_order(db, "paid")
    await make_user(db, "zhaolei", "ops")
    page = await signed_in_page(chromium, base, "zhaolei")
    # When ops filters to the unpaid orders and saves them as a view
    orders = await OrdersList(page, base).open()
    await orders.filter_status("pending_payment")
    await orders.save_view("待付款")
    # Then the view is offered, and applying it from the full list shows the three
    assert await orders.views() == ["待付款"]
    await orders.open()
    await orders.apply_view("待付款")
    assert sorted(await orders.order_numbers()) == sorted(o.order_no for o in unpaid)
    await both_languages(page, "orders-views-bulk")
    # When ops ticks two of them with the keyboard and previews tagging them
    picked = [unpaid[0].order_no, unpaid[2].order_no]
    await orders.pick(*picked)
    batch = await orders.preview_bulk("tag", tag="加急")
    # Then the preview shows the two, and nothing is tagged yet
    assert await batch.state() == "previewed"
    assert await batch.figure("total") == "2"
    assert sorted(await batch.sample()) == sorted(picked)
    await both_languages(page, "orders-bulk-preview")
    async with db.transaction(write=False) as session:
        assert await casework_repository.tags_of(session, unpaid[0].id) == []
    # When ops confirms and the worker runs the batch
    await batch.confirm()
    async with db.transaction(write=False) as session:
        queued = await casework_batch.queued(session)
    assert [await casework_batch.run(db, i) for i in queued] == ["done"]
    # Then the page's progress card turns done by itself, with two changed
    await batch.wait_for("done")
    assert await batch.figure("changed") == "2"
    async with db.transaction(write=False) as session:
        tags = [await casework_repository.tags_of(session, o.id) for o in unpaid]
    assert tags == [["加急"], [], ["加急"]]


async def test_ops_imports_the_douyin_export_and_downloads_the_rejected_row(
    chromium: Browser, live_server: LiveServer, db: Database, tmp_path: Path
) -> None:
    base = live_server.url
    # Given a Douyin account, the shop's export, and ops in a browser
    await account(db, "dy_shop", "douyin")
    source = tmp_path / "抖店订单.csv"
    shutil.copy(DOUYIN, source)
    await make_user(db, "zhouli", "ops")
    page = await signed_in_page(chromium, base, "zhouli")
    # When ops opens the import from the channels screen and uploads the file
    await page.goto(f"{base}/ui/channels")
    await page.click("a[data-action=open-import]")
    screen = ImportPage(page, base)
    await both_languages(page, "channels-import")
    await screen.upload("dy_shop", str(source), "douyin")
    # Then it is queued; when the worker imports it, the progress card turns done by itself
    assert await screen.state() == "queued"
    async with db.transaction(write=False) as session:
        waiting = await file_imports.to_run(session)
    assert [await file_imports.run(db, i) for i in waiting] == ["done"]
    await screen.wait_for("done")
    assert (await screen.figure("created"), await screen.figure("rejected")) == ("3", "1")
    await both_languages(page, "channels-import-done")
    # And the rejected row downloads with its line and reason
    text = await screen.download_rejected(str(tmp_path / "rejected.csv"))
    assert "6920000000000003" in text and "quantity must be above 0" in text
