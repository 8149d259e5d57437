"""After-sales cases through the HTTP API as customer service, the warehouse and finance use
them: the state table, returns received (matched at once or later: 无主件) and inspected into
stock movements, hand-offs (return first), platform records deduplicated, receipt
confirmation at the end of an order's life."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from ordertally.aftersales import lifecycle
from ordertally.aftersales.models import AftersaleCase, AftersaleEvent
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.models import OutboxEvent
from ordertally.inventory.models import StockMovement
from ordertally.ops.doctor import run_checks
from tests.aftersales.helpers import on_hand_and_ledger, order_status, paid_order
from tests.conftest import TEST_WAREHOUSE
from tests.factories import add_bundle, auth, make_order

pytestmark = pytest.mark.anyio


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.transaction(write=False) as session:
        cases = await session.scalar(select(func.count()).select_from(AftersaleCase))
        audit = await session.scalar(select(func.count()).select_from(AftersaleEvent))
        events = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.aggregate_type == "aftersale")
        )
    return int(cases or 0), int(audit or 0), int(events or 0)


async def _post(
    client: httpx.AsyncClient, key: str, path: str, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/aftersales{path}", json=body, headers=auth(key))
    assert r.status_code == status, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def test_a_return_is_received_unmatched_matched_inspected_and_refunded(
    db: Database, platform: httpx.AsyncClient, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered order (2 × TEA-LJ-250 at 59.90, 1 × CUP-CER-01) paid through WeChat Pay
    order, _ = await paid_order(db, platform, "delivered")
    before = await on_hand_and_ledger(db, "TEA-LJ-250")
    # When cs opens a return of both teas (one arrived damaged), 119.80 plus 10.00 postage
    case = await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": order.order_no,
            "type": "return_refund",
            "reason_code": "damaged_in_transit",
            "lines": [{"line_no": 1, "quantity": 2}],
            "refund_goods": "119.80",
            "refund_postage": "10.00",
            "evidence": ["photo:8812", "msg:5531"],
        },
        201,
    )
    case_no = case["case_no"]
    assert (case["status"], case["refund"]["total"]) == ("requested", "129.80")
    approved = await _post(client, keys["cs"], f"/{case_no}/approve", {})
    assert approved["status"] == "awaiting_return"
    # Then refunding before the goods are back is refused (return first), and changes nothing
    counts = await _counts(db)
    early = await client.post(
        f"/api/v1/aftersales/{case_no}/refunds", json={}, headers=auth(keys["cs"])
    )
    assert (early.status_code, early.json()["code"]) == (409, "aftersales.return_first")
    assert await _counts(db) == counts
    # When the parcel arrives without its waybill on record (an unmatched parcel), then is matched
    parcel = await _post(
        client,
        keys["warehouse"],
        "/parcels",
        {"warehouse": TEST_WAREHOUSE, "carrier": "SF", "waybill_no": "SF1234567890"},
        201,
    )
    assert (parcel["matched"], parcel["case"]) == (False, None)
    listed = await client.get(
        "/api/v1/aftersales/parcels/unmatched", headers=auth(keys["warehouse"])
    )
    assert [p["id"] for p in listed.json()["items"]] == [parcel["id"]]
    matched = await _post(
        client, keys["warehouse"], f"/parcels/{parcel['id']}/match", {"case_no": case_no}
    )
    assert (matched["matched"], matched["case"]["status"]) == (True, "returned")
    # And the warehouse inspects: one good back to stock, one damaged written off
    inspected = await _post(
        client,
        keys["warehouse"],
        f"/{case_no}/inspection",
        {
            "warehouse": TEST_WAREHOUSE,
            "lines": [{"line_no": 1, "good": 1, "damaged": 1, "reason": "crushed tin"}],
            "responsibility": "carrier",
        },
    )
    assert (inspected["status"], inspected["responsibility"]) == ("inspected", "carrier")
    # Then stock moved by +2 returned and -1 written off, and on hand equals the ledger
    async with db.transaction(write=False) as session:
        moves = (
            await session.execute(
                select(StockMovement.kind, StockMovement.quantity)
                .where(StockMovement.sku == "TEA-LJ-250", StockMovement.kind != "receipt")
                .where(StockMovement.reason.like(f"%{case_no}%"))
                .order_by(StockMovement.id)
            )
        ).all()
    assert [tuple(m) for m in moves] == [("return", 2), ("adjustment", -1)]
    after = await on_hand_and_ledger(db, "TEA-LJ-250")
    assert after == (before[0] + 1, before[1] + 1) and after[0] == after[1]
    # When cs refunds now and the refund job runs
    refund = await _post(client, keys["cs"], f"/{case_no}/refunds", {}, 202)
    assert (refund["amount"], refund["state"]) == ("129.80", "pending")
    from ordertally.aftersales import refunds

    await refunds.send_due(db, clock.now())
    await refunds.send_due(db, clock.now())
    # Then the case is refunded, can be closed, and its trail lists every step once
    closed = await _post(client, keys["cs"], f"/{case_no}/close", {})
    assert closed["status"] == "closed"
    doc = (await client.get(f"/api/v1/aftersales/{case_no}", headers=auth(keys["cs"]))).json()
    assert [(e["event"], e["to"]) for e in doc["events"]] == [
        ("request", "requested"),
        ("approve", "approved"),
        ("await_return", "awaiting_return"),
        ("receive", "returned"),
        ("inspect", "inspected"),
        ("refund", "refunded"),
        ("close", "closed"),
    ]
    assert doc["lines"] == [
        {
            "line_no": 1,
            "sku": "TEA-LJ-250",
            "name": "测试商品 TEA-LJ-250",  # the order line's snapshot of the product
            "name_en": "Test item TEA-LJ-250",
            "quantity": 2,
            "received": 2,
            "restocked": 1,
            "written_off": 1,
        }
    ]
    assert await order_status(db, order.order_no) == "partially_refunded"
    assert await _counts(db) == (1, 7, 8)  # seven steps, and the refund confirmed
    # And the doctor finds the refund recorded from the provider and the units in the ledger
    checks = {c.name: c for c in await run_checks(db, get_settings())}
    assert checks["aftersales_refunds"].ok and checks["aftersales_refunds"].data["confirmed"] == 1
    assert checks["aftersales_returned_stock"].data == {"inspected": 2, "returned_movements": 2}
    assert checks["aftersales_returned_stock"].ok


async def test_bad_cases_are_refused_and_change_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered order and an unpaid one
    order, _ = await paid_order(db, None, "delivered")
    unpaid = await make_order(db)
    before = await _counts(db)
    bad = [
        (
            {
                "order_no": unpaid.order_no,
                "type": "return_refund",
                "lines": [{"line_no": 1, "quantity": 1}],
                "refund_goods": "1.00",
            },
            400,
        ),
        (
            {
                "order_no": order.order_no,
                "type": "return_refund",
                "lines": [{"line_no": 1, "quantity": 3}],
                "refund_goods": "1.00",
            },
            400,
        ),
        (
            {
                "order_no": order.order_no,
                "type": "return_refund",
                "lines": [{"line_no": 9, "quantity": 1}],
                "refund_goods": "1.00",
            },
            400,
        ),
        ({"order_no": order.order_no, "type": "refund_only", "refund_goods": "999.00"}, 400),
        (
            {
                "order_no": order.order_no,
                "type": "reship",
                "refund_goods": "1.00",
                "lines": [{"line_no": 1, "quantity": 1}],
            },
            400,
        ),
        ({"order_no": order.order_no, "type": "swap", "refund_goods": "1.00"}, 422),
        ({"order_no": "OT-NOPE", "type": "refund_only", "refund_goods": "1.00"}, 400),
    ]
    for body, status in bad:
        r = await client.post(
            "/api/v1/aftersales", json={"reason_code": "x", **body}, headers=auth(keys["cs"])
        )
        assert r.status_code == status, (body, r.text)
    # Then nothing was written
    assert await _counts(db) == before
    # And a step the table does not allow is refused, writing nothing
    case = await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": order.order_no,
            "type": "reship",
            "reason_code": "missing_item",
            "lines": [{"line_no": 2, "quantity": 1}],
        },
        201,
    )
    before = await _counts(db)
    r = await client.post(
        f"/api/v1/aftersales/{case['case_no']}/close", json={}, headers=auth(keys["cs"])
    )
    assert (r.status_code, r.json()["code"]) == (409, "aftersales.illegal_transition")
    assert await _counts(db) == before


async def test_a_platform_record_and_its_refund_are_applied_once(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered platform order (not paid through ordertally)
    order, _ = await paid_order(db, None, "delivered", channel="shopify", external_id="5001")
    body = {
        "order_no": order.order_no,
        "type": "refund_only",
        "reason_code": "shopify:customer",
        "refund_goods": "39.90",
        "platform_refund_id": "929361462",
    }
    # When the platform's record arrives twice
    first = await _post(client, keys["cs"], "", body, 201)
    again = await _post(client, keys["cs"], "", body, 200)
    assert first["case_no"] == again["case_no"]
    await _post(client, keys["cs"], f"/{first['case_no']}/approve", {})
    # And the platform's refund is recorded twice
    refund = {"platform_refund_id": "929361462", "amount": "39.90"}
    made = await _post(client, keys["cs"], f"/{first['case_no']}/platform-refunds", refund, 201)
    same = await _post(client, keys["cs"], f"/{first['case_no']}/platform-refunds", refund, 200)
    # Then one case, one refund, the order partially refunded once
    assert made["id"] == same["id"] and made["state"] == "succeeded"
    assert await _counts(db) == (1, 3, 4)
    assert await order_status(db, order.order_no) == "partially_refunded"


async def test_a_request_the_buyer_takes_back_is_withdrawn_unless_money_moved(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given two approved refund-only requests on a delivered platform order
    order, _ = await paid_order(db, None, "delivered", channel="shopify", external_id="5002")
    cases = []
    for n, amount in ((1, "10.00"), (2, "5.00")):
        body = {
            "order_no": order.order_no,
            "type": "refund_only",
            "reason_code": "buyer:changed_mind",
            "refund_goods": amount,
            "platform_refund_id": f"77{n}",
        }
        case_no = (await _post(client, keys["cs"], "", body, 201))["case_no"]
        await _post(client, keys["cs"], f"/{case_no}/approve", {})
        cases.append(case_no)
    first, second = cases
    # When the buyer takes the first back (twice: the second answer is the same)
    withdrawn = await _post(client, keys["cs"], f"/{first}/withdraw", {})
    again = await _post(client, keys["cs"], f"/{first}/withdraw", {})
    # Then it is closed with nothing refunded, its trail saying so once
    assert (withdrawn["status"], again["status"]) == ("closed", "closed")
    doc = (await client.get(f"/api/v1/aftersales/{first}", headers=auth(keys["cs"]))).json()
    assert [(e["event"], e["to"]) for e in doc["events"]] == [
        ("request", "requested"),
        ("approve", "approved"),
        ("withdraw", "closed"),
    ]
    # When the second one's refund was made by the platform, withdrawing it is refused and
    # changes nothing
    refund = {"platform_refund_id": "772", "amount": "5.00"}
    await _post(client, keys["cs"], f"/{second}/platform-refunds", refund, 201)
    counts = await _counts(db)
    refused = await client.post(
        f"/api/v1/aftersales/{second}/withdraw", json={}, headers=auth(keys["cs"])
    )
    assert (refused.status_code, refused.json()["code"]) == (
        409,
        "aftersales.illegal_transition",
    )
    assert await _counts(db) == counts


async def test_receipt_is_confirmed_after_the_window_unless_a_case_is_open(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given three delivered orders: one on Taobao (10 days), one of ours (7 days), one with a case
    taobao, _ = await paid_order(db, None, "delivered", channel="taobao", external_id="TB-9")
    ours, _ = await paid_order(db, None, "delivered")
    waiting, _ = await paid_order(db, None, "delivered", external_id="W-1")
    await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": waiting.order_no,
            "type": "refund_only",
            "reason_code": "x",
            "refund_goods": "1.00",
        },
        201,
    )
    # When 8 days pass and the job runs
    clock.advance(timedelta(days=8))
    async with db.transaction() as session:
        counts = await lifecycle.confirm_due_receipts(session, clock.now())
    # Then only our own channel's order completed; the case keeps its order open
    assert counts == {"completed": 1, "waiting_for_case": 1}
    assert [await order_status(db, o.order_no) for o in (taobao, ours, waiting)] == [
        "delivered",
        "completed",
        "delivered",
    ]
    # When the platform confirms the Taobao order early (with its record as evidence)
    r = await client.post(
        f"/api/v1/aftersales/orders/{taobao.order_no}/confirm-receipt",
        json={"by": "platform", "evidence_ref": "taobao:trade:TB-9:confirmed"},
        headers=auth(keys["cs"]),
    )
    # Then it is completed through the platform's row of the transition table
    assert r.json() == {"order_no": taobao.order_no, "status": "completed"}


async def test_a_step_past_its_sla_opens_one_exception_case(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    from ordertally.exceptions import service as exceptions_service

    # Given a case left requested
    order, _ = await paid_order(db, None, "delivered")
    await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": order.order_no,
            "type": "refund_only",
            "reason_code": "x",
            "refund_goods": "1.00",
        },
        201,
    )
    # When the SLA job runs before and after the 48 h a request may wait, twice
    async with db.transaction() as session:
        early = await lifecycle.open_sla_cases(session, clock.now())
    clock.advance(timedelta(hours=49))
    for _ in range(2):
        async with db.transaction() as session:
            await lifecycle.open_sla_cases(session, clock.now())
    # Then one exception case shows it in the workbench
    async with db.transaction(write=False) as session:
        open_cases = await exceptions_service.open_cases(session, order.id)
    assert early == 0
    assert [(c.type, c.detail["status"]) for c in open_cases] == [("aftersale_sla", "requested")]


async def test_a_returned_bundle_comes_back_as_its_components(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered order for one gift box (2 × TEA-LJ-250 + 1 × CUP-CER-01)
    await add_bundle(db, "GIFT-RET-1", {"TEA-LJ-250": 2, "CUP-CER-01": 1})
    order, _ = await paid_order(
        db, None, "delivered", lines=[{"sku": "GIFT-RET-1", "quantity": 1, "unit_price": "99.00"}]
    )
    tea_before = await on_hand_and_ledger(db, "TEA-LJ-250")
    cup_before = await on_hand_and_ledger(db, "CUP-CER-01")
    # When cs opens a return of the box, it arrives with its case, and the box is inspected good
    case = await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": order.order_no,
            "type": "return_refund",
            "reason_code": "no_longer_wanted",
            "lines": [{"line_no": 1, "quantity": 1}],
            "refund_goods": "99.00",
        },
        201,
    )
    case_no = case["case_no"]
    await _post(client, keys["cs"], f"/{case_no}/approve", {})
    parcel = await _post(
        client,
        keys["warehouse"],
        "/parcels",
        {"warehouse": TEST_WAREHOUSE, "case_no": case_no},
        201,
    )
    assert parcel["case"]["status"] == "returned"
    await _post(
        client,
        keys["warehouse"],
        f"/{case_no}/inspection",
        {"warehouse": TEST_WAREHOUSE, "lines": [{"line_no": 1, "good": 1, "damaged": 0}]},
    )
    # Then the ledger took back the components (a bundle has no stock of its own)
    tea_after, cup_after = (
        await on_hand_and_ledger(db, "TEA-LJ-250"),
        await on_hand_and_ledger(db, "CUP-CER-01"),
    )
    assert tea_after[0] == tea_before[0] + 2 and tea_after[0] == tea_after[1]
    assert cup_after[0] == cup_before[0] + 1 and cup_after[0] == cup_after[1]
    # and the doctor counts the box's stocked units against the ledger's returns
    checks = {c.name: c for c in await run_checks(db, get_settings())}
    assert checks["aftersales_returned_stock"].data == {"inspected": 3, "returned_movements": 3}


async def test_the_buyers_message_is_sealed_at_rest_and_shown_by_role(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a shipped order, and a case customer service opens with the buyer's own words
    order = await make_order(db, "shipped")
    words = "茶叶罐压坏了，电话13812345678"
    case = await _post(
        client,
        keys["cs"],
        "",
        {
            "order_no": order.order_no,
            "type": "refund_only",
            "reason_code": "damaged",
            "refund_goods": "10.00",
            "buyer_message": words,
        },
        201,
    )
    case_no = case["case_no"]
    # Then no part of the words lies in clear in the table
    async with db.transaction(write=False) as session:
        stored = await session.scalar(
            text("SELECT buyer_message FROM aftersale_case WHERE case_no = :no"), {"no": case_no}
        )
        dump = " ".join(
            str(v)
            for row in (await session.execute(text("SELECT * FROM aftersale_case"))).all()
            for v in row
        )
    assert stored.startswith("aesgcm:") and "茶叶" not in dump and "13812345678" not in dump

    # And the roles that handle the case read them; finance and the warehouse see a mask
    async def shown(role: str) -> Any:
        r = await client.get(f"/api/v1/aftersales/{case_no}", headers=auth(keys[role]))
        assert r.status_code == 200, r.text
        return r.json()["buyer_message"]

    assert [await shown(r) for r in ("cs", "ops", "admin")] == [words] * 3
    assert [await shown(r) for r in ("finance", "warehouse")] == ["****", "****"]
    # And a row written before messages were sealed still reads as it was stored
    async with db.transaction() as session:
        await session.execute(
            text("UPDATE aftersale_case SET buyer_message = :m WHERE case_no = :no"),
            {"m": "旧的留言", "no": case_no},
        )
    assert await shown("cs") == "旧的留言"
