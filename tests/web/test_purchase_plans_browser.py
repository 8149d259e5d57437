"""Ops in a real browser on the purchase plans screen (PostgreSQL, like the other browser
flows): a SKU in red alert, a receipt planned for it from the form, a CSV previewed (a row
refused with its reason) and confirmed, a plan deleted after the confirmation; in Chinese and
in English, nothing loaded from another host. Photographed in both languages when screenshots
are asked for."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Request, expect

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory import service as inventory_service
from tests.conftest import TEST_WAREHOUSE, LiveServer
from tests.web import browser
from tests.web.browser import Screen
from tests.web.helpers import make_user
from tests.web.test_browser_screens import both_languages, signed_in_page

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]


def day(offset: int) -> str:
    return (clock.now().date() + timedelta(days=offset)).isoformat()


PLAN_FILE = (
    "sku,warehouse,expected_date,quantity,reference\n"
    f"K2,{TEST_WAREHOUSE},{day(2)},50,PO-20261205-2\n"
    f"K3,{TEST_WAREHOUSE},{day(2)},0,PO-20261205-3\n"
)


class PurchasePlans(Screen):
    """The purchase plans screen (采购计划)."""

    async def open_from_inventory(self) -> PurchasePlans:
        await self.page.goto(f"{self.base}/ui/inventory")
        await self.page.click("a[data-link=purchase-plans]")
        await expect(self.page).to_have_url(re.compile(r"/ui/inventory/purchase-plans"))
        return self

    async def cover_state(self, sku: str) -> str | None:
        """The stock alert's state of a SKU in the test warehouse."""
        row = self.page.locator(f"tr[data-cover='{sku}@{TEST_WAREHOUSE}']")
        return await row.get_attribute("data-state") if await row.count() else None

    async def plan(self, sku: str, expected: str, quantity: int, reference: str) -> None:
        """Fill the add form and save."""
        form = self.page.locator("form[data-form=add-plan]")
        await form.locator("select[name=warehouse]").select_option(TEST_WAREHOUSE)
        await form.locator("input[name=sku]").fill(sku)
        await form.locator("input[name=expected_date]").fill(expected)
        await form.locator("input[name=quantity]").fill(str(quantity))
        await form.locator("input[name=reference]").fill(reference)
        await form.locator("button[data-action=add-plan]").click()
        await self.page.wait_for_load_state()

    async def planned_skus(self) -> list[str]:
        return await self.page.locator("tr[data-plan]").evaluate_all(
            "rows => rows.map(r => r.dataset.planSku)"
        )

    async def preview_file(self, name: str, content: str) -> None:
        """Choose a CSV file and ask for the preview."""
        await self.page.set_input_files(
            "form[data-form=import-plans] input[name=file]",
            files=[{"name": name, "mimeType": "text/csv", "buffer": content.encode()}],
        )
        await self.page.click("button[data-action=preview-import]")
        await self.page.wait_for_load_state()

    async def delete(self, sku: str) -> None:
        """Delete the plan of a SKU, through the confirmation."""
        await self.page.click(f"tr[data-plan-sku='{sku}'] a[data-action=delete]")
        await expect(self.page.locator("#confirm-delete")).to_be_visible()
        await self.page.click("button[data-action=confirm-delete]")
        await self.page.wait_for_load_state()


async def test_ops_plans_a_receipt_for_a_sku_in_red_alert(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given K1 and K2 below their safety stock with nothing planned, and ops signed in
    async with db.transaction() as session:
        for sku in ("K1", "K2"):
            await inventory_service.record_movement(
                session,
                warehouse_code=TEST_WAREHOUSE,
                sku=sku,
                kind="receipt",
                quantity=3,
                reason="test",
                actor="tests",
            )
            await inventory_service.configure_stock(
                session, warehouse_code=TEST_WAREHOUSE, sku=sku, safety_stock=20, buckets=None
            )
    await make_user(db, "wangfang", "ops")
    page: Page = await signed_in_page(chromium, base, "wangfang")
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    # When ops opens the purchase plans from the inventory
    screen = await PurchasePlans(page, base).open_from_inventory()
    # Then K1 is in red alert, in Chinese
    assert await screen.cover_state("K1") == "red"
    await expect(page.locator("h1")).to_have_text("采购计划")
    # When ops plans a receipt of K1 in 3 days
    await screen.plan("K1", day(3), 100, "PO-20261205-1")
    # Then the plan is listed and K1 is covered
    assert await screen.planned_skus() == ["K1"]
    assert await screen.cover_state("K1") == "covered"
    assert await screen.cover_state("K2") == "red"
    await both_languages(page, "purchase-plans")
    # When ops previews a file with a good row and a bad one, in English
    await screen.switch_language("en")
    await expect(page.locator("h1")).to_have_text("Purchase plans")
    await screen.preview_file("plans.csv", PLAN_FILE)
    # Then the preview keeps the bad row out, with its reason
    await expect(page.locator("[data-preview=accepted]")).to_have_text("1")
    reason = page.locator("tr[data-rejected-line='3'] [data-reason]")
    await expect(reason).to_have_text("The quantity must be a whole number from 1 to 10,000,000.")
    await browser.screenshot(page, "purchase-plans-import")
    # And in Chinese, the same
    await screen.switch_language("zh_CN")
    await screen.preview_file("plans.csv", PLAN_FILE)
    await expect(reason).to_have_text("数量须为 1 到 10,000,000 之间的整数。")
    await browser.screenshot(page, "purchase-plans-import")
    # When ops confirms
    await page.click("button[data-action=confirm-import]")
    await page.wait_for_load_state()
    # Then K2 is planned and covered too
    await expect(page.locator("[data-plans-flash=imported]")).to_be_visible()
    assert await screen.planned_skus() == ["K2", "K1"]
    assert await screen.cover_state("K2") == "covered"
    # When ops deletes K1's plan
    await screen.delete("K1")
    # Then K1 is in red alert again, and the trail shows the deletion first
    assert await screen.planned_skus() == ["K2"]
    assert await screen.cover_state("K1") == "red"
    first = page.locator("#plan-history tr[data-plan-event]").first
    assert await first.get_attribute("data-plan-event") == "deleted"
    # And nothing was loaded from another host
    assert {urlsplit(r.url).netloc for r in seen} == {urlsplit(base).netloc}
