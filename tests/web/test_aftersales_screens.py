"""The after-sales screen over HTTP (both databases): cs opens a return-and-refund case from the
order, approves it with the responsibility, the warehouse records the parcel and the
inspection (the stock ledger gains the unit), finance refunds through the payment simulator
(a real port, as tests/aftersales does) and the order becomes partially refunded; each step
is refused to the roles the API refuses, without the CSRF token, and in the wrong state, and a
refusal writes nothing. The queue filters and pages by keyset."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import httpx
import pytest

from ordertally.aftersales import refunds
from ordertally.aftersales.models import AftersaleCase, AftersaleEvent, AftersaleRefund
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.fulfillment.models import Shipment
from ordertally.inventory import service as inventory_service
from ordertally.web import aftersales as aftersales_page
from tests.aftersales.conftest import (  # noqa: F401  (the payment simulator's fixtures)
    _no_auto_allocation,
    platform,
    sim_server,
)
from tests.aftersales.helpers import (
    approve,
    case_status,
    on_hand_and_ledger,
    open_case,
    order_status,
    paid_order,
)
from tests.conftest import TEST_WAREHOUSE
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio
_CASE_NO = re.compile(r"/ui/aftersales/(AS\d+)\?done=opened$")


async def _post(client: httpx.AsyncClient, path: str, page: str, **form: str) -> httpx.Response:
    """Post a form of a page with that page's CSRF token."""
    return await client.post(path, data={"csrf_token": csrf_of(page), **form})


async def _written(db: Database) -> tuple[int, int, int]:
    """Cases, case audit rows and refunds in the database."""
    return (
        await count(db, AftersaleCase),
        await count(db, AftersaleEvent),
        await count(db, AftersaleRefund),
    )


async def test_a_return_and_refund_goes_from_cs_to_the_warehouse_to_finance(
    signed_in: SignedInClient,
    db: Database,
    platform: httpx.AsyncClient,  # noqa: F811
) -> None:
    # Given a shipped order (2 × TEA-LJ-250 at 59.90, 1 cup) paid through WeChat Pay
    order, _ = await paid_order(db, platform)
    cs = await signed_in("cs")
    warehouse = await signed_in("warehouse")
    finance = await signed_in("finance")
    stock_before = await on_hand_and_ledger(db, "TEA-LJ-250")
    # When cs opens the order, follows "new after-sales case" and sends the form
    detail = await cs.get(f"/ui/orders/{order.order_no}")
    assert f'href="/ui/aftersales/new?order={order.order_no}"' in detail.text
    form = await cs.get(f"/ui/aftersales/new?order={order.order_no}")
    assert form.status_code == 200
    assert 'value="return_refund"' in form.text
    opened = await _post(
        cs,
        "/ui/aftersales",
        form.text,
        order_no=order.order_no,
        type="return_refund",
        reason_code="damaged",
        qty_1="1",
        qty_2="0",
        refund_goods="59.90",
        goods_status="buyer_received",
        evidence="IMG-20261122-01\nMSG-88",
        buyer_message="茶叶罐压坏了",
    )
    # Then the case exists with its line, evidence and amount, shown on its page
    assert opened.status_code == 303
    match = _CASE_NO.search(opened.headers["location"])
    assert match
    case_no = match.group(1)
    page = await cs.get(f"/ui/aftersales/{case_no}")
    assert page.status_code == 200
    assert 'data-case-status="requested"' in page.text
    assert page.text.count("data-evidence") == 2 and "IMG-20261122-01" in page.text
    assert '<tr data-case-line="1">' in page.text
    assert 'data-amount="refund">¥59.90' in page.text
    assert "“茶叶罐压坏了”" in page.text  # the buyer's words, sealed at rest, shown to cs
    # And (in Chinese, the default) the reason reads as words and the line names its product
    # (the order line's snapshot) beside the SKU
    assert ">商品损坏</dd>" in page.text and "<code>damaged</code>" not in page.text
    assert "<span data-product-name>测试商品 TEA-LJ-250</span>" in page.text
    assert '<small class="mono muted" data-sku>TEA-LJ-250</small>' in page.text
    await cs.get("/ui/lang/en")
    english = await cs.get(f"/ui/aftersales/{case_no}")
    assert ">Damaged</dd>" in english.text
    assert "<span data-product-name>Test item TEA-LJ-250</span>" in english.text
    await cs.get("/ui/lang/zh_CN")
    # And the order's page lists it
    assert f'data-aftersale="{case_no}"' in (await cs.get(f"/ui/orders/{order.order_no}")).text
    # When the warehouse tries to approve it / Then it is refused and nothing changes
    written = await _written(db)
    refused = await _post(warehouse, f"/ui/aftersales/{case_no}/approve", page.text)
    assert refused.status_code == 403
    assert await _written(db) == written and await case_status(db, case_no) == "requested"
    # When cs approves it, naming the carrier responsible
    approved = await _post(
        cs,
        f"/ui/aftersales/{case_no}/approve",
        page.text,
        responsibility="carrier",
        note="外箱破损",
    )
    assert approved.status_code == 303
    assert await case_status(db, case_no) == "awaiting_return"
    # And finance tries to refund before the goods are back / Then it is refused: return first
    page = await finance.get(f"/ui/aftersales/{case_no}")
    assert 'data-action="refund"' not in page.text
    written = await _written(db)
    early = await _post(finance, f"/ui/aftersales/{case_no}/refund", page.text)
    assert early.status_code == 409
    assert "须待仓库收到退货后退款" in early.text
    assert await _written(db) == written
    # When the warehouse records the parcel and inspects the unit as good
    page = await warehouse.get(f"/ui/aftersales/{case_no}")
    assert 'data-action="receive-return"' in page.text and 'data-action="approve"' not in page.text
    received = await _post(
        warehouse,
        f"/ui/aftersales/{case_no}/receive",
        page.text,
        warehouse=TEST_WAREHOUSE,
        carrier="zhongtong",
        waybill_no="ZT7300000000001",
    )
    assert received.status_code == 303
    assert await case_status(db, case_no) == "returned"
    page = await warehouse.get(f"/ui/aftersales/{case_no}")
    inspected = await _post(
        warehouse,
        f"/ui/aftersales/{case_no}/inspect",
        page.text,
        warehouse=TEST_WAREHOUSE,
        good_1="1",
        damaged_1="0",
    )
    assert inspected.status_code == 303
    assert await case_status(db, case_no) == "inspected"
    # Then the unit is back on hand and in the ledger, and the page shows it restocked
    on_hand, ledger = await on_hand_and_ledger(db, "TEA-LJ-250")
    assert (on_hand - stock_before[0], ledger - stock_before[1]) == (1, 1)
    page = await finance.get(f"/ui/aftersales/{case_no}")
    assert re.search(r"data-restocked>1<", page.text)
    assert 'data-responsibility="carrier"' in page.text
    # When finance refunds it and the refund job runs twice (send, then query)
    refunded = await _post(finance, f"/ui/aftersales/{case_no}/refund", page.text)
    assert refunded.status_code == 303
    page = await finance.get(f"/ui/aftersales/{case_no}")
    assert 'data-refund-state="pending"' in page.text
    assert 'hx-trigger="every 3s"' in page.text  # the block polls while the provider works
    assert await refunds.send_due(db, clock.now()) == {"claimed": 1, "sent": 1}
    assert await refunds.send_due(db, clock.now()) == {"claimed": 1, "succeeded": 1}
    # Then the polled block shows the provider's confirmation and stops polling
    block = await finance.get(f"/ui/aftersales/{case_no}/refunds", headers={"HX-Request": "true"})
    assert 'data-refund-state="succeeded"' in block.text
    assert "every 3s" not in block.text
    assert await case_status(db, case_no) == "refunded"
    # And the order shows partially_refunded
    assert await order_status(db, order.order_no) == "partially_refunded"
    order_page = await cs.get(f"/ui/orders/{order.order_no}")
    assert 'data-status="partially_refunded"' in order_page.text
    # And the state history holds every step, in order
    page = await cs.get(f"/ui/aftersales/{case_no}")
    steps = re.findall(r'data-step="(\w+)"', page.text)
    assert steps == ["request", "approve", "await_return", "receive", "inspect", "refund"]


async def test_each_step_is_refused_to_other_roles_and_without_the_token(
    signed_in: SignedInClient,
    db: Database,
    platform: httpx.AsyncClient,  # noqa: F811
) -> None:
    # Given a requested refund-only case
    order, _ = await paid_order(db, platform)
    case_no = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="late", refund_goods="10.00"
    )
    clients = {role: await signed_in(role) for role in ("cs", "warehouse", "finance", "ops")}
    page = (await clients["cs"].get(f"/ui/aftersales/{case_no}")).text
    written = await _written(db)
    # When each step is posted by a role the API refuses it to / Then 403 and nothing written
    for role, step in (
        ("warehouse", "approve"),
        ("finance", "reject"),
        ("cs", "inspect"),
        ("cs", "receive"),
        ("ops", "refund"),
        ("warehouse", "refund"),
        ("finance", "close"),
    ):
        response = await _post(clients[role], f"/ui/aftersales/{case_no}/{step}", page)
        assert response.status_code == 403, (role, step)
        assert 'data-refused="role"' in response.text, (role, step)
    # And cs's approve without the token is refused
    response = await clients["cs"].post(f"/ui/aftersales/{case_no}/approve", data={})
    assert response.status_code == 403
    assert await _written(db) == written
    assert await case_status(db, case_no) == "requested"
    # And opening a case is cs's and ops's: finance and the warehouse may not open the form
    for role in ("finance", "warehouse"):
        response = await clients[role].get(f"/ui/aftersales/new?order={order.order_no}")
        assert response.status_code == 403, role
    # And an inspection of a case that is not returned is refused by the case table
    await approve(db, case_no)
    page = (await clients["warehouse"].get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="inspect"' not in page
    written = await _written(db)
    response = await _post(
        clients["warehouse"],
        f"/ui/aftersales/{case_no}/inspect",
        page,
        warehouse=TEST_WAREHOUSE,
        good_1="1",
        damaged_1="0",
    )
    assert response.status_code == 409
    assert "售后单当前状态不能进行此操作" in response.text
    assert await _written(db) == written


async def test_a_case_the_order_cannot_take_is_refused_and_nothing_is_written(
    signed_in: SignedInClient,
    db: Database,
    platform: httpx.AsyncClient,  # noqa: F811
) -> None:
    # Given a shipped order and cs on the form
    order, _ = await paid_order(db, platform)
    cs = await signed_in("cs")
    form = (await cs.get(f"/ui/aftersales/new?order={order.order_no}")).text
    written = await _written(db)
    # When cs asks for 3 of a line of 2, then for more money than the order's total
    too_many = await _post(
        cs,
        "/ui/aftersales",
        form,
        order_no=order.order_no,
        type="return_refund",
        reason_code="damaged",
        qty_1="3",
        refund_goods="10",
    )
    too_much = await _post(
        cs,
        "/ui/aftersales",
        form,
        order_no=order.order_no,
        type="refund_only",
        reason_code="damaged",
        refund_goods="999.00",
    )
    # Then both are refused on the form with the reason, and nothing is written
    assert too_many.status_code == 400 and "3 asked, 2 left" in too_many.text
    assert too_much.status_code == 400 and "more than the order" in too_much.text
    assert 'id="new-aftersale"' in too_much.text
    assert await _written(db) == written


async def test_the_queue_filters_and_pages_by_keyset(
    signed_in: SignedInClient,
    db: Database,
    platform: httpx.AsyncClient,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given three cases: two refund-only (one approved with the merchant responsible), a reship
    order, _ = await paid_order(db, platform)
    other, _ = await paid_order(db, platform, channel="taobao", external_id="TB-7788")
    first = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="a", refund_goods="5"
    )
    second = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="b", refund_goods="5"
    )
    third = await open_case(
        db,
        order_no=other.order_no,
        type="reship",
        reason_code="missing",
        lines=[{"line_no": 2, "quantity": 1}],
    )
    ops = await signed_in("ops")
    page = (await ops.get(f"/ui/aftersales/{second}")).text
    await _post(ops, f"/ui/aftersales/{second}/approve", page, responsibility="merchant")

    def shown(html: str) -> list[str]:
        return re.findall(r'<tr data-aftersale="(AS\d+)">', html)

    # When ops filters by type, responsibility, channel and today's date
    everything = await ops.get("/ui/aftersales")
    by_type = await ops.get("/ui/aftersales?type=refund_only")
    by_duty = await ops.get("/ui/aftersales?responsibility=merchant")
    by_channel = await ops.get("/ui/aftersales?channel=taobao")
    today = clock.now().astimezone(ZoneInfo(get_settings().timezone)).date().isoformat()
    on_today = await ops.get(f"/ui/aftersales?created_from={today}&created_to={today}")
    tomorrow_only = await ops.get("/ui/aftersales?created_from=2099-01-01")
    # Then each shows exactly its cases, newest first
    assert shown(everything.text) == [third, second, first]
    assert shown(by_type.text) == [second, first]
    assert shown(by_duty.text) == [second]
    assert shown(by_channel.text) == [third]
    assert shown(tomorrow_only.text) == []
    assert shown(on_today.text) == [third, second, first]
    # When the page holds two cases / Then the next page continues below the last one
    monkeypatch.setattr(aftersales_page, "PAGE_SIZE", 2)
    one = await ops.get(
        "/ui/aftersales", headers={"HX-Request": "true", "HX-Target": "aftersales-table"}
    )
    assert shown(one.text) == [third, second]
    assert "<form" not in one.text  # htmx gets the table block alone
    next_link = re.search(r'href="(/ui/aftersales\?after=\d+)"', one.text)
    assert next_link
    two = await ops.get(next_link.group(1))
    assert shown(two.text) == [first]
    assert 'data-action="next-page"' not in two.text
    # And an unknown case or export number is a plain "not found" page
    assert (await ops.get("/ui/aftersales/AS0000000000")).status_code == 404
    assert (await ops.get("/ui/exports/EXP0000")).status_code == 404


@pytest.mark.parametrize(
    ("role", "path", "allowed"),
    [
        ("warehouse", "/ui/aftersales", True),
        ("finance", "/ui/aftersales", True),
        ("warehouse", "/ui/exports", False),
        ("warehouse", "/ui/analytics", False),
        ("cs", "/ui/exports", True),
        ("finance", "/ui/analytics", True),
    ],
)
async def test_each_new_screen_checks_the_role(
    signed_in: SignedInClient, role: str, path: str, allowed: bool
) -> None:
    # When a role opens a screen / Then it is shown or refused by the permission table
    client = await signed_in(role)
    response = await client.get(path)
    assert response.status_code == (200 if allowed else 403)
    assert ('data-refused="role"' in response.text) is not allowed
    # And the top bar offers the entry only where it is allowed
    nav = await client.get("/ui/aftersales")
    assert ('data-nav="exports"' in nav.text) is (role != "warehouse")


async def test_cs_reships_once_the_stock_is_there_and_closes_the_case(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a delivered order of 3 RARE-1 (5 received, 3 shipped: 2 left) and an approved
    # reship of the 3 units
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=TEST_WAREHOUSE,
            sku="RARE-1",
            kind="receipt",
            quantity=5,
            reason="test receipt",
            actor="t",
        )
    order, _ = await paid_order(
        db,
        None,
        "delivered",
        lines=[
            {"sku": "RARE-1", "quantity": 3, "unit_price": "10.00"},
            {"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"},
        ],
    )
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="reship",
        reason_code="missing_item",
        lines=[{"line_no": 1, "quantity": 3}],
    )
    await approve(db, case_no)
    cs = await signed_in("cs")
    page = (await cs.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="reship"' in page and 'data-action="refund"' not in page
    shipments = await count(db, Shipment)
    # When cs sends it again with 2 on hand / Then it waits for stock and nothing is written
    waiting = await _post(cs, f"/ui/aftersales/{case_no}/reship", page)
    assert waiting.status_code == 409 and "库存不足" in waiting.text
    assert await count(db, Shipment) == shipments
    assert await case_status(db, case_no) == "approved"
    # When a unit arrives and cs sends it again
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=TEST_WAREHOUSE,
            sku="RARE-1",
            kind="receipt",
            quantity=1,
            reason="test receipt",
            actor="t",
        )
    sent = await _post(cs, f"/ui/aftersales/{case_no}/reship", page)
    # Then the case is reshipped with one replacement shipment, and cs may close it
    assert sent.status_code == 303
    assert await case_status(db, case_no) == "reshipped"
    assert await count(db, Shipment) == shipments + 1
    page = (await cs.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="close"' in page and 'data-action="reship"' not in page
    closed = await _post(cs, f"/ui/aftersales/{case_no}/close", page)
    assert closed.status_code == 303
    assert await case_status(db, case_no) == "closed"


async def test_finance_records_a_platforms_refund_once(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a delivered Taobao order (paid on the platform) with an approved refund-only case
    order, _ = await paid_order(db, None, "delivered", channel="taobao", external_id="TB-31")
    case_no = await open_case(
        db, order_no=order.order_no, type="refund_only", reason_code="late", refund_goods="39.90"
    )
    await approve(db, case_no)
    finance = await signed_in("finance")
    page = (await finance.get(f"/ui/aftersales/{case_no}")).text
    form = {"platform_refund_id": "929361462", "amount": "39.90"}
    # When finance records the platform's refund twice
    first = await _post(finance, f"/ui/aftersales/{case_no}/platform-refund", page, **form)
    again = await _post(finance, f"/ui/aftersales/{case_no}/platform-refund", page, **form)
    # Then one refund, confirmed, and the order partially refunded
    assert (first.status_code, again.status_code) == (303, 303)
    assert await count(db, AftersaleRefund) == 1
    shown = (await finance.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-refund="taobao:929361462" data-refund-state="succeeded"' in shown
    assert await case_status(db, case_no) == "refunded"
    assert await order_status(db, order.order_no) == "partially_refunded"


async def test_an_exchange_comes_back_under_its_waybill_and_is_sent_again(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a delivered order and an approved exchange of one tea
    order, _ = await paid_order(db, None, "delivered")
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="exchange",
        reason_code="wrong_size",
        lines=[{"line_no": 1, "quantity": 1}],
    )
    assert await approve(db, case_no) == "awaiting_return"
    cs = await signed_in("cs")
    warehouse = await signed_in("warehouse")
    # When cs records the buyer's return waybill
    page = (await cs.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="exchange"' not in page
    noted = await _post(
        cs,
        f"/ui/aftersales/{case_no}/return-waybill",
        page,
        carrier="yuantong",
        waybill_no="YT9100000000001",
    )
    assert noted.status_code == 303
    # Then the warehouse's form is filled with it, and the parcel and inspection are recorded
    page = (await warehouse.get(f"/ui/aftersales/{case_no}")).text
    assert 'value="YT9100000000001"' in page
    assert 'data-goods-status="buyer_returned"' in page
    await _post(
        warehouse,
        f"/ui/aftersales/{case_no}/receive",
        page,
        warehouse=TEST_WAREHOUSE,
        carrier="yuantong",
        waybill_no="YT9100000000001",
    )
    page = (await warehouse.get(f"/ui/aftersales/{case_no}")).text
    await _post(
        warehouse,
        f"/ui/aftersales/{case_no}/inspect",
        page,
        warehouse=TEST_WAREHOUSE,
        good_1="1",
        damaged_1="0",
    )
    assert await case_status(db, case_no) == "inspected"
    shipments = await count(db, Shipment)
    # When cs sends the exchange
    page = (await cs.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="exchange"' in page
    sent = await _post(cs, f"/ui/aftersales/{case_no}/exchange", page)
    # Then the case is exchanged with one replacement shipment, and no refund
    assert sent.status_code == 303
    assert await case_status(db, case_no) == "exchanged"
    assert await count(db, Shipment) == shipments + 1
    assert await count(db, AftersaleRefund) == 0


async def test_cs_withdraws_a_request_the_buyer_took_back(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an approved refund-only request on a delivered platform order
    order, _ = await paid_order(db, None, "delivered", channel="shopify", external_id="W-7")
    case_no = await open_case(
        db,
        order_no=order.order_no,
        type="refund_only",
        reason_code="buyer:changed_mind",
        refund_goods="10.00",
    )
    assert await approve(db, case_no) == "approved"
    cs = await signed_in("cs")
    # When cs opens it, the buyer having called to take it back, and withdraws it
    page = (await cs.get(f"/ui/aftersales/{case_no}")).text
    assert 'data-action="withdraw"' in page
    done = await _post(cs, f"/ui/aftersales/{case_no}/withdraw", page)
    # Then the case is closed with nothing refunded, and the step is no longer offered
    assert done.status_code == 303
    assert await case_status(db, case_no) == "closed"
    assert await count(db, AftersaleRefund) == 0
    after = (await cs.get(done.headers["location"])).text
    assert 'data-action="withdraw"' not in after
