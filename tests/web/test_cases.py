"""The exception workbench page over HTTP (both databases) and in a real browser: finance
finds the double payment past its SLA among the cases, in Chinese, and opens its order."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.async_api import Browser

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.web import browser
from tests.web.browser import CasesList, LoginPage
from tests.web.conftest import SignedInClient
from tests.web.helpers import PASSWORD, make_user

pytestmark = pytest.mark.anyio
_ROW = re.compile(r'<tr data-case="(\d+)"')


async def _seed(db: Database) -> tuple[str, int, int]:
    """A double payment opened five hours ago (SLA 4 h: late) and a fresh stale tracking case:
    (order no, late case id, fresh case id)."""
    order = await make_order(db, "paid")
    with clock.frozen(clock.now() - timedelta(hours=5)):
        async with db.transaction() as session:
            late = await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="payment",
                type="double_payment",
                blocking=False,
                detail={},
            )
    async with db.transaction() as session:
        fresh = await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="fulfillment",
            type="tracking_stale",
            blocking=False,
            detail={},
        )
    return order.order_no, late, fresh


async def test_the_workbench_lists_filters_and_counts_cases(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a late double payment and a fresh stale tracking case
    order_no, late, fresh = await _seed(db)
    client = await signed_in("finance")
    # When finance opens the workbench, then filters to late cases
    page = await client.get("/ui/cases")
    only_late = await client.get("/ui/cases?breached=1", headers={"hx-target": "cases-table"})
    # Then both are listed newest first with their facets, and the filter keeps the late one
    assert page.status_code == 200
    assert _ROW.findall(page.text) == [str(fresh), str(late)]
    assert 'data-nav="cases"' in page.text
    assert 'data-facet="category:customer"' in page.text
    assert _ROW.findall(only_late.text) == [str(late)]
    assert "<html" not in only_late.text  # the table block alone
    assert f'href="/ui/orders/{order_no}"' in only_late.text


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_finance_finds_the_late_double_payment_and_opens_its_order(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    # Given a finance user and the two cases
    await make_user(db, "cai", "finance")
    order_no, late, fresh = await _seed(db)
    context = await chromium.new_context(viewport=browser.VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    page = await context.new_page()
    await LoginPage(page, live_server.url).open()
    await LoginPage(page, live_server.url).sign_in("cai", PASSWORD)
    # When she opens the workbench and keeps the open cases past their SLA
    cases = await CasesList(page, live_server.url).open()
    assert await cases.case_ids() == [fresh, late]
    await cases.filter_state("open")
    await cases.only_late()
    # Then the double payment alone is left, labelled in Chinese, and it leads to its order
    assert await cases.case_ids() == [late]
    row = await cases.row_text(late)
    assert "重复支付" in row and "客户侧" in row and "待处理" in row
    detail = await cases.open_order_of(late, order_no)
    assert await detail.status()
    await context.close()
