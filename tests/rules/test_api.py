"""The rules API: a condition that fails to compile is refused with its error and saves
nothing; every change is a version; a stale version is refused; templates install once;
roles are checked."""

import httpx
import pytest

from ordertally.core.db import Database
from ordertally.rules import templates
from tests.factories import auth

pytestmark = pytest.mark.anyio

RULE = {
    "code": "ops.big",
    "name": "大单审核 / big orders",
    "trigger": "order.paid",
    "condition": "order.total_minor > 100000",
    "actions": [{"kind": "hold", "reason": "big order"}],
}


async def test_a_condition_that_fails_to_compile_is_refused_with_its_error(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # When ops save a rule whose condition does not parse
    r = await client.post(
        "/api/v1/rules",
        json={**RULE, "condition": "order.total_minor >> 1"},
        headers=auth(keys["ops"]),
    )
    # Then a problem document carries CEL's message, and no rule exists
    assert (r.status_code, r.json()["code"]) == (422, "rule.condition_invalid")
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "Syntax error" in r.json()["detail"]
    # And one that compiles but compares money with a string is refused too
    r = await client.post(
        "/api/v1/rules",
        json={**RULE, "condition": "order.total_minor > '1000'"},
        headers=auth(keys["ops"]),
    )
    assert (r.status_code, r.json()["code"]) == (422, "rule.condition_invalid")
    assert "No such overload" in r.json()["detail"]
    r = await client.get("/api/v1/rules", headers=auth(keys["ops"]))
    assert r.json() == {"items": []}


async def test_every_change_is_a_version(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a saved rule (disabled by default); cs may read it but not save one
    r = await client.post("/api/v1/rules", json=RULE, headers=auth(keys["cs"]))
    assert (r.status_code, r.json()["code"]) == (403, "auth.forbidden")
    r = await client.post("/api/v1/rules", json=RULE, headers=auth(keys["ops"]))
    assert r.status_code == 201
    rule = r.json()
    assert (rule["version"], rule["enabled"], rule["updated_by"]) == (1, False, "ops-tester")
    # When the condition changes and then the rule is enabled
    r = await client.patch(
        f"/api/v1/rules/{rule['id']}",
        json={"version": 1, "condition": "order.total_minor > 200000"},
        headers=auth(keys["ops"]),
    )
    assert (r.status_code, r.json()["version"]) == (200, 2)
    r = await client.patch(
        f"/api/v1/rules/{rule['id']}", json={"enabled": True}, headers=auth(keys["admin"])
    )
    assert (r.json()["version"], r.json()["enabled"]) == (3, True)
    # Then each version is kept, newest first
    r = await client.get(f"/api/v1/rules/{rule['id']}", headers=auth(keys["cs"]))
    assert [(v["version"], v["condition"], v["enabled"]) for v in r.json()["versions"]] == [
        (3, "order.total_minor > 200000", True),
        (2, "order.total_minor > 200000", False),
        (1, "order.total_minor > 100000", False),
    ]
    # When an edit is based on a stale version, or breaks the condition
    stale = await client.patch(
        f"/api/v1/rules/{rule['id']}",
        json={"version": 1, "enabled": False},
        headers=auth(keys["ops"]),
    )
    broken = await client.patch(
        f"/api/v1/rules/{rule['id']}", json={"condition": "order."}, headers=auth(keys["ops"])
    )
    # Then both are refused and the rule is unchanged
    assert (stale.status_code, stale.json()["code"]) == (409, "rule.exists")
    assert (broken.status_code, broken.json()["code"]) == (422, "rule.condition_invalid")
    r = await client.get(f"/api/v1/rules/{rule['id']}", headers=auth(keys["ops"]))
    assert (r.json()["version"], r.json()["enabled"]) == (3, True)
    # And a taken code is refused
    r = await client.post("/api/v1/rules", json=RULE, headers=auth(keys["ops"]))
    assert (r.status_code, r.json()["code"]) == (409, "rule.exists")


async def test_templates_install_once_on_where_the_issue_says(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # When ops install the built-in templates, twice
    first = await client.post("/api/v1/rules/templates/install", json={}, headers=auth(keys["ops"]))
    again = await client.post("/api/v1/rules/templates/install", json={}, headers=auth(keys["ops"]))
    # Then each is a rule once, enabled as its template says
    assert first.status_code == 200
    assert {(r["code"], r["enabled"]) for r in first.json()["installed"]} == {
        (t.code, t.enabled) for t in templates.TEMPLATES
    }
    assert again.json() == {"installed": []}
    r = await client.get("/api/v1/rules/templates", headers=auth(keys["cs"]))
    assert all(t["installed"] for t in r.json()["items"])
    # And an unknown template is refused
    r = await client.post(
        "/api/v1/rules/templates/install", json={"codes": ["nope"]}, headers=auth(keys["ops"])
    )
    assert (r.status_code, r.json()["code"]) == (422, "rule.template_unknown")


async def test_the_facts_document_lists_triggers_and_actions(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    r = await client.get("/api/v1/rules/facts", headers=auth(keys["cs"]))
    doc = r.json()
    assert [t["name"] for t in doc["triggers"]][:2] == ["order.created", "order.paid"]
    assert sorted(doc["triggers"][0]["facts"]) == ["channel", "customer", "lines", "order", "stock"]
    assert [a["kind"] for a in doc["actions"]] == [
        "customer_flag",
        "flag",
        "hold",
        "notify",
        "open_case",
        "set_sub_status",
        "tag",
    ]
