"""The order review queue (审单) over HTTP (both databases): cs sees the orders the auto-review
held, with its reasons in words, and passes them; a rule's finance review follows in finance's
queue; each stage is refused to the other's roles with the reason shown, changing nothing; the
warehouse may not open the screen."""

from __future__ import annotations

import re

import pytest

from ordertally.core.db import Database
from ordertally.rules import service as rules_service
from tests.orders.test_review import CUP, TEA, _auto, _paid, _status, _sweep
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of

pytestmark = pytest.mark.anyio


async def test_cs_then_finance_pass_the_orders_waiting_in_review(
    signed_in: SignedInClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the auto-review on, CUP excluded, and a rule sending big orders to finance
    _auto(monkeypatch, excluded_skus='["CUP-CER-01"]')
    async with db.transaction() as session:
        await rules_service.create_rule(
            session,
            code="finance.big",
            name="大额订单财审",
            trigger="order.created",
            condition="order.total_minor > 5000",
            rule_actions=[{"kind": "hold", "pool": "finance_review", "reason": "big"}],
            enabled=True,
            by="tests",
        )
    big = await _paid(db, TEA)  # 59.90: the rule holds it for finance
    cup = await _paid(db, CUP)  # 39.90, excluded SKU
    cs = await signed_in("cs")
    finance = await signed_in("finance")
    # When cs open the review screen
    page = await cs.get("/ui/review")
    # Then both orders wait in cs's queue, each with its reasons in words
    assert page.status_code == 200 and 'data-nav="review"' in page.text
    assert re.findall(r'<tr data-review="([^"]+)">', page.text) == [big, cup]
    assert 'data-reason="rule_asks_review">规则要求审核<' in page.text
    assert 'data-reason="excluded_sku">含排除的商品<' in page.text
    # When finance tries to pass cs's stage / Then refused with the reason, nothing changed
    finance_page = await finance.get("/ui/review?stage=cs")
    refused = await finance.post(
        f"/ui/review/{cup}/pass", data={"csrf_token": csrf_of(finance_page.text), "stage": "cs"}
    )
    assert refused.status_code == 403
    assert (
        f'data-review-error="{cup}"' in refused.text
        and "您的角色不能通过这一审核环节。" in refused.text
    )
    assert len(re.findall(r"<tr data-review=", (await cs.get("/ui/review")).text)) == 2
    # When cs pass both
    token = csrf_of(page.text)
    first = await cs.post(f"/ui/review/{big}/pass", data={"csrf_token": token, "stage": "cs"})
    second = await cs.post(f"/ui/review/{cup}/pass", data={"csrf_token": token, "stage": "cs"})
    # Then the big one moves to finance's queue, the cup one is passed and allocates
    assert first.headers["location"] == "/ui/review?stage=cs&done=finance"
    assert second.headers["location"] == "/ui/review?stage=cs&done=passed"
    assert "客审已通过：订单等待财审。" in (await cs.get(first.headers["location"])).text
    assert await _sweep(db) == 1
    assert (await _status(db, cup), await _status(db, big)) == ("allocated", "paid")
    # When cs try to pass it again / Then it is not waiting at their stage any more
    again = await cs.post(f"/ui/review/{big}/pass", data={"csrf_token": token, "stage": "cs"})
    assert again.status_code == 403
    # When finance opens its queue (its default) and passes the big order
    queue = await finance.get("/ui/review")
    assert re.findall(r'<tr data-review="([^"]+)">', queue.text) == [big]
    assert 'data-stage-count="finance">1<' in queue.text
    done = await finance.post(
        f"/ui/review/{big}/pass", data={"csrf_token": csrf_of(queue.text), "stage": "finance"}
    )
    # Then it is passed and allocates
    assert done.status_code == 303
    assert await _sweep(db) == 1
    assert await _status(db, big) == "allocated"
    assert 'data-empty="review"' in (await finance.get("/ui/review")).text
    # And the warehouse may not open the screen
    warehouse = await signed_in("warehouse")
    assert (await warehouse.get("/ui/review")).status_code == 403


async def test_cs_hold_and_edit_an_order_from_the_queue(
    signed_in: SignedInClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.factories import add_warehouse, receive
    from tests.orders.test_review_actions import _order, _trail

    # Given an order held by the auto-review, and a second warehouse stocking its SKU
    _auto(monkeypatch, excluded_skus='["CUP-CER-01"]')
    cup = await _paid(db, CUP)
    await add_warehouse(db, "WH-HZ", province="浙江省")
    await receive(db, "WH-HZ", "CUP-CER-01", 3)
    cs = await signed_in("cs")
    page = await cs.get("/ui/review")
    token = csrf_of(page.text)
    assert f'data-hold-form="{cup}"' in page.text and '<option value="WH-HZ">' in page.text
    # When cs hold it without a reason / Then refused with the field named, nothing written
    empty = await cs.post(f"/ui/review/{cup}/hold", data={"csrf_token": token, "reason": " "})
    assert empty.status_code == 422 and "请检查这些字段：reason" in empty.text
    assert await _trail(db, cup) == []
    # When cs hold it with a reason
    held = await cs.post(
        f"/ui/review/{cup}/hold", data={"csrf_token": token, "reason": "等买家回复"}
    )
    assert held.headers["location"] == "/ui/review?stage=cs&done=held"
    page = await cs.get(held.headers["location"])
    assert "订单已挂起，原因已记录。" in page.text
    assert f'data-held="{cup}">已挂起: 等买家回复<' in page.text
    assert f'data-hold-form="{cup}"' not in page.text
    # When they hold it again (an old tab) / Then refused with the reason
    again = await cs.post(f"/ui/review/{cup}/hold", data={"csrf_token": token, "reason": "x"})
    assert again.status_code == 409 and "订单已经挂起。" in again.text
    # When they edit the remark and move it to WH-HZ, without CSRF first
    form = {"remark": "改发杭州仓", "warehouse": "WH-HZ", "stage": "cs"}
    forged = await cs.post(f"/ui/review/{cup}/edit", data=form)
    assert forged.status_code == 403
    edited = await cs.post(f"/ui/review/{cup}/edit", data={"csrf_token": token, **form})
    assert edited.headers["location"] == "/ui/review?stage=cs&done=edited"
    page = await cs.get(edited.headers["location"])
    assert f'data-remark="{cup}">备注: 改发杭州仓<' in page.text
    assert f'data-warehouses="{cup}">仓库: WH-HZ<' in page.text
    order, warehouses = await _order(db, cup)
    assert (order.remark, warehouses, order.status) == ("改发杭州仓", {"WH-HZ"}, "paid")
    # When they give part of an address / Then refused, nothing changed
    part = await cs.post(
        f"/ui/review/{cup}/edit",
        data={"csrf_token": token, "address_name": "王五", "stage": "cs"},
    )
    assert part.status_code == 422 and "shipping_address" in part.text
    assert await _trail(db, cup) == [
        ("review_hold", "paid", "paid", "operator"),
        ("review_edit", "paid", "paid", "operator"),
    ]
    # When cs pass it / Then the hold is lifted and it allocates from WH-HZ
    await cs.post(f"/ui/review/{cup}/pass", data={"csrf_token": token, "stage": "cs"})
    assert await _sweep(db) == 1
    assert await _status(db, cup) == "allocated"
