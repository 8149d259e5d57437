"""The back office's operational screens over HTTP (both databases): a complete order detail,
finance's 补单 approvals and statement reconciliation, inventory and receipts, a warehouse's
batch shipping, and the tracking page's "status is being verified" hint."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.fulfillment import tracking_page
from ordertally.inventory import service as inventory_service
from ordertally.orders import service as orders_service
from ordertally.payments import manual as manual_service
from tests.conftest import TEST_WAREHOUSE
from tests.factories import make_order
from tests.fulfillment.helpers import split_paid_order
from tests.payments.helpers import make_attempt, order_state, paid_notice, store_and_apply
from tests.payments.test_reconcile import wechat_bill, wechat_row, yuan
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


async def trail(db: Database, order_no: str) -> list[tuple[str, str, str]]:
    async with db.transaction(write=False) as session:
        return [
            (e.event, e.actor_kind, e.actor_id)
            for e in await orders_service.events_of(session, order_no)
        ]


async def manual_states(db: Database) -> list[tuple[str, str, str | None]]:
    async with db.transaction(write=False) as session:
        found = await manual_service.list_manual(session, None)
    return [(m.state, m.requested_by, m.decided_by) for m in found]


async def test_an_order_page_shows_names_amounts_payments_reservations_and_shipments(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an order paid through a notification, planned into two parcels
    order = await make_order(db)
    attempt = await make_attempt(db, order)
    await store_and_apply(db, paid_notice(attempt, txn="4200000001"))
    await drain(db, get_settings())
    ops = await signed_in("ops")
    warehouse = await signed_in("warehouse")
    # When ops opens it
    page = await ops.get(f"/ui/orders/{order.order_no}")
    # Then the lines carry the catalogue's names from the order's snapshot, not bare codes
    assert page.status_code == 200
    assert page.text.count("<div data-product>测试商品 TEA-LJ-250</div>") == 1
    assert "<div data-product>测试商品 CUP-CER-01</div>" in page.text
    # And every amount is there
    for name, text in (
        ("subtotal", "¥159.70"),
        ("discount", "−¥0.00"),
        ("shipping", "¥0.00"),
        ("tax", "¥0.00"),
    ):
        assert f'data-amount="{name}">{text}<' in page.text, name
    # And the payment's notification, the reservations and the shipment plan
    assert len(re.findall(r'<tr data-notification="\d+">', page.text)) == 1
    assert "<code>paid</code>" in page.text
    reservations = re.findall(r'<tr data-reservation="(\d+)-([^"]+)">', page.text)
    assert reservations == [("1", TEST_WAREHOUSE), ("2", TEST_WAREHOUSE)]
    assert len(re.findall(r'<tr data-shipment="\d+">', page.text)) == 1
    assert 'id="sent"' in page.text and "未发送通知" in page.text
    # And in English the product names are the English ones
    await ops.get("/ui/lang/en?next=/ui/")
    english = await ops.get(f"/ui/orders/{order.order_no}")
    assert "<div data-product>Test item TEA-LJ-250</div>" in english.text
    # And the warehouse sees neither payments nor notifications, and no 补单 form
    seen = await warehouse.get(f"/ui/orders/{order.order_no}")
    assert 'data-notification="' not in seen.text and 'id="sent"' not in seen.text
    assert 'id="manual-request"' not in seen.text
    assert 'data-shipment="' in seen.text


async def test_finance_approves_a_manual_payment_only_as_the_second_person(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order and two finance users (cs may not record a 补单)
    order = await make_order(db)
    first = await signed_in("finance")
    second = await signed_in("finance")
    cs = await signed_in("cs")
    page = await first.get(f"/ui/orders/{order.order_no}")
    assert 'id="manual-request"' in page.text
    assert 'id="manual-request"' not in (await cs.get(f"/ui/orders/{order.order_no}")).text
    # When the first records the evidence on the order's page
    evidence = {
        "csrf_token": csrf_of(page.text),
        "reference": "ICBC-20261122-0001",
        "amount": "159.70",
        "paid_at": clock.now().date().isoformat(),
        "reason": "买家银行转账，凭证见工单 4411",
    }
    wrong = await first.post(
        f"/ui/orders/{order.order_no}/manual-payment", data={**evidence, "amount": "15.00"}
    )
    made = await first.post(f"/ui/orders/{order.order_no}/manual-payment", data=evidence)
    # Then a wrong amount is refused on the page, and the right one waits for a second person
    assert wrong.status_code == 422 and "flash error" in wrong.text
    assert made.status_code == 303 and made.headers["location"] == "/ui/payments?done=requested"
    assert await manual_states(db) == [("pending_approval", "user:finance-1", None)]
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    listing = await first.get("/ui/payments")
    (manual_id,) = re.findall(r'<tr data-manual="(\d+)"', listing.text)
    assert f'data-own="{manual_id}"' in listing.text
    # When the requester approves their own request
    own = await first.post(
        f"/ui/payments/manual/{manual_id}/approve", data={"csrf_token": csrf_of(listing.text)}
    )
    # Then it is refused with the reason shown, and nothing changed
    assert own.status_code == 403
    assert f'data-refusal="{manual_id}"' in own.text
    assert "这是您本人提交的补单：须由另一位财务审批。" in own.text
    assert await order_state(db, order.order_no) == ("pending_payment", 1)
    assert await manual_states(db) == [("pending_approval", "user:finance-1", None)]
    # When the second finance user approves it (cs may not)
    other = await second.get("/ui/payments")
    assert f'data-own="{manual_id}"' not in other.text
    refused = await cs.post(
        f"/ui/payments/manual/{manual_id}/approve",
        data={"csrf_token": csrf_of((await cs.get("/ui/")).text)},
    )
    assert refused.status_code == 403
    done = await second.post(
        f"/ui/payments/manual/{manual_id}/approve", data={"csrf_token": csrf_of(other.text)}
    )
    # Then the order is paid by the second person, on the evidence
    assert done.status_code == 303
    assert await order_state(db, order.order_no) == ("paid", 2)
    assert (await trail(db, order.order_no))[-1] == (
        "payment_succeeded",
        "finance",
        "user:finance-2",
    )
    assert await manual_states(db) == [("approved", "user:finance-1", "user:finance-2")]
    after = await second.get(done.headers["location"])
    assert "补单已批准" in after.text and 'data-empty="manual"' in after.text
    assert f'data-decided="{manual_id}"' in after.text


async def test_finance_uploads_a_statement_and_sees_each_kind_of_result(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given one paid attempt, one we hold that the bill lacks, and a bill with a stranger
    with clock.frozen(AT):
        matched = await make_order(db)
        here_only = await make_order(db)
        paid = []
        for order in (matched, here_only):
            attempt = await make_attempt(db, order)
            await store_and_apply(db, paid_notice(attempt, txn=f"T-{attempt.out_trade_no}"))
            paid.append(attempt)
    bill = wechat_bill(
        [
            wechat_row(
                paid[0].out_trade_no,
                f"T-{paid[0].out_trade_no}",
                "SUCCESS",
                yuan(paid[0].amount_minor),
            ),
            wechat_row("NOBODY-KNOWS-1", "4200PLATFORM2", "SUCCESS", "9.99"),
        ]
    )
    finance = await signed_in("finance")
    page = await finance.get("/ui/payments")
    # When finance uploads it
    response = await finance.post(
        "/ui/payments/reconcile",
        data={"csrf_token": csrf_of(page.text), "provider": "wechatpay"},
        files={"statement": ("wechat.csv", bill.encode(), "text/csv")},
    )
    # Then the counts and each discrepancy are shown
    assert response.status_code == 200, response.text
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', response.text))
    assert counts == {
        "matched": "1",
        "platform_only": "1",
        "ordertally_only": "1",
        "amount_mismatch": "0",
        "status_mismatch": "0",
    }
    # (and its language switch goes back to the screen, not to the upload's address)
    assert 'href="/ui/lang/en?next=/ui/payments"' in response.text
    rows = re.findall(r'data-discrepancy="([^"]+)" data-category="(\w+)"', response.text)
    assert rows == [
        ("NOBODY-KNOWS-1", "platform_only"),
        (paid[1].out_trade_no, "ordertally_only"),
    ]
    # And a file that is not a bill is refused on the page, as is a missing token
    bad = await finance.post(
        "/ui/payments/reconcile",
        data={"csrf_token": csrf_of(page.text), "provider": "wechatpay"},
        files={"statement": ("x.csv", b"hello\n", "text/csv")},
    )
    assert bad.status_code == 422 and "flash error" in bad.text
    bare = await finance.post(
        "/ui/payments/reconcile",
        data={"provider": "wechatpay"},
        files={"statement": ("wechat.csv", bill.encode(), "text/csv")},
    )
    assert bare.status_code == 403


async def test_inventory_shows_stock_and_the_ledger_and_books_receipts(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given the test warehouse's stock, one order reserving part of it
    await make_order(db)
    warehouse = await signed_in("warehouse")
    cs = await signed_in("cs")
    page = await warehouse.get("/ui/inventory?sku=TEA-LJ")
    # Then stock per SKU × warehouse shows on hand, reserved, safety and available
    row = re.search(rf'<tr data-stock="TEA-LJ-250@{TEST_WAREHOUSE}">(.*?)</tr>', page.text, re.S)
    assert row, page.text
    numbers = re.findall(r'<td class="num[^"]*"[^>]*>([\d,]+)</td>', row.group(1))
    assert numbers == ["1,000,000", "2", "0", "999,998"]
    assert re.findall(r'<tr data-stock="([^"]+)"', page.text) == [f"TEA-LJ-250@{TEST_WAREHOUSE}"]
    # and names the product from the product master (issue 22: names, not codes)
    assert re.findall(r"<div data-product>([^<]+)</div>", row.group(1)) == ["测试商品 TEA-LJ-250"]
    # When the warehouse books a receipt
    done = await warehouse.post(
        "/ui/inventory/receipts",
        data={
            "csrf_token": csrf_of(page.text),
            "warehouse": TEST_WAREHOUSE,
            "sku": "CUP-CER-01",
            "quantity": "24",
            "reason": "供应商送货单 DN-778",
        },
    )
    # Then it is in the ledger and the stock
    assert done.status_code == 303
    async with db.transaction(write=False) as session:
        view = await inventory_service.stock_view(session, "CUP-CER-01")
    assert view["total"]["on_hand"] == 1_000_024
    ledger = await warehouse.get("/ui/inventory?kind=receipt")
    kinds = re.findall(r'<tr data-movement="\d+" data-kind="(\w+)">', ledger.text)
    assert kinds and set(kinds) == {"receipt"}
    assert "供应商送货单 DN-778" in ledger.text
    assert "<div data-product>测试商品 CUP-CER-01</div>" in ledger.text
    # And a receipt of an unknown SKU is refused, changing nothing
    unknown = await warehouse.post(
        "/ui/inventory/receipts",
        data={
            "csrf_token": csrf_of(page.text),
            "warehouse": TEST_WAREHOUSE,
            "sku": "NOT-IN-CATALOGUE",
            "quantity": "5",
        },
    )
    assert unknown.status_code >= 400 and "flash error" in unknown.text
    # And cs reads the stock but may not book
    seen = await cs.get("/ui/inventory")
    assert seen.status_code == 200 and 'id="receive"' not in seen.text
    refused = await cs.post(
        "/ui/inventory/receipts",
        data={
            "csrf_token": csrf_of(seen.text),
            "warehouse": TEST_WAREHOUSE,
            "sku": "CUP-CER-01",
            "quantity": "1",
        },
    )
    assert refused.status_code == 403
    async with db.transaction(write=False) as session:
        view = await inventory_service.stock_view(session, "CUP-CER-01")
    assert view["total"]["on_hand"] == 1_000_024


async def test_the_warehouse_ships_a_batch_from_a_pasted_list(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two orders planned into two parcels each
    a = await split_paid_order(db)
    b = await split_paid_order(db)
    warehouse = await signed_in("warehouse")
    page = await warehouse.get("/ui/shipping")
    assert set(re.findall(r'data-waiting="([^"]+)"', page.text)) == {a.order_no, b.order_no}
    # When the warehouse pastes its shipped list (one row bad)
    listing = (
        "订单号,快递公司,运单号\n"
        f"{a.order_no},zhongtong,ZT7100000000001\n"
        f"{a.order_no},shunfeng,SF1100000000002\n"
        f"{b.order_no},zhongtong,\n"
    )
    result = await warehouse.post(
        "/ui/shipping", data={"csrf_token": csrf_of(page.text), "list": listing}
    )
    # Then each row has its result and the first order is shipped
    assert result.status_code == 200
    assert re.findall(r'data-result-line="(\d+)" data-result="(\w+)"', result.text) == [
        ("2", "shipped"),
        ("3", "shipped"),
        ("4", "error"),
    ]
    assert await order_state(db, a.order_no) == ("shipped", 5)
    assert set(re.findall(r'data-waiting="([^"]+)"', result.text)) == {b.order_no}
    # And finance may not open the screen
    finance = await signed_in("finance")
    assert (await finance.get("/ui/shipping")).status_code == 403


# The role checks are the same on both databases: they run once.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("role", "path", "allowed"),
    [
        ("cs", "/ui/payments", False),
        ("warehouse", "/ui/payments", False),
        ("ops", "/ui/payments", False),
        ("finance", "/ui/payments", True),
        ("admin", "/ui/payments", True),
        ("cs", "/ui/shipping", False),
        ("warehouse", "/ui/shipping", True),
        ("finance", "/ui/inventory", True),
        ("warehouse", "/ui/cases", True),
        ("cs", "/ui/rules", True),
        ("cs", "/ui/rules/new", False),
        ("ops", "/ui/rules/new", True),
        ("finance", "/ui/rules", False),
        ("warehouse", "/ui/rules", False),
        ("finance", "/ui/review", True),
        ("cs", "/ui/review", True),
        ("warehouse", "/ui/review", False),
    ],
)
async def test_each_screen_checks_the_role(
    signed_in: SignedInClient, role: str, path: str, allowed: bool
) -> None:
    # When a role opens a screen / Then it is shown or refused by the permission table
    client = await signed_in(role)
    response = await client.get(path)
    assert response.status_code == (200 if allowed else 403)
    assert ('data-refused="role"' in response.text) is not allowed


async def test_the_tracking_page_says_the_status_is_being_verified_until_the_notification(
    db: Database, signed_in: SignedInClient
) -> None:
    # Given an unpaid order whose buyer opened a payment, no notification yet
    order = await make_order(db)
    untouched = await make_order(db, external_id="NOT-PAYING")
    attempt = await make_attempt(db, order)
    web = await signed_in("cs")
    # When the buyer opens the tracking page
    page = await web.get("/t/" + tracking_page.token_for(order.order_no))
    quiet = await web.get("/t/" + tracking_page.token_for(untouched.order_no))
    # Then it says the status is being verified (not for an order nobody is paying)
    assert page.status_code == 200
    assert 'id="verifying"' in page.text and "状态核实中" in page.text
    assert 'id="verifying"' not in quiet.text
    # And once the notification arrived, the hint is gone
    await store_and_apply(db, paid_notice(attempt, txn="4200000009"))
    after = await web.get("/t/" + tracking_page.token_for(order.order_no))
    assert 'id="verifying"' not in after.text
    in_english = await web.get("/t/" + tracking_page.token_for(untouched.order_no) + "?lang=en")
    assert in_english.status_code == 200 and 'id="verifying"' not in in_english.text
