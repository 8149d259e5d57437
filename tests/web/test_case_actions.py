"""Working exception cases from the back office over HTTP (both databases): the case page with
its log (who, when, IP), order and evidence; a hand-off refused without the evidence the
policy asks for, then made with it; assign, comment, resolve with a code, reopen, cancel; the
same assign and resolve over cases ticked in the list; every refusal changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from ordertally.casework import batch as casework_batch
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase, ExceptionLog
from tests.factories import make_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio


async def open_case(db: Database, case_type: str = "double_payment", *, hours_ago: int = 0) -> int:
    """A case of a type on a new paid order, opened `hours_ago` hours ago."""
    order = await make_order(db, "paid")
    with clock.frozen(clock.now() - timedelta(hours=hours_ago)):
        async with db.transaction() as session:
            return await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="payment",
                type=case_type,
                blocking=False,
                detail={"order_no": order.order_no},
            )


async def state(db: Database, case_id: int) -> tuple[str, str, str | None, str | None]:
    """(state, owner role, assignee, resolution code) of a case."""
    async with db.transaction(write=False) as session:
        case = await exceptions_service.get_case(session, case_id)
        return case.status, case.owner_role, case.assignee, case.resolution_code


async def log(db: Database, case_id: int) -> list[tuple[str, str, str | None]]:
    """(action, actor, source IP) of a case's log, oldest first."""
    async with db.transaction(write=False) as session:
        rows = await exceptions_service.logs_of(session, [case_id])
    return [(r.action, r.actor, r.source_ip) for r in rows]


async def test_ops_hands_a_double_payment_to_finance_only_with_the_refund_approval(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a refund after fulfilment, owned by cs (finance needs the refund approval), and an
    # ops user on its page
    case_id = await open_case(db, "refund_after_fulfilment")
    ops = await signed_in("ops")
    page = await ops.get(f"/ui/cases/{case_id}")
    assert page.status_code == 200
    assert 'name="ev.refund_approval"' in page.text and 'name="ev.return_receipt"' in page.text
    token = csrf_of(page.text)
    logs_before = await count(db, ExceptionLog)
    # When ops hands it to finance without the approval
    refused = await ops.post(
        f"/ui/cases/{case_id}/hand-off",
        data={"csrf_token": token, "to_role": "finance", "ev.refund_approval": " "},
    )
    # Then it is refused with a clear message and nothing changed
    assert refused.status_code == 409
    assert 'data-error="hand_off"' in refused.text
    assert "转交给财务需要以下凭证：退款审批。" in refused.text
    assert await state(db, case_id) == ("open", "cs", None, None)
    assert await count(db, ExceptionLog) == logs_before
    # When ops hands it to finance with the approval
    made = await ops.post(
        f"/ui/cases/{case_id}/hand-off",
        data={
            "csrf_token": token,
            "to_role": "finance",
            "ev.refund_approval": "OA-2026-1204-17",
            "note": "买家重复付款，已批退款",
        },
    )
    # Then the case is finance's, in progress, and its log names who, from where, with what
    assert made.status_code == 303
    assert made.headers["location"] == f"/ui/cases/{case_id}?done=handed_off"
    assert await state(db, case_id) == ("in_progress", "finance", None, None)
    assert await log(db, case_id) == [
        ("opened", "system", None),
        ("handed_off", "user:ops-1", "203.0.113.8"),
    ]
    shown = await ops.get(made.headers["location"])
    assert "异常已转交。" in shown.text
    assert '<div data-evidence="refund_approval">' in shown.text
    assert "<code>OA-2026-1204-17</code>" in shown.text
    assert "<span data-ip>203.0.113.8</span>" in shown.text
    order_link = re.search(r'href="/ui/orders/([^"]+)" class="mono" data-order-link', shown.text)
    assert order_link
    # And the order's page links back to the case
    order_page = await ops.get(f"/ui/orders/{order_link.group(1)}")
    assert (
        f'<a href="/ui/cases/{case_id}" class="mono" data-case-link="{case_id}">' in order_page.text
    )


async def test_finance_assigns_comments_resolves_reopens_and_cancels(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a late double payment (SLA 4 h, opened 5 h ago) and finance on its page
    case_id = await open_case(db, hours_ago=5)
    finance = await signed_in("finance")
    page = await finance.get(f"/ui/cases/{case_id}")
    assert 'data-sla="breached"' in page.text and "已超时" in page.text
    assert re.search(r'data-timer="late">超时 1 小时 \d+ 分<', page.text)
    listed = await finance.get("/ui/cases")
    assert re.search(r'data-timer="late">超时 1 小时 \d+ 分<', listed.text)
    token = csrf_of(page.text)
    # When finance takes it, comments with an attachment, and resolves it with a code
    taken = await finance.post(
        f"/ui/cases/{case_id}/assign", data={"csrf_token": token, "to": "me"}
    )
    commented = await finance.post(
        f"/ui/cases/{case_id}/comment",
        data={
            "csrf_token": token,
            "text": "已原路退回第二笔",
            "attachments": "refund/4200-1.pdf\n",
        },
    )
    bad_code = await finance.post(
        f"/ui/cases/{case_id}/close",
        data={"csrf_token": token, "code": "Refunded!", "resolution": "退款完成"},
    )
    # (a bad code is refused beside the form, changing nothing)
    assert bad_code.status_code == 422 and 'data-error="resolve"' in bad_code.text
    assert await state(db, case_id) == ("in_progress", "finance", "finance-1", None)
    resolved = await finance.post(
        f"/ui/cases/{case_id}/close",
        data={"csrf_token": token, "code": "refunded", "resolution": "第二笔已退款"},
    )
    # Then each step is in the log and the case is resolved with its code
    assert [r.status_code for r in (taken, commented, resolved)] == [303, 303, 303]
    assert await state(db, case_id) == ("resolved", "finance", "finance-1", "refunded")
    assert [a for a, _, _ in await log(db, case_id)] == [
        "opened",
        "assigned",
        "commented",
        "resolved",
    ]
    page = await finance.get(f"/ui/cases/{case_id}")
    assert '<div data-evidence="attachment">' in page.text and "refund/4200-1.pdf" in page.text
    assert 'data-action="reopen"' in page.text and 'data-action="resolve-case"' not in page.text
    # When it is resolved again, it is refused (the case is not active) and nothing is logged
    again = await finance.post(
        f"/ui/cases/{case_id}/close",
        data={"csrf_token": token, "code": "refunded", "resolution": "again"},
    )
    assert again.status_code == 409 and "异常当前的状态不允许此操作。" in again.text
    assert len(await log(db, case_id)) == 4
    # When finance reopens it and then cancels it
    reopened = await finance.post(
        f"/ui/cases/{case_id}/reopen", data={"csrf_token": token, "reason": "买家说仍未到账"}
    )
    assert reopened.status_code == 303
    assert (await state(db, case_id))[0] == "open"
    cancelled = await finance.post(
        f"/ui/cases/{case_id}/cancel", data={"csrf_token": token, "reason": "误开"}
    )
    assert cancelled.status_code == 303
    assert (await state(db, case_id))[0] == "cancelled"
    # And without the token nothing is done
    forged = await finance.post(f"/ui/cases/{case_id}/reopen", data={"reason": "forged"})
    assert forged.status_code == 403
    assert (await state(db, case_id))[0] == "cancelled"
    assert (await finance.get("/ui/cases/999999")).status_code == 404


async def test_cases_ticked_in_the_list_are_assigned_then_resolved_one_result_each(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given three delayed-delivery cases, one of them already resolved
    ids = [await open_case(db, "delivery_delay") for _ in range(3)]
    async with db.transaction() as session:
        await exceptions_service.resolve(session, ids[2], "tests", "done earlier")
    cs = await signed_in("cs")
    page = await cs.get("/ui/cases")
    assert sorted(int(i) for i in re.findall(r'data-pick="(\d+)"', page.text)) == sorted(ids)
    token = csrf_of(page.text)
    # When cs assigns the three to themselves
    assigned = await cs.post(
        "/ui/cases/bulk",
        data={"csrf_token": token, "bulk_action": "assign_me", "case": [str(i) for i in ids]},
    )
    # Then the two active ones are theirs and the resolved one is refused, each said
    assert assigned.status_code == 200
    results = dict(re.findall(r'data-bulk-result="(\d+)" data-ok="(\w+)"', assigned.text))
    assert results == {str(ids[0]): "yes", str(ids[1]): "yes", str(ids[2]): "no"}
    assert [(await state(db, i))[2] for i in ids] == ["cs-1", "cs-1", None]
    # When cs resolves the two with a code
    resolved = await cs.post(
        "/ui/cases/bulk",
        data={
            "csrf_token": token,
            "bulk_action": "resolve",
            "code": "customer_contacted",
            "resolution": "已短信告知延迟",
            "case": [str(ids[0]), str(ids[1])],
        },
    )
    assert resolved.status_code == 200
    assert [(await state(db, i))[0] for i in ids] == ["resolved"] * 3
    assert [(await state(db, i))[3] for i in ids[:2]] == ["customer_contacted"] * 2
    # And a bulk resolve without its sentence, or with nothing ticked, changes nothing
    before = await count(db, ExceptionLog)
    empty = await cs.post(
        "/ui/cases/bulk",
        data={
            "csrf_token": token,
            "bulk_action": "resolve",
            "code": "fixed",
            "case": [str(ids[0])],
        },
    )
    none = await cs.post("/ui/cases/bulk", data={"csrf_token": token, "bulk_action": "assign_me"})
    assert empty.status_code == 422 and "data-bulk-error" in empty.text
    assert none.status_code == 422 and "请至少选择一个异常。" in none.text
    assert await count(db, ExceptionLog) == before
    assert await count(db, ExceptionCase) == 3


async def test_every_case_of_a_type_is_resolved_as_a_previewed_confirmed_batch(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two delayed deliveries and a stale tracking case, and ops on the list of the first
    delays = [await open_case(db, "delivery_delay") for _ in range(2)]
    other = await open_case(db, "tracking_stale")
    ops = await signed_in("ops")
    page = await ops.get("/ui/cases?type=delivery_delay")
    assert 'id="batch-form"' in page.text
    assert 'id="batch-form"' not in (await ops.get("/ui/cases")).text  # one type first
    token = csrf_of(page.text)
    # When ops previews resolving them all
    made = await ops.post(
        "/ui/cases/batch",
        data={
            "csrf_token": token,
            "type": "delivery_delay",
            "code": "customer_contacted",
            "resolution": "已统一短信告知",
        },
    )
    # Then the batch is previewed with its count and sample, and nothing changed yet
    assert made.status_code == 303
    batch_path = made.headers["location"]
    preview = await ops.get(batch_path)
    assert 'data-batch-state="previewed"' in preview.text
    assert re.search(r'data-batch="total">2<', preview.text)
    assert len(re.findall(r'data-sample="', preview.text)) == 2
    assert [(await state(db, i))[0] for i in delays] == ["open", "open"]
    # When ops confirms it and the worker runs it
    confirmed = await ops.post(f"{batch_path}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 303
    queued = await ops.get(confirmed.headers["location"])
    assert 'data-batch-state="queued"' in queued.text and 'hx-trigger="every 2s"' in queued.text
    async with db.transaction(write=False) as session:
        batch_ids = await casework_batch.queued(session)
    assert [await casework_batch.run(db, i) for i in batch_ids] == ["done"]
    # Then both delays are resolved with the code, the other case is untouched, and the
    # progress block (htmx) shows the counts
    assert [(await state(db, i))[0::3] for i in delays] == [("resolved", "customer_contacted")] * 2
    assert (await state(db, other))[0] == "open"
    progress = await ops.get(batch_path, headers={"hx-target": "batch-progress"})
    assert "<html" not in progress.text and 'data-batch-state="done"' in progress.text
    assert re.search(r'data-batch="changed">2<', progress.text)
    # And a done batch cannot be cancelled; finance may not start a batch; nothing changes
    late = await ops.post(f"{batch_path}/cancel", data={"csrf_token": token})
    assert late.status_code == 409 and "data-batch-error" in late.text
    finance = await signed_in("finance")
    refused = await finance.post(
        "/ui/cases/batch",
        data={
            "csrf_token": csrf_of((await finance.get("/ui/cases")).text),
            "type": "tracking_stale",
            "code": "fixed",
            "resolution": "x",
        },
    )
    assert refused.status_code == 403
    assert (await state(db, other))[0] == "open"
