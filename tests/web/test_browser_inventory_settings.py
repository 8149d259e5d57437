"""Ops in a real browser on the screens issue 20 still lacked (PostgreSQL, like the other
browser flows): the reservations, the allocation dry run, an SLA policy tightened and the
carriers; and the buyer's tracking page saying "状态核实中" while a payment is open. Each is
photographed in both languages when screenshots are asked for."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import tracking_page
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.fulfillment.helpers import SECOND_SKU, split_paid_order
from tests.payments.helpers import make_attempt
from tests.web import browser
from tests.web.helpers import make_user
from tests.web.test_browser_screens import both_languages, signed_in_page

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]


async def test_ops_checks_reservations_dry_runs_an_allocation_and_tightens_an_sla(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given a paid order split over two warehouses, and ops signed in
    order = await split_paid_order(db)
    await make_user(db, "wangfang", "ops")
    page = await signed_in_page(chromium, base, "wangfang")
    # When ops opens the committed reservations from the inventory
    await page.goto(f"{base}/ui/inventory")
    await page.click("a[data-link=reservations]")
    await page.select_option("select[data-filter=state]", "committed")
    await page.click("#reservations button[type=submit]")
    # Then the order's units are listed
    assert await page.locator(f"a[data-order='{order.order_no}']").count() == 2
    await both_languages(page, "reservations")
    # When ops dry-runs an order of both SKUs to Guangdong
    await page.goto(f"{base}/ui/inventory")
    await page.click("a[data-link=allocation]")
    await page.fill("input[data-dry-run=province]", "广东省")
    await page.fill("textarea[data-dry-run=lines]", f"TEA-LJ-250 1\n{SECOND_SKU} 1")
    await page.click("button[data-action=dry-run]")
    # Then the page says it ships from two warehouses and why
    assert await page.locator("#dry-run-result[data-feasible=yes]").count() == 1
    assert await page.locator("[data-chosen]").count() == 2
    await both_languages(page, "allocation")
    # When ops tightens the amount-mismatch SLA from the settings
    await page.goto(f"{base}/ui/settings")
    await page.click("a[data-link=sla]")
    await page.click("a[data-edit-policy=amount_mismatch]")
    form = page.locator("form[data-policy-form=amount_mismatch]")
    await form.locator("input[name=sla_minutes]").fill("120")
    await form.locator("button[data-action=save-policy]").click()
    # Then it is saved
    assert await page.locator("[data-sla-flash]").count() == 1
    async with db.transaction(write=False) as session:
        assert (await exceptions_service.policy_of(session, "amount_mismatch")).sla_minutes == 120
    await both_languages(page, "sla-policies")
    # And the carriers page shows the adapter
    await page.goto(f"{base}/ui/settings/carriers")
    assert await page.locator("[data-carrier=adapter]").count() == 1
    await both_languages(page, "carriers")


async def test_the_buyer_sees_status_being_verified_while_a_payment_is_open(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    # Given an unpaid order whose payment is open and whose notification has not arrived
    order = await make_order(db, "pending_payment")
    await make_attempt(db, order)
    link = f"{live_server.url}/t/{tracking_page.token_for(order.order_no)}"
    context = await chromium.new_context(viewport=browser.VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    page = await context.new_page()
    # When the buyer opens the tracking page, in Chinese then in English
    await page.goto(link)
    # Then it says the status is being verified
    assert "状态核实中" in await page.locator("#verifying").inner_text()
    await browser.screenshot(page, "tracking-verifying")
    await page.goto(f"{link}?lang=en")
    assert await page.locator("#verifying").count() == 1
    await browser.screenshot(page, "tracking-verifying")
