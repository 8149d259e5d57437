"""The orders screen's search box over HTTP (both databases): orders created through the
service and indexed by the search consumer (drained as the worker would), then found by the
words cs types, with the screen's filters, keyset pages, why each matched, phones masked per
role, htmx partial updates and both languages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.orders.models import SalesOrder
from ordertally.web import pages
from tests.factories import make_order
from tests.search.helpers import index
from tests.web.conftest import SignedInClient

pytestmark = pytest.mark.anyio
_ORDER_ROW = re.compile(r'<tr data-order="([^"]+)">')
_NEXT = re.compile(r'href="([^"]+)" hx-get="[^"]+" [^>]*data-action="next-page"')
TABLE = {"HX-Request": "true", "HX-Target": "orders-table"}


def listed(html: str) -> list[str]:
    """Order numbers of a list page, in order."""
    return _ORDER_ROW.findall(html)


def why(html: str, order_no: str) -> list[tuple[str, str]]:
    """(term, field) of each explanation shown beside an order."""
    cell = re.search(rf'data-why="{order_no}">(.*?)</td>', html, re.S)
    assert cell, f"no explanation for {order_no}"
    return re.findall(r'data-field="([^"]+)"><mark>([^<]+)</mark>', cell.group(1))


@pytest.fixture
async def orders(db: Database) -> dict[str, SalesOrder]:
    """Three orders, indexed, a second apart (newest last):
    a: 张三 13812345678, paid; b: 李四 13900005678; c: 张三 13700001111."""
    made = {}
    for key, name, phone, status in (
        ("a", "张三", "13812345678", "paid"),
        ("b", "李四", "13900005678", "pending_payment"),
        ("c", "张三", "13700001111", "pending_payment"),
    ):
        made[key] = await make_order(db, status, customer={"name": name, "phone": phone})
        clock.advance(timedelta(seconds=1))
    await index(db)
    return made


async def test_cs_finds_an_order_by_name_and_last_four_with_why_it_matched(
    orders: dict[str, SalesOrder], signed_in: SignedInClient
) -> None:
    a, b, c = (orders[k].order_no for k in "abc")
    cs = await signed_in("cs")
    # Given three indexed orders / When cs types 张三 5678 in the search box
    page = await cs.get("/ui/orders", params={"q": "张三 5678"})
    # Then the one order with both comes first, with why it matched, its phone masked
    assert page.status_code == 200
    assert listed(page.text)[0] == a
    assert listed(page.text) == [a]
    assert why(page.text, a) == [("name", "张三"), ("phone_last4", "5678")]
    assert "138****5678" in page.text and "13812345678" not in page.text
    assert "匹配原因" in page.text and 'name="q" value="张三 5678"' in page.text
    # And the filters still apply, htmx getting the table alone
    unpaid = await cs.get(
        "/ui/orders", params={"q": "张三", "status": "pending_payment"}, headers=TABLE
    )
    assert unpaid.text.lstrip().startswith('<div id="orders-table">')
    assert listed(unpaid.text) == [c]
    assert listed((await cs.get("/ui/orders", params={"q": "张三", "channel": "jd"})).text) == []
    # And words that match nothing say so; no words list every order as before
    none = await cs.get("/ui/orders", params={"q": "李雷"})
    assert listed(none.text) == [] and "没有符合条件的订单" in none.text
    assert listed((await cs.get("/ui/orders", params={"q": "  "})).text) == [c, b, a]


async def test_a_role_that_may_not_see_the_phone_still_finds_by_the_last_four(
    orders: dict[str, SalesOrder], signed_in: SignedInClient
) -> None:
    a, b = orders["a"].order_no, orders["b"].order_no
    # Given finance, who may not reveal a contact
    finance = await signed_in("finance")
    # When it searches by the last four digits
    page = await finance.get("/ui/orders", params={"q": "5678"}, headers=TABLE)
    # Then it finds both orders, newest first, with masked phones only
    assert listed(page.text) == [b, a]
    assert "139****5678" in page.text and "138****5678" in page.text
    assert "13900005678" not in page.text and "13812345678" not in page.text
    # And a full phone it types finds the order, explained masked
    full = await finance.get("/ui/orders", params={"q": "13812345678"}, headers=TABLE)
    assert listed(full.text) == [a]
    assert why(full.text, a) == [("phone", "138****5678")]
    assert "13812345678" not in full.text
    # While cs, who may, sees the words it typed
    cs = await signed_in("cs")
    own = await cs.get("/ui/orders", params={"q": "13812345678"}, headers=TABLE)
    assert why(own.text, a) == [("phone", "13812345678")]


async def test_results_page_by_the_search_cursor_in_either_language(
    orders: dict[str, SalesOrder], signed_in: SignedInClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, c = orders["a"].order_no, orders["c"].order_no
    monkeypatch.setattr(pages, "PAGE_SIZE", 1)
    ops = await signed_in("ops")
    await ops.get("/ui/lang/en?next=/ui/orders")
    # Given one row a page / When ops pages through 张三's orders
    first = await ops.get("/ui/orders", params={"q": "张三"})
    link = _NEXT.search(first.text)
    assert link and "cursor=" in link.group(1)
    second = await ops.get(link.group(1).replace("&amp;", "&"))
    # Then the pages follow each other, newest first, in English
    assert (listed(first.text), listed(second.text)) == ([c], [a])
    assert _NEXT.search(second.text) is None
    assert "Why it matched" in first.text and "Name" in first.text
    # And a cursor the screen did not give starts over (bad input changes nothing)
    bad = await ops.get("/ui/orders", params={"q": "张三", "cursor": "nope"})
    assert bad.status_code == 200 and listed(bad.text) == [c]
