"""The rules screen over HTTP (both databases): a condition that does not compile is refused
beside its field and nothing is saved; the fixed rule saves as version 1; its dry run over
the last days matches what it then does once enabled; enabling is a new version; the firing
log and the counts show the firings; the built-in templates install once; cs reads, only
ops and admin write."""

from __future__ import annotations

import re

import pytest

from ordertally.core.db import Database
from ordertally.rules import templates
from ordertally.rules.conditions import TRIGGERS, compile_condition
from ordertally.rules.models import Rule, RuleVersion
from ordertally.web import rules_desk
from tests.factories import make_order
from tests.rules.helpers import hits, run
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio

BIG = [{"sku": "TEA-LJ-250", "quantity": 10, "unit_price": "59.90"}]  # 599.00
SMALL = [{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}]
RULE = {
    "code": "vip.big_order",
    "name": "大额订单人工确认",
    "trigger": "order.created",
    "a0.kind": "hold",
    "a0.reason": "大额订单",
    "a0.pool": "amount_confirm",
    "days": "7",
}


async def test_ops_writes_a_rule_fixes_its_condition_dry_runs_and_enables_it(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a big and a small order from the last days, and ops on the editor
    big = await make_order(db, lines=BIG)
    await make_order(db, lines=SMALL)
    await run(db)
    # (the first evaluation saved the built-in rules that are on by default: counted from here)
    rules, versions = await count(db, Rule), await count(db, RuleVersion)
    ops = await signed_in("ops")
    editor = await ops.get("/ui/rules/new")
    assert editor.status_code == 200 and 'name="condition"' in editor.text
    token = csrf_of(editor.text)
    # When ops saves a condition comparing money with a string
    bad = await ops.post(
        "/ui/rules",
        data={**RULE, "csrf_token": token, "condition": "order.total_minor > '50000'"},
    )
    # Then it is refused beside the condition, the form kept, and no rule saved
    assert bad.status_code == 422
    error = re.search(r'data-field-error="condition">([^<]+)<', bad.text)
    assert error and error.group(1).startswith("未通过：the condition does not type-check")
    assert "order.total_minor &gt; &#39;50000&#39;" in bad.text
    assert await count(db, Rule) == rules and await count(db, RuleVersion) == versions
    # When ops dry-runs the fixed condition over the last 7 days (htmx: the result block alone)
    fixed = {**RULE, "csrf_token": token, "condition": "order.total_minor > 50000"}
    dry = await ops.post("/ui/rules/dry-run", data=fixed, headers={"hx-request": "true"})
    # Then one of the two orders would have matched, the big one, and nothing was written
    assert dry.status_code == 200 and "<html" not in dry.text
    assert re.findall(r'data-dry="(\w+)">(\d+)<', dry.text) == [
        ("matched", "1"),
        ("evaluated", "2"),
    ]
    assert re.findall(r'data-dry-match="([^"]+)"', dry.text) == [big.order_no]
    assert await count(db, Rule) == rules
    # When ops saves it (disabled), then enables it
    saved = await ops.post("/ui/rules", data=fixed)
    assert saved.status_code == 303
    rule_path = saved.headers["location"].split("?")[0]
    page = await ops.get(saved.headers["location"])
    assert "规则已保存（第 1 版）。" in page.text and 'data-rule-state="disabled"' in page.text
    enabled = await ops.post(
        f"{rule_path}/enabled", data={"csrf_token": token, "enabled": "1", "version": "1"}
    )
    assert enabled.status_code == 303
    # Then it is version 2 and enabled, with both versions in its history
    page = await ops.get(rule_path)
    assert 'data-rule-state="enabled"' in page.text
    assert re.findall(r'data-rule-version="(\d+)"', page.text) == ["2", "1"]
    assert 'data-empty="hits"' in page.text
    # When a new big and a new small order arrive and the rule runs
    again = await make_order(db, lines=BIG)
    await make_order(db, lines=SMALL)
    await run(db)
    # Then it fired for the big one only, as the dry run said, shown in its log and the list
    assert [h.subject for h in await hits(db)] == [again.order_no]
    page = await ops.get(rule_path)
    assert len(re.findall(r'<tr data-hit="\d+">', page.text)) == 1
    assert f'<a href="/ui/orders/{again.order_no}">' in page.text
    listing = await ops.get("/ui/rules")
    row = re.search(
        r'<tr data-rule="vip.big_order" data-enabled="yes">(.*?)</tr>', listing.text, re.S
    )
    assert row
    assert re.search(r"data-version>2<", row.group(1)) and re.search(r"data-hits>1<", row.group(1))
    # And an edit with a stale version is refused, keeping version 2
    stale = await ops.post(
        rule_path, data={**fixed, "version": "1", "condition": "order.total_minor > 1"}
    )
    assert stale.status_code == 409 and 'data-field-error="form"' in stale.text
    assert await count(db, RuleVersion) == versions + 2
    # And a new version with a changed condition saves as version 3
    edited = await ops.post(
        rule_path, data={**fixed, "version": "2", "condition": "order.total_minor > 60000"}
    )
    assert edited.status_code == 303 and await count(db, RuleVersion) == versions + 3


async def test_action_and_code_refusals_are_shown_beside_their_fields(
    signed_in: SignedInClient, db: Database
) -> None:
    admin = await signed_in("admin")
    token = csrf_of((await admin.get("/ui/rules/new")).text)
    base = {**RULE, "csrf_token": token, "condition": "order.quantity > 5"}
    # A tag action on a stock schedule is refused beside the actions
    wrong = await admin.post(
        "/ui/rules",
        data={**base, "trigger": "schedule.stock", "condition": "stock.available < 1",
              "a0.kind": "tag", "a0.tag": "x"},
    )  # fmt: skip
    assert wrong.status_code == 422 and 'data-field-error="actions"' in wrong.text
    # No action at all, and a bad code, are said plainly
    bare = await admin.post("/ui/rules", data={**base, "a0.kind": "", "code": "Bad Code"})
    assert bare.status_code == 422
    assert 'data-field-error="code"' in bare.text and 'data-field-error="actions"' in bare.text
    # The same code twice is refused beside the code
    assert (await admin.post("/ui/rules", data=base)).status_code == 303
    twice = await admin.post("/ui/rules", data=base)
    assert twice.status_code == 409 and "已有使用此代码的规则。" in twice.text
    assert await count(db, Rule) == 1
    # Changing an action's kind loads that kind's fields (htmx)
    fields = await admin.get("/ui/rules/action-fields", params={"i": "1", "a1.kind": "notify"})
    assert 'name="a1.target"' in fields.text and 'name="a1.message"' in fields.text
    assert "<html" not in fields.text
    # Changing the trigger shows the facts that trigger offers (htmx)
    facts = await admin.get("/ui/rules/facts", params={"trigger": "schedule.channel"})
    assert 'data-facts-of="schedule.channel"' in facts.text and "<html" not in facts.text
    assert "empty_pulls" in facts.text and "total_minor" not in facts.text


async def test_the_templates_install_once_and_cs_reads_without_writing(
    signed_in: SignedInClient, db: Database
) -> None:
    ops = await signed_in("ops")
    cs = await signed_in("cs")
    page = await ops.get("/ui/rules")
    assert 'data-empty="rules"' in page.text
    token = csrf_of(page.text)
    # When ops installs every template, twice
    first = await ops.post("/ui/rules/templates/install", data={"csrf_token": token})
    second = await ops.post("/ui/rules/templates/install", data={"csrf_token": token})
    assert first.status_code == second.status_code == 303
    # Then each is a rule once, enabled as the template says
    listing = await ops.get("/ui/rules")
    found = dict(re.findall(r'<tr data-rule="([^"]+)" data-enabled="(\w+)">', listing.text))
    assert found == {t.code: ("yes" if t.enabled else "no") for t in templates.TEMPLATES}
    assert await count(db, Rule) == len(templates.TEMPLATES)
    # And cs sees the rules and a rule's page, with no editor and no switch
    seen = await cs.get("/ui/rules")
    assert seen.status_code == 200 and 'data-action="enable"' not in seen.text
    assert 'data-action="new-rule"' not in seen.text
    rule_id = re.search(r'href="/ui/rules/(\d+)"', seen.text)
    assert rule_id
    detail = await cs.get(f"/ui/rules/{rule_id.group(1)}")
    assert detail.status_code == 200 and 'id="rule-form"' not in detail.text
    # But may not write: the editor, a save, a switch and a dry run are refused
    cs_token = csrf_of(seen.text)
    assert (await cs.get("/ui/rules/new")).status_code == 403
    for path in ("/ui/rules", f"/ui/rules/{rule_id.group(1)}/enabled", "/ui/rules/dry-run"):
        refused = await cs.post(path, data={**RULE, "csrf_token": cs_token, "enabled": "0"})
        assert refused.status_code == 403, path
    assert await count(db, RuleVersion) == len(templates.TEMPLATES)


def test_every_example_shown_under_the_facts_compiles_for_its_triggers() -> None:
    # The editor's example for each trigger's subject passes the same check as a save
    for trigger in TRIGGERS.values():
        compiled = compile_condition(rules_desk.EXAMPLES[trigger.subject], trigger.name)
        assert compiled.trigger.subject == trigger.subject
