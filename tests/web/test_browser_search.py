"""The orders screen's search box in a real browser (Debian's Chromium through Playwright)
against the real server, on PostgreSQL: cs types a name and the last four digits of a phone,
htmx swaps the results in, and cs opens the order found."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from ordertally.core.db import Database
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.search.helpers import index
from tests.web import browser
from tests.web.browser import LoginPage, OrdersList
from tests.web.helpers import PASSWORD, make_user

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]


async def test_cs_finds_an_order_by_name_and_last_four_and_opens_it(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given cs and three orders, indexed by the search consumer
    await make_user(db, "zhangwei", "cs")
    wanted = await make_order(db, customer={"name": "张三", "phone": "13812345678"})
    await make_order(db, customer={"name": "李四", "phone": "13900005678"})
    await make_order(db, customer={"name": "张三", "phone": "13700001111"})
    await index(db)
    context = await chromium.new_context(viewport=browser.VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    page = await context.new_page()
    await (await LoginPage(page, base).open()).sign_in("zhangwei", PASSWORD)
    orders = await OrdersList(page, base).open()
    assert len(await orders.order_numbers()) == 3
    # When cs types 张三 5678 in the search box
    await orders.search("张三 5678")
    # Then htmx shows the one order with both, why it matched, and puts the words in the URL
    # (the form's change and the box's input may each ask: wait for the table to settle)
    await expect(page.locator("tr[data-order]")).to_have_count(1)
    assert await orders.order_numbers() == [wanted.order_no]
    assert await orders.why(wanted.order_no) == ["name", "phone_last4"]
    assert "q=" in page.url
    await browser.screenshot(page, "orders-search")
    # And cs opens its detail
    detail = await orders.open_order(wanted.order_no)
    assert await detail.status() == "pending_payment"
