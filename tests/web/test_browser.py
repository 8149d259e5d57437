"""The back office in a real browser (Debian's Chromium through Playwright) against the real
server on a real port, on SQLite: the tasks people do, read as they do them."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Request

from ordertally.casework import batch as casework_batch
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.service import Who
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.web import browser
from tests.web.browser import Dashboard, LoginPage, OrdersList, UsersPage
from tests.web.helpers import PASSWORD, make_user

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def _collect(into: list[Request]) -> Callable[[Request], None]:
    """A request listener adding each request to `into`."""

    def add(request: Request) -> None:
        into.append(request)

    return add


async def new_page(chrome: Browser) -> Page:
    context = await chrome.new_context(viewport=browser.VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    return await context.new_page()


async def test_an_admin_adds_cs_who_finds_an_order_and_cancels_it(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given an admin, an unpaid order among others, and a paid one
    await make_user(db, "admin", "admin")
    unpaid = await make_order(db, external_id="TB-1001", channel="taobao")
    await make_order(db, "paid", external_id="JD-2002", channel="jd")
    await make_order(db, "shipped", external_id="DY-3003", channel="douyin")
    # (and a day's worth of others, so the screens look like a working day)
    others = [
        ("paid", "pinduoduo"),
        ("allocated", "jd"),
        ("fulfilling", "wechat_mini"),
        ("shipped", "taobao"),
        ("delivered", "shopify"),
        ("completed", "douyin"),
        ("refunded", "amazon"),
        ("closed", "taobao"),
    ]
    for i, (status, channel) in enumerate(others):
        await make_order(db, status, external_id=f"X-{i}", channel=channel)
    held = await make_order(db, "paid", external_id="HOLD-1", channel="douyin")
    async with db.transaction() as session:
        await exceptions_service.open_case(
            session,
            order_id=held.id,
            category="order",
            type="address_check",
            blocking=True,
            detail={"why": "收货地址缺少门牌号"},
        )
    page = await new_page(chromium)

    # An admin signs in and creates a cs user
    login = await LoginPage(page, base).open()
    await browser.screenshot(page, "login")
    dashboard = await login.sign_in("admin", PASSWORD)
    await dashboard.chart_drawn()
    assert await dashboard.nav_keys() == [
        "dashboard",
        "orders",
        "payments",
        "inventory",
        "channels",
        "cases",
        "review",
        "rules",
        "aftersales",
        "exports",
        "analytics",
        "users",
        "settings",
    ]
    users = UsersPage(page, base)
    await users.open()
    await users.create("zhangwei", "cs", "cs-password-2026")
    await browser.screenshot(page, "users")
    await users.sign_out()

    # cs signs in, finds the unpaid order in the list and opens it
    dashboard = await LoginPage(page, base).sign_in("zhangwei", "cs-password-2026")
    assert await dashboard.nav_keys() == [
        "dashboard",
        "orders",
        "inventory",
        "channels",
        "cases",
        "review",
        "rules",
        "aftersales",
        "exports",
        "analytics",
    ]
    await dashboard.chart_drawn()
    await browser.screenshot(page, "dashboard")
    orders = await OrdersList(page, base).open()
    assert len(await orders.order_numbers()) == 12
    await orders.filter_status("pending_payment")
    assert await orders.order_numbers() == [unpaid.order_no]
    assert "status=pending_payment" in page.url  # htmx pushed the filter into the URL
    await browser.screenshot(page, "orders")
    detail = await orders.open_order(unpaid.order_no)
    assert await detail.status() == "pending_payment"
    assert await detail.highlighted_node() == "pending_payment"
    await browser.screenshot(page, "order")

    # cs cancels it
    await detail.cancel("买家不想要了")
    assert await detail.highlighted_node() == "closed"
    assert await page.locator("[data-event=cancel]").inner_text() != ""

    # The English switch shows English labels, on every screen
    await detail.switch_language("en")
    assert await page.locator("html").get_attribute("lang") == "en"
    assert await page.locator("[data-status]").inner_text() == "Closed"
    await browser.screenshot(page, "order")
    await OrdersList(page, base).open()
    assert await page.locator("h1").inner_text() == "Orders"
    await browser.screenshot(page, "orders")
    await page.goto(f"{base}/ui/")
    await Dashboard(page, base).chart_drawn()
    assert await page.locator("h1").inner_text() == "Operations dashboard"
    await browser.screenshot(page, "dashboard")
    await dashboard.sign_out()
    await browser.screenshot(page, "login")
    await LoginPage(page, base).sign_in("admin", PASSWORD)
    await UsersPage(page, base).open()
    assert await page.locator("h1").inner_text() == "Users"
    await browser.screenshot(page, "users")


async def test_a_real_post_without_the_csrf_token_is_refused(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given cs signed in, looking at an unpaid order
    await make_user(db, "zhangwei", "cs")
    order = await make_order(db)
    page = await new_page(chromium)
    await LoginPage(page, base).open()
    await LoginPage(page, base).sign_in("zhangwei", PASSWORD)
    await page.goto(f"{base}/ui/orders/{order.order_no}")
    # When the browser posts the cancel with its session cookie but without the token
    response = await page.request.post(
        f"{base}/ui/orders/{order.order_no}/cancel", form={"reason": "forged"}
    )
    # Then the server refuses it and the order is still unpaid
    assert response.status == 403
    await page.reload()
    assert await page.locator("[data-status]").get_attribute("data-status") == "pending_payment"


async def test_each_role_is_refused_on_the_admins_page(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    for role in ("ops", "cs", "finance", "warehouse"):
        # Given a user of a role other than admin, in their own browser
        await make_user(db, f"u-{role}", role)
        page = await new_page(chromium)
        await LoginPage(page, base).open()
        dashboard = await LoginPage(page, base).sign_in(f"u-{role}", PASSWORD)
        # Then the users entry is not offered, and typing its address is refused
        assert "users" not in await dashboard.nav_keys(), role
        response = await UsersPage(page, base).open()
        assert response is not None and response.status == 403, role
        assert await page.locator("[data-refused=role]").count() == 1, role
        await page.context.close()


async def test_every_page_loads_from_this_host_alone_within_the_budget(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given an admin, an order and a case on it
    await make_user(db, "admin", "admin")
    order = await make_order(db)
    async with db.transaction() as session:
        case_id = await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="payment",
            type="double_payment",
            blocking=False,
            detail={},
        )
        batch_id, _, _ = await casework_batch.create(
            session,
            "resolve_cases",
            "cases",
            {"type": "double_payment"},
            {"case_type": "double_payment", "code": "fixed", "note": "tests"},
            Who("tests"),
        )
    page = await new_page(chromium)
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    await LoginPage(page, base).open()
    await LoginPage(page, base).sign_in("admin", PASSWORD)
    # When every screen is opened in a fresh cache
    screens = ("/ui/", "/ui/orders", f"/ui/orders/{order.order_no}", "/ui/users")
    screens += ("/ui/payments", "/ui/inventory", "/ui/shipping", "/ui/channels", "/ui/settings")
    screens += ("/ui/aftersales", "/ui/exports", "/ui/analytics")
    screens += ("/ui/cases", f"/ui/cases/{case_id}", "/ui/rules", "/ui/rules/new", "/ui/review")
    screens += (f"/ui/batches/{batch_id}", "/ui/channels/import")
    screens += ("/ui/inventory/reservations", "/ui/inventory/allocation")
    screens += ("/ui/inventory/purchase-plans", "/ui/settings/sla", "/ui/settings/carriers")
    for path in screens:
        await page.goto(f"{base}{path}")
        await page.wait_for_load_state("networkidle")
    # Then no request left this host
    origin = urlsplit(base).netloc
    assert seen
    assert {urlsplit(r.url).netloc for r in seen} == {origin}
    # And every screen's first load of assets (a new browser context: empty cache, the same
    # session) stays within 300 KB on the wire; the dashboard, with its charts, is the heaviest
    state = await page.context.storage_state()
    for path in screens:
        context = await chromium.new_context(storage_state=state)  # type: ignore[arg-type]
        fresh = await context.new_page()
        assets: list[Request] = []
        fresh.on("requestfinished", _collect(assets))
        await fresh.goto(f"{base}{path}")
        await fresh.wait_for_load_state("networkidle")
        static = [r for r in assets if "/ui/static/" in r.url]
        wire = 0
        for request in static:
            sizes = await request.sizes()
            wire += sizes["responseBodySize"]
        # the two chart screens load ECharts and their script besides the four of every page
        assert len(static) == (6 if path in ("/ui/", "/ui/analytics") else 4), path
        assert wire <= 300 * 1024, (path, wire)
        await context.close()
