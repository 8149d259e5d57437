"""The analytics screen's after-sales panel in a real browser (Debian's Chromium through
Playwright) against the real server on PostgreSQL (tests/analytics/test_aftersales.py covers
both databases over HTTP): ops reads the after-sales rate and refunds, then per
responsibility, in Chinese and in English (issue 19)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from ordertally.core.db import Database
from tests.analytics.test_aftersales import DAY, _cases
from tests.conftest import LiveServer
from tests.web.browser import AnalyticsPage
from tests.web.helpers import make_user
from tests.web.test_browser_screens import both_languages, signed_in_page

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]


class AftersalesPanel(AnalyticsPage):
    """分析 → 售后: the after-sales KPIs, the table per SKU / channel / responsibility / type,
    and the after-sales stages."""

    async def figure(self, name: str) -> str:
        return (await self.page.locator(f"[data-as-kpi={name}]").inner_text()).strip()

    async def show_per(self, value: str) -> None:
        """Pick what the after-sales table is per, and show it."""
        await self.page.select_option("select[data-filter=as_by]", value)
        await self.page.click("button[data-action=show-aftersales]")
        await self.page.wait_for_load_state()

    async def rows(self) -> dict[str, tuple[str, str, str]]:
        """value -> (cases, after-sales rate, refunded) of the after-sales table."""
        found = await self.page.locator("#aftersale-kpis tr[data-as-key]").evaluate_all(
            """rows => rows.map(r => [r.dataset.asKey,
                r.querySelector('[data-as=cases]').innerText.trim(),
                r.querySelector('[data-as=case_rate]').innerText.trim(),
                r.querySelector('[data-as=refunds]').innerText.trim()])"""
        )
        return {k: (n, rate, refunds) for k, n, rate, refunds in found}

    async def stages(self) -> list[str]:
        found = await self.page.locator("#aftersale-stages tr[data-as-stage]").evaluate_all(
            "rows => rows.map(r => r.dataset.asStage)"
        )
        return [str(s) for s in found]


async def test_ops_reads_the_after_sales_rate_and_refunds_per_responsibility(
    chromium: Browser,
    live_server: LiveServer,
    db: Database,
) -> None:
    base = live_server.url
    # Given six orders shipped on one day and four after-sales cases on them (refunds of
    # 10.00, 119.80 and 33.33 confirmed), and an ops user
    await _cases(db)
    await make_user(db, "liming", "ops")
    page = await signed_in_page(chromium, base, "liming")
    # When ops opens the analytics for that day
    screen = await AftersalesPanel(page, base).open(DAY, DAY, "channel")
    # Then the after-sales panel says 4 cases over 6 orders shipped, and what was refunded
    await expect(page.locator("#aftersales-panel header")).to_contain_text("售后")
    assert await screen.figure("cases") == "4"
    assert await screen.figure("case_rate") == "66.7%"
    assert await screen.figure("refunds") == "163.13 CNY"
    # per SKU by default: the 33.33 split over a tea and a cup
    per_sku = await screen.rows()
    assert per_sku["TEA-LJ-250"][2] == "136.47 CNY" and per_sku["CUP-CER-01"][2] == "16.66 CNY"
    assert await screen.stages() == [
        "as_requested_to_decided",
        "as_approved_to_returned",
        "as_returned_to_inspected",
        "as_returned_to_refunded",
        "as_requested_to_resolved",
        "as_requested_to_closed",
    ]
    # When ops shows it per responsibility
    await screen.show_per("responsibility")
    # Then the carrier's case (119.80) and the merchant's (10.00) are apart, each 1 of 6
    rows = await screen.rows()
    assert rows["carrier"] == ("1", "16.7%", "119.80 CNY")
    assert rows["merchant"] == ("1", "16.7%", "10.00 CNY")
    assert rows[""][0] == "2"  # not yet attributed
    await expect(page.locator("#aftersale-kpis tr[data-as-key=carrier] td").first).to_have_text(
        "快递公司"
    )
    # And in English the same panel speaks English
    await screen.switch_language("en")
    await expect(page.locator("#aftersales-panel header")).to_contain_text("After-sales")
    await expect(page.locator("#aftersale-kpis tr[data-as-key=carrier] td").first).to_have_text(
        "Carrier"
    )
    await screen.switch_language("zh_CN")
    await both_languages(page, "analytics-aftersales")
