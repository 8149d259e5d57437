"""The operational screens in a real browser (Debian's Chromium through Playwright) against the
real server on PostgreSQL (one database keeps CI short; tests/web/test_screens.py covers both
over HTTP): finance approves a 补单 only as the second person, the warehouse ships a batch, each
role is refused on another's screens, a post without the CSRF token is refused, and every new
screen is photographed in both languages."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from ordertally.channels import consumers  # noqa: F401  (registers the consumer)
from ordertally.core import clock
from ordertally.core.db import Database
from tests.channels.helpers import make_account
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.fulfillment.helpers import split_paid_order
from tests.payments.helpers import make_attempt, order_state, paid_notice, store_and_apply
from tests.payments.test_reconcile import wechat_bill, wechat_row, yuan
from tests.web import browser
from tests.web.browser import FinancePage, LoginPage, OrderManualPayment, Screen, ShippingPage
from tests.web.helpers import PASSWORD, make_user

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]
AT = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


async def signed_in_page(chrome: Browser, base: str, username: str) -> Page:
    """A fresh browser (its own cookies) with `username` signed in."""
    context = await chrome.new_context(viewport=browser.VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    page = await context.new_page()
    await LoginPage(page, base).open()
    await LoginPage(page, base).sign_in(username, PASSWORD)
    return page


async def both_languages(page: Page, name: str) -> None:
    """Photograph the screen in Chinese, then in English, and switch back (only when
    screenshots are asked for: the English pages are checked over HTTP, in less time)."""
    if os.environ.get("ORDERTALLY_SCREENSHOTS") != "1":
        return
    await browser.screenshot(page, name)
    await Screen(page, "").switch_language("en")
    await browser.screenshot(page, name)
    await Screen(page, "").switch_language("zh_CN")


async def test_finance_approves_a_manual_payment_as_the_second_person_only(
    chromium: Browser, live_server: LiveServer, db: Database, tmp_path: Path
) -> None:
    base = live_server.url
    # Given an unpaid order and two finance users, each in their own browser
    order = await make_order(db, external_id="TB-8801", channel="taobao")
    await make_user(db, "wangfang", "finance")
    await make_user(db, "liqiang", "finance")
    first = await signed_in_page(chromium, base, "wangfang")
    second = await signed_in_page(chromium, base, "liqiang")
    # When the first records the buyer's bank transfer on the order's page
    form = await OrderManualPayment(first, base).open(order.order_no)
    await both_languages(first, "order-manual-payment")
    await form.record(
        "ICBC-20261122-0001", "159.70", clock.now().date().isoformat(), "买家银行转账，工单 4411"
    )
    finance = FinancePage(first, base)
    [manual_id] = await finance.pending()
    # And tries to approve it herself
    await finance.approve(manual_id)
    # Then she is refused with the reason, and the order is still unpaid
    assert "本人提交" in await finance.refusal(manual_id)
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    # When the second finance user approves it
    other = FinancePage(second, base)
    await other.open()
    await both_languages(second, "payments")
    await other.approve(manual_id)
    # Then the order is paid on the evidence and nothing awaits approval
    assert await other.pending() == []
    assert await order_state(db, order.order_no) == ("paid", 2)
    # And a statement upload shows each kind of result
    with clock.frozen(AT):
        paid = await make_order(db, external_id="WX-1")
        attempt = await make_attempt(db, paid)
        await store_and_apply(db, paid_notice(attempt, txn=f"T-{attempt.out_trade_no}"))
    bill = tmp_path / "wechat-bill.csv"
    bill.write_text(
        wechat_bill(
            [
                wechat_row(
                    attempt.out_trade_no,
                    f"T-{attempt.out_trade_no}",
                    "SUCCESS",
                    yuan(attempt.amount_minor),
                ),
                wechat_row("NOBODY-KNOWS-1", "4200PLATFORM2", "SUCCESS", "9.99"),
            ]
        ),
        encoding="utf-8",
    )
    counts = await other.reconcile("wechatpay", str(bill))
    assert counts == {
        "matched": "1",
        "platform_only": "1",
        "ordertally_only": "0",
        "amount_mismatch": "0",
        "status_mismatch": "0",
    }
    await browser.screenshot(second, "reconcile")
    # (the same upload in English, for its screenshot: a second run counts the same)
    await other.switch_language("en")
    assert (await other.reconcile("wechatpay", str(bill)))["platform_only"] == "1"
    await browser.screenshot(second, "reconcile")


async def test_the_warehouse_ships_a_batch_and_books_a_receipt(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given two orders planned into two parcels each and a warehouse user
    a = await split_paid_order(db)
    b = await split_paid_order(db)
    await make_user(db, "zhaolei", "warehouse")
    page = await signed_in_page(chromium, base, "zhaolei")
    # When the warehouse opens the inventory and books a receipt
    await page.goto(f"{base}/ui/inventory")
    await page.select_option("#receive select[name=warehouse]", "WH-B")
    await page.fill("#receive input[name=sku]", "B-ONLY")
    await page.fill("#receive input[name=quantity]", "48")
    await page.fill("#receive input[name=reason]", "供应商送货单 DN-778")
    await page.click("button[data-action=receive]")
    # Then the receipt is in the ledger
    assert await page.locator("#receipts tr[data-receipt]").count() >= 1
    assert "供应商送货单 DN-778" in await page.locator("#ledger").inner_text()
    await both_languages(page, "inventory")
    # When it ships a batch from its shipped list
    shipping = ShippingPage(page, base)
    await shipping.open()
    assert sorted(await shipping.waiting()) == sorted([a.order_no, b.order_no])
    await both_languages(page, "shipping")
    results = await shipping.ship(
        [
            (a.order_no, "zhongtong", "ZT7100000000001"),
            (a.order_no, "shunfeng", "SF1100000000002"),
            (b.order_no, "zhongtong", ""),
        ]
    )
    # Then each row has its result, and the first order has left
    assert results == [("2", "shipped"), ("3", "shipped"), ("4", "error")]
    assert (await order_state(db, a.order_no))[0] == "shipped"
    assert await shipping.waiting() == [b.order_no]
    await browser.screenshot(page, "shipping-results")
    # (the same list again in English: nothing leaves twice)
    await shipping.switch_language("en")
    again = await shipping.ship([(a.order_no, "zhongtong", "ZT7100000000001")])
    assert again == [("2", "unchanged")]
    await browser.screenshot(page, "shipping-results")


async def test_each_role_is_refused_on_another_roles_screens_and_csrf_is_checked(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given a user of each role, a channel account and an order paid and planned
    await make_account(db)
    order = await split_paid_order(db)
    new_case = f"/ui/aftersales/new?order={order.order_no}"
    refused = {
        "ops": ["/ui/payments", "/ui/users"],
        "cs": [
            *("/ui/payments", "/ui/shipping", "/ui/settings", "/ui/users", "/ui/rules/new"),
            "/ui/channels/import",
        ],
        "finance": ["/ui/shipping", "/ui/users", "/ui/rules", "/ui/rules/new", new_case],
        "warehouse": [
            *("/ui/payments", "/ui/channels", "/ui/settings", "/ui/users"),
            *("/ui/rules", "/ui/rules/new", "/ui/review"),
            *("/ui/exports", "/ui/analytics", new_case),
        ],
    }
    for role, paths in refused.items():
        await make_user(db, f"u-{role}", role)
        page = await signed_in_page(chromium, base, f"u-{role}")
        for path in paths:
            # When the role types another role's address / Then it is refused
            response = await page.goto(f"{base}{path}")
            assert response is not None and response.status == 403, (role, path)
            assert await page.locator("[data-refused=role]").count() == 1, (role, path)
        await page.context.close()
    # And an admin's screens, photographed
    await make_user(db, "admin", "admin")
    admin = await signed_in_page(chromium, base, "admin")
    for path, name in (
        (f"/ui/orders/{order.order_no}", "order-detail"),
        ("/ui/channels", "channels"),
        ("/ui/settings", "settings"),
    ):
        await admin.goto(f"{base}{path}")
        await both_languages(admin, name)
    # And a post with the session cookie but without the token is refused, changing nothing
    await admin.goto(f"{base}/ui/inventory?kind=receipt")
    before = await admin.locator("#ledger tr[data-movement]").count()
    response = await admin.request.post(
        f"{base}/ui/inventory/receipts",
        form={"warehouse": "WH-B", "sku": "B-ONLY", "quantity": "5"},
    )
    assert response.status == 403
    await admin.goto(f"{base}/ui/inventory?kind=receipt")
    assert await admin.locator("#ledger tr[data-movement]").count() == before
