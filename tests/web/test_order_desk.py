"""The orders screen's saved views and bulk actions over HTTP (both databases): a view saved,
applied, shared by an admin and deleted by whom may; bulk actions previewed with their count
and sample, confirmed, run by the worker once (a second run changes nothing), offered only to
the roles that may take them; every refusal changes nothing."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from sqlalchemy import select

from ordertally.casework import batch as casework_batch
from ordertally.casework import repository as casework_repository
from ordertally.casework.models import BatchAction, BatchAudit
from ordertally.core.db import Database
from ordertally.orders import service as orders_service
from ordertally.orders.models import SavedView
from tests.factories import make_order
from tests.payments.helpers import make_attempt, paid_notice, store_and_apply
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio
_VIEW = re.compile(r'data-view="([^"]+)"')


async def _views(db: Database) -> list[tuple[str, str, bool, dict]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(select(SavedView).order_by(SavedView.id))
        return [(v.owner, v.name, v.shared, v.query) for v in rows.all()]


async def test_a_saved_view_is_listed_applied_shared_by_an_admin_and_deleted(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given cs and an admin on the orders screen
    cs = await signed_in("cs")
    admin = await signed_in("admin")
    token = csrf_of((await cs.get("/ui/orders")).text)
    admin_token = csrf_of((await admin.get("/ui/orders")).text)
    # When cs saves the unpaid Douyin orders with a search as a view
    filters = {"q": "张三", "status": "pending_payment", "channel": "douyin", "created_from": ""}
    saved = await cs.post(
        "/ui/orders/views", data={"csrf_token": token, "view_name": "抖音待付款", **filters}
    )
    # Then it is stored for cs with its query, and the screen lists it and links to it
    assert saved.status_code == 303
    assert "done=view_saved" in saved.headers["location"]
    owner, name, shared, query = (await _views(db))[0]
    assert (owner, name, shared) == ("cs-1", "抖音待付款", False)
    assert query["q"] == "张三" and query["status"] == "pending_payment"
    page = await cs.get("/ui/orders")
    assert _VIEW.findall(page.text) == ["抖音待付款"]
    link = re.search(r'data-view="抖音待付款">\s*<a href="([^"]+)"', page.text)
    assert link and "status=pending_payment" in link.group(1)
    applied = await cs.get(unquote(link.group(1).replace("&amp;", "&")))
    assert 'aria-current="true"' in applied.text
    # And cs may not share a view (nothing saved); a nameless view is refused (nothing saved)
    share = await cs.post(
        "/ui/orders/views",
        data={"csrf_token": token, "view_name": "全员", "shared": "1", **filters},
    )
    nameless = await cs.post("/ui/orders/views", data={"csrf_token": token, "view_name": " "})
    forged = await cs.post("/ui/orders/views", data={"view_name": "无令牌"})
    assert share.status_code == 403 and "data-view-error" in share.text
    assert nameless.status_code == 422 and "请为视图命名" in nameless.text
    assert forged.status_code == 403
    assert len(await _views(db)) == 1
    # When the admin shares a view, cs sees it but may not delete it; the admin may
    await admin.post(
        "/ui/orders/views",
        data={"csrf_token": admin_token, "view_name": "已付款", "shared": "1", "status": "paid"},
    )
    listed = await cs.get("/ui/orders")
    assert _VIEW.findall(listed.text) == ["已付款", "抖音待付款"]  # shared first
    shared_id = next(v.id for v in await _all_views(db) if v.shared)
    refused = await cs.post(f"/ui/orders/views/{shared_id}/delete", data={"csrf_token": token})
    assert refused.status_code == 403 and len(await _views(db)) == 2
    deleted = await admin.post(
        f"/ui/orders/views/{shared_id}/delete", data={"csrf_token": admin_token}
    )
    assert deleted.status_code == 303
    assert [v[1] for v in await _views(db)] == ["抖音待付款"]
    # And saving again under the same name replaces the query
    await cs.post(
        "/ui/orders/views",
        data={"csrf_token": token, "view_name": "抖音待付款", "status": "paid"},
    )
    assert [(v[1], v[3]["status"]) for v in await _views(db)] == [("抖音待付款", "paid")]


async def _all_views(db: Database) -> list[SavedView]:
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(SavedView))).all())


async def _tags(db: Database, order_id: int) -> list[str]:
    async with db.transaction(write=False) as session:
        return await casework_repository.tags_of(session, order_id)


async def _run_queued(db: Database) -> list[str]:
    async with db.transaction(write=False) as session:
        ids = await casework_batch.queued(session)
    return [await casework_batch.run(db, i) for i in ids]


async def test_ticked_orders_are_tagged_by_a_previewed_confirmed_batch_once(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given three paid orders and ops on the orders screen, which offers the bulk actions
    orders = [await make_order(db, "paid") for _ in range(3)]
    ops = await signed_in("ops")
    page = await ops.get("/ui/orders")
    assert 'data-action="bulk-preview"' in page.text and 'value="cancel_unpaid"' in page.text
    token = csrf_of(page.text)
    # When ops ticks two of them and previews tagging them
    picked = [orders[0].order_no, orders[2].order_no]
    made = await ops.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "picked", "action": "tag", "tag": "vip",
              "order_no": picked},
    )  # fmt: skip
    # Then a previewed batch shows the two, and nothing is tagged yet
    assert made.status_code == 303
    batch_path = made.headers["location"]
    preview = await ops.get(batch_path)
    assert 'data-batch-state="previewed"' in preview.text
    assert 'data-batch-action="tag"' in preview.text
    assert re.search(r'data-batch="total">2<', preview.text)
    assert sorted(re.findall(r'data-sample="([^"]+)"', preview.text)) == sorted(picked)
    assert [await _tags(db, o.id) for o in orders] == [[], [], []]
    # When ops confirms and the worker runs it
    confirmed = await ops.post(f"{batch_path}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 303
    assert await _run_queued(db) == ["done"]
    # Then exactly the two are tagged, with one audit row each
    assert [await _tags(db, o.id) for o in orders] == [["vip"], [], ["vip"]]
    done = await ops.get(batch_path, headers={"hx-target": "batch-progress"})
    assert re.search(r'data-batch="changed">2<', done.text)
    assert await count(db, BatchAudit) == 2
    # And the same action previewed and confirmed again changes nothing
    again = await ops.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "picked", "action": "tag", "tag": "vip",
              "order_no": picked},
    )  # fmt: skip
    await ops.post(f"{again.headers['location']}/confirm", data={"csrf_token": token})
    assert await _run_queued(db) == ["done"]
    async with db.transaction(write=False) as session:
        second = (await session.scalars(select(BatchAction).order_by(BatchAction.id))).all()[-1]
    assert (second.processed, second.changed) == (2, 0)
    assert [await _tags(db, o.id) for o in orders] == [["vip"], [], ["vip"]]


async def test_all_unpaid_orders_matching_the_filter_are_cancelled_and_the_paid_kept(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two unpaid orders, a paid one, and an unpaid one whose payment attempt received
    # money in a wrong amount (the payment timeout would keep it open)
    unpaid = [await make_order(db, "pending_payment") for _ in range(2)]
    paid = await make_order(db, "paid")
    money_in = await make_order(db, "pending_payment")
    attempt = await make_attempt(db, money_in)
    assert (await store_and_apply(db, paid_notice(attempt, amount_minor=1)))[1] == (
        "amount_mismatch"
    )
    cs = await signed_in("cs")
    token = csrf_of((await cs.get("/ui/orders?status=pending_payment")).text)
    # When cs previews cancelling all orders awaiting payment, confirms, and the worker runs it
    made = await cs.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "scope": "all", "action": "cancel_unpaid",
              "status": "pending_payment", "note": "buyer asked"},
    )  # fmt: skip
    preview = await cs.get(made.headers["location"])
    assert re.search(r'data-batch="total">3<', preview.text)
    await cs.post(f"{made.headers['location']}/confirm", data={"csrf_token": token})
    assert await _run_queued(db) == ["done"]
    # Then both are closed by the operator's cancel; the paid order and the one with money
    # received stay as they were, the latter audited as unchanged
    async with db.transaction(write=False) as session:
        after = {o.order_no: o.status for o in await orders_service.get_orders_by_id(
            session, [o.id for o in [*unpaid, paid, money_in]])}  # fmt: skip
        events = await orders_service.events_of(session, unpaid[0].order_no)
        audit = await session.execute(select(BatchAudit.order_id, BatchAudit.outcome))
        outcomes = {int(i): str(o) for i, o in audit.all()}
    assert after == {unpaid[0].order_no: "closed", unpaid[1].order_no: "closed",
                     paid.order_no: "paid", money_in.order_no: "pending_payment"}  # fmt: skip
    assert outcomes == {unpaid[0].id: "changed", unpaid[1].id: "changed",
                        money_in.id: "unchanged"}  # fmt: skip
    assert (events[-1].event, events[-1].note) == ("cancel", "buyer asked")
    assert events[-1].actor_id.startswith("batch:")


async def test_bulk_actions_are_offered_by_role_and_bad_input_changes_nothing(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an order, and a warehouse user and cs on the orders screen
    order = await make_order(db, "paid")
    warehouse = await signed_in("warehouse")
    cs = await signed_in("cs")
    page = await warehouse.get("/ui/orders")
    # Then the warehouse is offered no bulk action, and one posted anyway is refused
    assert 'data-action="bulk-preview"' not in page.text and "data-pick=" not in page.text
    refused = await warehouse.post(
        "/ui/orders/bulk",
        data={"csrf_token": csrf_of(page.text), "scope": "picked", "action": "hold",
              "order_no": [order.order_no]},
    )  # fmt: skip
    assert refused.status_code == 403
    # And cs posting nothing ticked, no tag, an unknown action, or no CSRF token is refused
    token = csrf_of((await cs.get("/ui/orders")).text)
    none = await cs.post(
        "/ui/orders/bulk", data={"csrf_token": token, "scope": "picked", "action": "hold"}
    )
    untagged = await cs.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "action": "tag", "order_no": [order.order_no]},
    )
    unknown = await cs.post(
        "/ui/orders/bulk",
        data={"csrf_token": token, "action": "delete_all", "order_no": [order.order_no]},
    )
    forged = await cs.post("/ui/orders/bulk", data={"action": "hold", "order_no": [order.order_no]})
    assert none.status_code == 422 and "请先勾选订单" in none.text
    assert untagged.status_code == 422 and "请填写要打的标签" in untagged.text
    assert unknown.status_code == 422 and "请选择一个操作" in unknown.text
    assert forged.status_code == 403
    assert await count(db, BatchAction) == 0
