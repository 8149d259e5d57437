"""The back office's pages over HTTP (both databases): dashboard figures and their links, the
orders list with filters and keyset pages, an order's detail and its actions, CSRF refusals,
roles, the language switch."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.state_machine import STATUSES
from ordertally.web import dashboard, pages
from tests.factories import make_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of

pytestmark = pytest.mark.anyio
_ORDER_ROW = re.compile(r'<tr data-order="([^"]+)">')


def listed(html: str) -> list[str]:
    """Order numbers of a list page, in order."""
    return _ORDER_ROW.findall(html)


async def status_of(db: Database, order_no: str) -> str:
    async with db.transaction(write=False) as session:
        return (await orders_service.get_order(session, order_no)).status


async def events_of(db: Database, order_no: str) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        return [(e.event, e.actor_id) for e in await orders_service.events_of(session, order_no)]


async def test_the_dashboard_counts_and_links_to_the_orders_behind_each_number(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given three unpaid orders, one paid, and one allocated order created five hours ago
    old = await make_order(db, "allocated", external_id="OLD-1", channel="jd")
    async with db.transaction() as session:
        figures_before = await dashboard.figures(session)
    clock.advance(timedelta(hours=5))
    fresh = [await make_order(db, external_id=f"N-{i}") for i in range(3)]
    paid = await make_order(db, "paid", external_id="P-1")
    client = await signed_in("ops")
    # When ops opens the dashboard
    page = await client.get("/ui/")
    # Then the figures are exact
    assert page.status_code == 200
    async with db.transaction(write=False) as session:
        figures = await dashboard.figures(session)
    assert figures_before.last_hour == 1
    assert figures.last_hour == 4  # the allocated order is five hours old
    assert figures.created_24h == 5 and figures.paid_24h == 2
    assert figures.stuck == {
        "pending_payment": 0,
        "paid": 0,
        "allocated": 1,
        "fulfilling": 0,
        "shipped": 0,
    }
    assert "40.0%" in page.text  # 2 of 5 paid
    # And each number opens the list of exactly those orders
    stuck_link = re.search(r'href="([^"]+)" data-figure="stuck_allocated"', page.text)
    hour_link = re.search(r'href="([^"]+)" data-figure="orders_per_minute"', page.text)
    assert stuck_link and hour_link
    stuck_list = await client.get(stuck_link.group(1).replace("&amp;", "&"))
    hour_list = await client.get(hour_link.group(1).replace("&amp;", "&"))
    assert listed(stuck_list.text) == [old.order_no]
    assert sorted(listed(hour_list.text)) == sorted([o.order_no for o in [*fresh, paid]])
    # And the htmx refresh returns the figures block alone, carrying the chart's data
    block = await client.get("/ui/dashboard/figures", headers={"HX-Request": "true"})
    assert block.text.lstrip().startswith('<section id="figures"')
    assert '"counts":[' in block.text and "<html" not in block.text


async def test_the_orders_list_filters_and_pages_by_keyset(
    signed_in: SignedInClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five orders on two channels, one of them paid
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    made = []
    for i in range(4):
        made.append(await make_order(db, external_id=f"W-{i}"))
        clock.advance(timedelta(seconds=1))
    jd = await make_order(db, "paid", channel="jd", external_id="JD-1")
    client = await signed_in("cs")
    # When cs pages through every order
    first = await client.get("/ui/orders")
    next_link = re.search(r'href="([^"]+)" hx-get="[^"]+" hx-target="#orders-table"', first.text)
    assert next_link
    second = await client.get(next_link.group(1).replace("&amp;", "&"))
    # Then the pages follow each other, newest first, without overlap
    newest_first = [jd.order_no, *(o.order_no for o in reversed(made))]
    assert listed(first.text) == newest_first[:2]
    assert listed(second.text) == newest_first[2:4]
    # And filters narrow the list; htmx gets the table alone
    by_status = await client.get(
        "/ui/orders?status=paid", headers={"HX-Request": "true", "HX-Target": "orders-table"}
    )
    assert listed(by_status.text) == [jd.order_no]
    assert by_status.text.lstrip().startswith('<div id="orders-table">')
    by_channel = await client.get("/ui/orders?channel=wechat_mini&status=pending_payment")
    assert listed(by_channel.text) == newest_first[1:3]
    tomorrow = (clock.now() + timedelta(days=2)).date().isoformat()
    future = await client.get(f"/ui/orders?created_from={tomorrow}")
    assert listed(future.text) == []
    assert "没有符合条件的订单" in future.text
    assert len(listed((await client.get(f"/ui/orders?created_to={tomorrow}")).text)) == 2


async def test_an_order_page_shows_amounts_diagram_trail_and_the_actions_allowed(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order
    order = await make_order(db)
    cs = await signed_in("cs")
    warehouse = await signed_in("warehouse")
    # When cs opens it
    page = await cs.get(f"/ui/orders/{order.order_no}")
    # Then the amounts are in yuan with two digits, the current state is highlighted
    assert page.status_code == 200
    assert "¥159.70" in page.text  # 2 x 59.90 + 39.90
    assert 'class="node current" data-node="pending_payment"' in page.text
    assert page.text.count('class="node"') == len(STATUSES) - 1
    # And the audit trail and the cancel action are there
    assert 'data-event="create"' in page.text
    assert 'data-action="cancel"' in page.text
    # And the warehouse sees neither the cancel action nor the audit trail
    seen = await warehouse.get(f"/ui/orders/{order.order_no}")
    assert seen.status_code == 200
    assert 'data-action="cancel"' not in seen.text
    assert 'data-event="create"' not in seen.text
    # And an unknown order is a 404 page
    missing = await cs.get("/ui/orders/OT000")
    assert missing.status_code == 404
    assert "没有订单 OT000" in missing.text


async def test_cs_cancels_an_unpaid_order_with_the_token(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order on cs's screen
    order = await make_order(db)
    cs = await signed_in("cs")
    page = await cs.get(f"/ui/orders/{order.order_no}")
    # When cs cancels it with the page's token
    response = await cs.post(
        f"/ui/orders/{order.order_no}/cancel",
        data={"csrf_token": csrf_of(page.text), "reason": "买家要求"},
    )
    # Then the order is closed by this user, and the page says so
    assert response.status_code == 303
    assert await status_of(db, order.order_no) == "closed"
    assert await events_of(db, order.order_no) == [("create", "factory"), ("cancel", "user:cs-1")]
    after = await cs.get(response.headers["location"])
    assert "订单已取消" in after.text and 'data-action="cancel"' not in after.text


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order and a signed-in cs user
    order = await make_order(db)
    cs = await signed_in("cs")
    # When a cancel arrives with the session cookie but without the token, or a wrong one
    bare = await cs.post(f"/ui/orders/{order.order_no}/cancel", data={"reason": "x"})
    wrong = await cs.post(
        f"/ui/orders/{order.order_no}/cancel",
        data={"reason": "x"},
        headers={"X-CSRF-Token": "not-the-token"},
    )
    # Then both are refused and the order is untouched
    assert bare.status_code == 403 and wrong.status_code == 403
    assert 'data-refused="csrf"' in bare.text
    assert await status_of(db, order.order_no) == "pending_payment"
    assert await events_of(db, order.order_no) == [("create", "factory")]


async def test_roles_without_the_permission_cannot_cancel(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order and a finance user with a valid token
    order = await make_order(db)
    finance = await signed_in("finance")
    token = csrf_of((await finance.get(f"/ui/orders/{order.order_no}")).text)
    # When finance posts a cancel
    response = await finance.post(f"/ui/orders/{order.order_no}/cancel", data={"csrf_token": token})
    # Then it is refused and nothing changed
    assert response.status_code == 403
    assert await status_of(db, order.order_no) == "pending_payment"


async def test_cancelling_a_paid_order_is_refused_by_the_transition_table(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a paid order (the page offers no cancel) and a crafted post
    order = await make_order(db, "paid")
    ops = await signed_in("ops")
    page = await ops.get(f"/ui/orders/{order.order_no}")
    assert 'data-action="cancel"' not in page.text
    response = await ops.post(
        f"/ui/orders/{order.order_no}/cancel", data={"csrf_token": csrf_of(page.text)}
    )
    # Then the page shows the refusal and the order stays paid
    assert response.status_code == 409
    assert "订单当前状态下不能执行此操作" in response.text
    assert await status_of(db, order.order_no) == "paid"


async def test_ops_resolves_a_hold_through_htmx(signed_in: SignedInClient, db: Database) -> None:
    # Given a paid order with an open address hold
    order = await make_order(db, "paid")
    async with db.transaction() as session:
        case_id = await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="order",
            type="address_check",
            blocking=True,
            detail={"why": "地址不完整"},
        )
    await make_order(db, "paid", external_id="NO-CASE")
    ops = await signed_in("ops")
    # And the dashboard counts the case and links to the orders that have one open
    board = await ops.get("/ui/")
    link = re.search(r'href="([^"]+)" data-figure="cases_address_check"[^>]*>1<', board.text)
    assert link
    with_case = await ops.get(link.group(1).replace("&amp;", "&"))
    assert listed(with_case.text) == [order.order_no]
    page = await ops.get(f"/ui/orders/{order.order_no}")
    assert f'data-case="{case_id}"' in page.text
    token = csrf_of(page.text)
    # When an empty resolution is sent, then a real one, as htmx does (token in the header)
    headers = {"HX-Request": "true", "HX-Target": "cases", "X-CSRF-Token": token}
    empty = await ops.post(
        f"/ui/cases/{case_id}/resolve",
        data={"order_no": order.order_no, "resolution": " "},
        headers=headers,
    )
    done = await ops.post(
        f"/ui/cases/{case_id}/resolve",
        data={"order_no": order.order_no, "resolution": "已电话核实地址"},
        headers=headers,
    )
    # Then the first is refused in the block, the second closes the case
    assert "请填写处理说明" in empty.text
    assert done.status_code == 200
    assert done.text.lstrip().startswith('<article class="card" id="cases">')
    assert 'data-empty="cases"' in done.text
    async with db.transaction(write=False) as session:
        case = await exceptions_service.get_case(session, case_id)
    assert (case.status, case.resolved_by, case.resolution) == (
        "resolved",
        "user:ops-1",
        "已电话核实地址",
    )
    # And resolving it again is refused with the catalogue's message
    again = await ops.post(
        f"/ui/cases/{case_id}/resolve",
        data={"order_no": order.order_no, "resolution": "再来一次"},
        headers=headers,
    )
    assert "该异常已处理" in again.text
    assert listed((await ops.get(link.group(1).replace("&amp;", "&"))).text) == []


async def test_the_english_switch_shows_english_labels(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an order and a signed-in user reading Chinese by default
    order = await make_order(db)
    client = await signed_in("ops")
    zh = await client.get(f"/ui/orders/{order.order_no}")
    assert "待付款" in zh.text and 'lang="zh-CN"' in zh.text
    # When they switch to English
    switched = await client.get(f"/ui/lang/en?next=/ui/orders/{order.order_no}")
    assert switched.status_code == 303
    assert switched.headers["location"] == f"/ui/orders/{order.order_no}"
    en = await client.get(switched.headers["location"])
    # Then the labels are English
    assert 'lang="en"' in en.text
    assert "Awaiting payment" in en.text and "Cancel order" in en.text
    assert "待付款" not in en.text
    # And the switch never sends the browser to another host
    away = await client.get("/ui/lang/zh_CN?next=https://evil.example/")
    assert away.headers["location"] == "/ui/"


async def test_pages_forbid_other_hosts_by_policy(signed_in: SignedInClient) -> None:
    # When any page is served
    client = await signed_in("admin")
    for path in ("/ui/", "/ui/orders", "/ui/users", "/ui/login"):
        response = await client.get(path)
        # Then its policy allows only this host, and it references no other host
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path
