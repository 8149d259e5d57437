"""The bulk remark and the batch page's selection in words, over HTTP (both databases): ops
sets the seller's remark on two ticked orders through preview and confirm (one audit row each,
a second batch changes nothing); the batch page says what it selected in zh-CN and English; the
warehouse is refused, an empty remark and a missing CSRF token change nothing."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from ordertally.casework.models import BatchAction
from ordertally.core.db import Database
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from tests.factories import make_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of
from tests.web.test_order_desk import _run_queued

pytestmark = pytest.mark.anyio


async def _remarks(db: Database, ids: list[int]) -> list[str | None]:
    async with db.transaction(write=False) as session:
        found = dict((await session.execute(select(SalesOrder.id, SalesOrder.remark))).all())
    return [found[i] for i in ids]


def _selection(html: str) -> str:
    match = re.search(r"<td data-batch-filters>([^<]*)</td>", html)
    assert match, "no selection on the batch page"
    return match.group(1)


async def test_ops_sets_a_remark_on_ticked_orders_through_preview_and_confirm(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given three paid orders and ops on the orders screen, which offers the bulk remark
    orders = [await make_order(db, "paid") for _ in range(3)]
    ops = await signed_in("ops")
    page = await ops.get("/ui/orders")
    assert 'value="remark"' in page.text and 'data-bulk="remark"' in page.text
    token = csrf_of(page.text)
    # When ops ticks two of them and previews the remark
    picked = [orders[0].order_no, orders[2].order_no]
    made = await ops.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "picked", "action": "remark",
              "remark": "顺丰发货 <b>", "order_no": picked},
    )  # fmt: skip
    # Then the batch page says in words which orders and what remark, and nothing changed yet
    assert made.status_code == 303
    path = made.headers["location"]
    preview = await ops.get(path)
    assert 'data-batch-action="remark"' in preview.text
    assert _selection(preview.text) == f"2 个订单：{picked[0]}, {picked[1]}"
    assert "<td data-batch-remark>顺丰发货 &lt;b&gt;</td>" in preview.text
    assert "order_nos" not in preview.text
    ops.cookies.set("ot_lang", "en")
    in_english = await ops.get(path)
    assert _selection(in_english.text) == f"2 orders: {picked[0]}, {picked[1]}"
    assert await _remarks(db, [o.id for o in orders]) == [None, None, None]
    # When ops confirms and the worker runs it
    assert (await ops.post(f"{path}/confirm", data={"csrf_token": token})).status_code == 303
    assert await _run_queued(db) == ["done"]
    # Then exactly the two carry the remark, each with an audit row naming ops
    assert await _remarks(db, [o.id for o in orders]) == ["顺丰发货 <b>", None, "顺丰发货 <b>"]
    async with db.transaction(write=False) as session:
        events = await orders_service.events_of(session, orders[0].order_no)
        untouched = await orders_service.events_of(session, orders[1].order_no)
    assert (events[-1].event, events[-1].note) == ("set_remark", "remark: 顺丰发货 <b>")
    assert re.fullmatch(r"batch:\d+:user:ops[-\w]*", events[-1].actor_id), events[-1].actor_id
    assert all(e.event != "set_remark" for e in untouched)
    # And the same remark again changes nothing
    again = await ops.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "picked", "action": "remark",
              "remark": "顺丰发货 <b>", "order_no": picked},
    )  # fmt: skip
    await ops.post(f"{again.headers['location']}/confirm", data={"csrf_token": token})
    assert await _run_queued(db) == ["done"]
    async with db.transaction(write=False) as session:
        second = (await session.scalars(select(BatchAction).order_by(BatchAction.id))).all()[-1]
    assert (second.processed, second.changed) == (2, 0)


async def test_a_filtered_selection_is_shown_in_words_in_both_languages(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given paid orders and ops filtering the list by status
    await make_order(db, "paid")
    ops = await signed_in("ops")
    token = csrf_of((await ops.get("/ui/orders?status=paid")).text)
    # When ops previews a remark on all orders matching the filter
    made = await ops.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "all", "action": "remark", "status": "paid",
              "remark": "check"},
    )  # fmt: skip
    # Then the batch page names the filter in words, not as JSON
    path = made.headers["location"]
    assert _selection((await ops.get(path)).text) == "状态：已付款"
    ops.cookies.set("ot_lang", "en")
    assert _selection((await ops.get(path)).text) == "status: Paid"


async def test_the_bulk_remark_is_refused_by_role_without_text_or_token(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an order, a warehouse user and cs on the orders screen
    order = await make_order(db, "paid")
    warehouse = await signed_in("warehouse")
    cs = await signed_in("cs")
    page = await warehouse.get("/ui/orders")
    assert 'value="remark"' not in page.text
    # When the warehouse posts a remark anyway, cs posts none, and a post lacks the token
    refused = await warehouse.post(
        "/ui/orders/bulk",
        data={"csrf_token": csrf_of(page.text), "scope": "picked", "action": "remark",
              "remark": "x", "order_no": [order.order_no]},
    )  # fmt: skip
    token = csrf_of((await cs.get("/ui/orders")).text)
    empty = await cs.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "action": "remark", "remark": "  ",
              "order_no": [order.order_no]},
    )  # fmt: skip
    forged = await cs.post(
        "/ui/orders/bulk",
        data={"action": "remark", "remark": "x", "order_no": [order.order_no]},
    )
    # Then each is refused and nothing is created or changed
    assert refused.status_code == 403
    assert empty.status_code == 422 and "请填写备注" in empty.text
    assert forged.status_code == 403
    assert await count(db, BatchAction) == 0
    assert await _remarks(db, [order.id]) == [None]
