"""After-sales, exports and analytics in a real browser (Debian's Chromium through Playwright)
against the real server on PostgreSQL (tests/web/test_aftersales_screens.py and
test_exports_analytics_screens.py cover both databases over HTTP): cs opens a return and
refund from the order, the warehouse records the parcel and the inspection, finance refunds
through the local payment simulator and the order shows partially refunded; finance exports
orders as XLSX and the downloaded file's digest is the manifest's; the analytics screen draws
its charts. Every new screen is photographed in both languages (ORDERTALLY_SCREENSHOTS=1)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from ordertally.aftersales import refunds
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.exports import service as exports_service
from tests.aftersales.conftest import (  # noqa: F401  (the payment simulator's fixtures)
    _no_auto_allocation,
    platform,
    sim_server,
)
from tests.aftersales.helpers import case_status, on_hand_and_ledger, order_status, paid_order
from tests.analytics.test_timeliness import _walk
from tests.conftest import TEST_WAREHOUSE, LiveServer
from tests.factories import make_order
from tests.web.browser import (
    AftersaleCasePage,
    AftersalesQueue,
    AnalyticsPage,
    ExportsPage,
    NewAftersale,
    OrderDetail,
)
from tests.web.helpers import make_user
from tests.web.test_browser_screens import both_languages, signed_in_page

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]
T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


async def test_cs_opens_a_return_the_warehouse_inspects_it_and_finance_refunds_it(
    chromium: Browser,
    platform: httpx.AsyncClient,  # noqa: F811
    live_server: LiveServer,
    db: Database,
) -> None:
    base = live_server.url
    # Given a shipped order paid through WeChat Pay (the simulator holds the trade), and a
    # customer-service agent, a warehouse clerk and a finance user, each in their own browser
    order, _ = await paid_order(db, platform)
    await make_user(db, "chenjing", "cs")
    await make_user(db, "zhaolei", "warehouse")
    await make_user(db, "wangfang", "finance")
    cs = await signed_in_page(chromium, base, "chenjing")
    clerk = await signed_in_page(chromium, base, "zhaolei")
    finance = await signed_in_page(chromium, base, "wangfang")
    stock_before = await on_hand_and_ledger(db, "TEA-LJ-250")
    # When cs opens a return and refund of one tin of tea from the order's page
    form = await NewAftersale(cs, base).from_order(order.order_no)
    await both_languages(cs, "aftersale-new")
    case = await form.open_return_and_refund(
        "damaged", {1: 1}, "59.90", ["IMG-20261122-01", "MSG-88"]
    )
    case_no = await case.case_no()
    assert await case.status() == "requested"
    # Then the case page names the reason and the product in the reader's language
    assert await case.reason() == ("商品损坏", "damaged")
    assert await case.products() == [("测试商品 TEA-LJ-250", "TEA-LJ-250")]
    await case.switch_language("en")
    assert await case.reason() == ("Damaged", "damaged")
    assert await case.products() == [("Test item TEA-LJ-250", "TEA-LJ-250")]
    await case.switch_language("zh_CN")
    # And approves it, the carrier responsible (the box was crushed in transit)
    await case.approve("carrier")
    assert await case.status() == "awaiting_return"
    # Then the queue shows it among the returns
    queue = await AftersalesQueue(cs, base).open()
    await queue.filter_type("return_refund")
    assert await queue.case_numbers() == [case_no]
    await both_languages(cs, "aftersales")
    # When the warehouse records the parcel and inspects the tin as good
    at_dock = await AftersaleCasePage(clerk, base).open(case_no)
    assert await at_dock.steps_offered() == ["receive-return"]
    await at_dock.record_return(TEST_WAREHOUSE, "zhongtong", "ZT7300000000001")
    assert await at_dock.status() == "returned"
    await at_dock.inspect(TEST_WAREHOUSE, good={1: 1}, damaged={})
    # Then the case is inspected and the tin is back on hand, through the ledger
    assert await at_dock.status() == "inspected"
    assert await at_dock.line(1) == {"received": "1", "restocked": "1", "written-off": "0"}
    on_hand, ledger = await on_hand_and_ledger(db, "TEA-LJ-250")
    assert (on_hand - stock_before[0], ledger - stock_before[1]) == (1, 1)
    # When finance refunds it
    desk = await AftersaleCasePage(finance, base).open(case_no)
    assert "refund" in await desk.steps_offered()
    await desk.refund()
    assert await desk.refund_states() == ["pending"]
    # And the refund job sends it to the simulator and confirms it by query
    assert await refunds.send_due(db, clock.now()) == {"claimed": 1, "sent": 1}
    assert await refunds.send_due(db, clock.now()) == {"claimed": 1, "succeeded": 1}
    # Then the page, polling, shows the provider's confirmation
    await expect(finance.locator("tr[data-refund]")).to_have_attribute(
        "data-refund-state", "succeeded", timeout=10_000
    )
    assert await case_status(db, case_no) == "refunded"
    await desk.open(case_no)
    assert await desk.history() == [
        "request",
        "approve",
        "await_return",
        "receive",
        "inspect",
        "refund",
    ]
    await both_languages(finance, "aftersale-case")
    # And the order shows partially refunded
    await finance.goto(f"{base}/ui/orders/{order.order_no}")
    assert await OrderDetail(finance, base).status() == "partially_refunded"
    assert await order_status(db, order.order_no) == "partially_refunded"
    assert await finance.locator(f"tr[data-aftersale='{case_no}']").count() == 1


async def test_finance_exports_orders_as_xlsx_and_the_download_matches_its_manifest(
    chromium: Browser,
    live_server: LiveServer,
    db: Database,
    tmp_path: Path,
) -> None:
    base = live_server.url
    # Given four paid orders and one unpaid, and finance signed in
    for _ in range(4):
        await make_order(db, "paid")
    await make_order(db)
    await make_user(db, "wangfang", "finance")
    page = await signed_in_page(chromium, base, "wangfang")
    # When finance starts an XLSX export of the paid orders
    exports = await ExportsPage(page, base).open()
    await both_languages(page, "exports")
    export_no = await exports.start("orders", "xlsx", {"status": "paid"})
    assert await exports.state() == "queued"
    # And the worker runs it while the page polls
    assert await exports_service.run_queued(db) == 1
    await exports.wait_until_done()
    # Then the manifest counts the four paid orders
    assert await exports.manifest("row_count") == "4"
    # And the downloaded file's SHA-256 is the manifest's, as stored in the export audit
    saved = await exports.download(tmp_path)
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert digest == await exports.manifest("file_sha256")
    async with db.transaction(write=False) as session:
        audit = await exports_service.get_export(session, export_no)
    assert audit.manifest is not None and audit.manifest["file_sha256"] == digest
    assert (audit.actor_id, audit.role, audit.format) == ("user:wangfang", "finance", "xlsx")
    await both_languages(page, "export-done")


async def test_the_analytics_screen_draws_the_stage_table_and_kpis(
    chromium: Browser,
    live_server: LiveServer,
    db: Database,
) -> None:
    base = live_server.url
    # Given orders of two channels created on 2026-11-10 and walked to shipped
    for paid_after, channel in ((0.5, "jd"), (2.0, "douyin"), (1.0, "taobao")):
        with clock.frozen(T0):
            order = await make_order(db, channel=channel)
        t = T0 + timedelta(hours=paid_after)
        await _walk(
            db,
            order.order_no,
            [
                ("payment_succeeded", t),
                ("allocate", t + timedelta(hours=1)),
                ("start_fulfillment", t + timedelta(hours=2)),
                ("ship", t + timedelta(hours=6)),
            ],
        )
    await drain(db, get_settings())
    await make_user(db, "liming", "ops")
    page = await signed_in_page(chromium, base, "liming")
    # When ops opens the analytics for that day, per channel
    screen = await AnalyticsPage(page, base).open("2026-11-10", "2026-11-10", "channel")
    # Then both charts are drawn and the figures are the domain's
    await screen.charts_drawn()
    assert await screen.kpi("orders") == "3"
    assert await screen.kpi("ship_p50") == "6.0"
    rows = await screen.stage_rows()
    assert ("pending_to_paid", "douyin") in rows and ("ship_time", "taobao") in rows
    await both_languages(page, "analytics")
