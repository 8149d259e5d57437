"""The exception workbench, the rules and the review queue in a real browser (Debian's
Chromium through Playwright) against the real server on PostgreSQL (one database keeps CI
short; the HTTP tests cover both): ops hands a case to finance, refused without the refund
approval and then made with it, and finance resolves it; ops writes a rule whose condition is
refused, fixes it, dry-runs it and enables it; cs passes an order waiting in review. Each
screen is photographed in both languages when ORDERTALLY_SCREENSHOTS=1."""

from __future__ import annotations

import os

import pytest
from playwright.async_api import Browser

from ordertally.core.db import Database
from ordertally.rules.models import Rule
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.orders.test_review import CUP, _auto, _paid
from tests.rules.helpers import hits, run
from tests.web import browser
from tests.web.browser import CasesList, ReviewQueue, RuleEditor, RulesList
from tests.web.helpers import count, make_user
from tests.web.test_browser_screens import both_languages, signed_in_page
from tests.web.test_case_actions import log, open_case, state

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["pg"], indirect=True),
]
BIG = [{"sku": "TEA-LJ-250", "quantity": 10, "unit_price": "59.90"}]  # 599.00
SMALL = [{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}]


async def test_ops_hands_a_refund_case_to_finance_who_resolves_it(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given a refund after fulfilment (cs owns it; finance needs the refund approval) and a
    # late delayed delivery, an ops user and a finance user, each in their own browser
    case_id = await open_case(db, "refund_after_fulfilment")
    await open_case(db, "delivery_delay", hours_ago=30)
    await make_user(db, "liuyang", "ops")
    await make_user(db, "caiwu", "finance")
    ops = await signed_in_page(chromium, base, "liuyang")
    # When ops opens the case from the workbench
    cases = await CasesList(ops, base).open()
    await both_languages(ops, "cases")
    detail = await cases.open_case(case_id)
    assert (await detail.state(), await detail.owner()) == ("open", "cs")
    # And hands it to finance without the refund approval
    await detail.hand_off("finance", {}, "买家申请退款")
    # Then the refusal says what is missing, and nothing changed
    assert await detail.error() == "转交给财务需要以下凭证：退款审批。"
    assert await state(db, case_id) == ("open", "cs", None, None)
    # When ops hands it off again with the approval's number
    await detail.hand_off("finance", {"refund_approval": "OA-2026-1204-17"}, "已批退款")
    # Then finance owns it, in progress
    assert await detail.flash() == "异常已转交。"
    assert (await detail.state(), await detail.owner()) == ("in_progress", "finance")
    await both_languages(ops, "case-detail")
    # When finance opens it, takes it and resolves it with a code
    finance = await signed_in_page(chromium, base, "caiwu")
    mine = await CasesList(finance, base).open()
    detail = await mine.open_case(case_id)
    await detail.assign_to_me()
    await detail.resolve("refunded", "已原路退款")
    # Then the case is resolved with its code, and its log tells the whole story
    assert await state(db, case_id) == ("resolved", "finance", "caiwu", "refunded")
    assert await detail.log_actions() == ["opened", "handed_off", "assigned", "resolved"]
    assert [who for _, who, _ in await log(db, case_id)] == [
        "system",
        "user:liuyang",
        "user:caiwu",
        "user:caiwu",
    ]
    await both_languages(finance, "case-resolved")


async def photograph_dry_run(editor: RuleEditor) -> None:
    """The saved rule's editor with a dry run's result, in both languages (a language switch
    reloads the page, so the dry run is run again in each)."""
    if os.environ.get("ORDERTALLY_SCREENSHOTS") != "1":
        return
    for locale in ("en", "zh_CN"):
        assert (await editor.dry_run(7))[0] == 1
        await browser.screenshot(editor.page, "rule-editor")
        await editor.switch_language(locale)


async def test_ops_writes_a_rule_fixes_its_condition_dry_runs_and_enables_it(
    chromium: Browser, live_server: LiveServer, db: Database
) -> None:
    base = live_server.url
    # Given a big and a small order of the last days and an ops user
    big = await make_order(db, lines=BIG)
    await make_order(db, lines=SMALL)
    await run(db)
    # (the first evaluation saved the built-in rules that are on by default: counted from here)
    rules_before = await count(db, Rule)
    await make_user(db, "yunying", "ops")
    page = await signed_in_page(chromium, base, "yunying")
    rules = await RulesList(page, base).open()
    editor = await rules.new_rule()
    # When ops writes a rule whose condition compares money with text, and saves it
    await editor.write(
        "vip.big_order",
        "大额订单人工确认",
        "order.created",
        "order.total_minor > '50000'",
        {"kind": "hold", "reason": "大额订单", "pool": "amount_confirm"},
    )
    await editor.save()
    # Then the refusal is shown beside the condition and nothing is saved
    assert (await editor.field_error("condition")).startswith("未通过：the condition does not")
    assert await count(db, Rule) == rules_before
    # When ops fixes the condition and dry-runs it over the last 7 days
    await editor.set_condition("order.total_minor > 50000")
    matched, evaluated, subjects = await editor.dry_run(7)
    # Then the big order alone would have matched
    assert (matched, evaluated, subjects) == (1, 2, [big.order_no])
    # When ops saves it and switches it on
    await editor.save()
    assert await editor.state() == "disabled"
    await photograph_dry_run(editor)
    await editor.enable()
    # Then it is enabled as version 2, and it fires on the next big order only
    assert await editor.versions() == ["2", "1"]
    again = await make_order(db, lines=BIG)
    await make_order(db, lines=SMALL)
    await run(db)
    assert [h.subject for h in await hits(db)] == [again.order_no]
    await page.reload()
    await both_languages(page, "rule-detail")
    listing = await RulesList(page, base).open()
    listed = await listing.rules()
    assert listed["vip.big_order"] == "yes" and len(listed) == rules_before + 1
    await both_languages(page, "rules")


async def test_cs_passes_an_order_waiting_in_review(
    chromium: Browser, live_server: LiveServer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = live_server.url
    # Given the auto-review on with CUP excluded, and a paid CUP order it held
    _auto(monkeypatch, excluded_skus='["CUP-CER-01"]')
    order_no = await _paid(db, CUP)
    await make_user(db, "kefu", "cs")
    page = await signed_in_page(chromium, base, "kefu")
    # When cs opens the review queue
    queue = await ReviewQueue(page, base).open()
    # Then the order waits with its reason in words
    assert await queue.waiting() == [order_no]
    assert await queue.reasons(order_no) == ["含排除的商品"]
    await both_languages(page, "review")
    # When cs passes it / Then the queue is empty
    await queue.pass_order(order_no)
    assert await queue.waiting() == []


async def test_cs_holds_edits_and_passes_an_order_waiting_in_review(
    chromium: Browser, live_server: LiveServer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.factories import add_warehouse, receive
    from tests.orders.test_review_actions import _order

    base = live_server.url
    # Given a paid CUP order the auto-review held, and a second warehouse stocking CUP
    _auto(monkeypatch, excluded_skus='["CUP-CER-01"]')
    order_no = await _paid(db, CUP)
    await add_warehouse(db, "WH-HZ", province="浙江省")
    await receive(db, "WH-HZ", "CUP-CER-01", 3)
    await make_user(db, "kefu", "cs")
    page = await signed_in_page(chromium, base, "kefu")
    queue = await ReviewQueue(page, base).open()
    # When cs holds it, waiting for the buyer
    await queue.hold(order_no, "等买家确认")
    # Then it stays in the queue, marked held with the reason
    assert await queue.waiting() == [order_no]
    assert await queue.held(order_no) == "已挂起: 等买家确认"
    # When cs writes a remark and moves it to WH-HZ
    await queue.edit(order_no, remark="买家要求杭州仓发货", warehouse="WH-HZ")
    # Then the queue shows both, and the order ships from WH-HZ
    assert await queue.shown(order_no, "remark") == "备注: 买家要求杭州仓发货"
    assert await queue.shown(order_no, "warehouses") == "仓库: WH-HZ"
    await both_languages(page, "review-held")
    order, warehouses = await _order(db, order_no)
    assert (order.remark, warehouses) == ("买家要求杭州仓发货", {"WH-HZ"})
    # When cs passes it / Then the queue is empty
    await queue.pass_order(order_no)
    assert await queue.waiting() == []
