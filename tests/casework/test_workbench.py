"""The exception workbench over real HTTP on both databases: seeded scenarios open exactly the
expected cases with their policy, every action is logged with who and from where, a hand-off
without its evidence is refused and writes nothing, filters and keyset pages are exact."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.auth.models import ROLES
from ordertally.casework.schemas import PolicyIn, Role
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import SEVERITIES, ExceptionCase, ExceptionLog
from tests.factories import auth, make_order, order_body

pytestmark = pytest.mark.anyio


async def _counts(db: Database) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        cases = await session.scalar(select(func.count()).select_from(ExceptionCase))
        logs = await session.scalar(select(func.count()).select_from(ExceptionLog))
    return int(cases or 0), int(logs or 0)


async def _open(db: Database, order_id: int | None, type_: str, **kw: Any) -> int:
    async with db.transaction() as session:
        return await exceptions_service.open_case(
            session,
            order_id=order_id,
            category=kw.get("category", "payment"),
            type=type_,
            blocking=kw.get("blocking", False),
            detail={},
        )


async def test_a_duplicate_order_opens_exactly_one_case_shown_on_the_order(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order, and the same buyer sending the same order again
    first = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    second = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    assert (first.status_code, second.status_code) == (201, 201), second.text
    # Then exactly one case exists: the second order's suspected duplicate, with its policy
    assert (await _counts(db))[0] == 1
    doc = (
        await client.get(f"/api/v1/orders/{second.json()['order_no']}", headers=auth(keys["cs"]))
    ).json()
    assert [(c["type"], c["category"], c["owner_role"], c["state"]) for c in doc["cases"]] == [
        ("suspected_duplicate", "system", "cs", "open")
    ]
    assert [entry["action"] for entry in doc["cases"][0]["log"]] == ["opened"]
    other = (
        await client.get(f"/api/v1/orders/{first.json()['order_no']}", headers=auth(keys["cs"]))
    ).json()
    assert other["cases"] == []


async def test_working_a_case_logs_who_when_and_from_where(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a double payment case on a paid order (finance owns it)
    order = await make_order(db, "paid")
    case_id = await _open(db, order.id, "double_payment")
    h = auth(keys["cs"])
    # When cs assigns it, comments, hands it to the warehouse (no evidence asked) and resolves
    r = await client.post(f"/api/v1/cases/{case_id}/assign", json={"assignee": "小王"}, headers=h)
    assert (r.status_code, r.json()["state"], r.json()["assignee"]) == (200, "in_progress", "小王")
    r = await client.post(
        f"/api/v1/cases/{case_id}/comments",
        json={"text": "买家已联系", "attachments": ["s3://evidence/chat.png"]},
        headers=h,
    )
    assert r.status_code == 201
    r = await client.post(
        f"/api/v1/cases/{case_id}/hand-off",
        json={"to_role": "warehouse", "evidence": {"return_receipt": "RR-1"}},
        headers=h,
    )
    assert (r.status_code, r.json()["owner_role"]) == (200, "warehouse")
    r = await client.post(
        f"/api/v1/cases/{case_id}/resolve",
        json={"code": "refunded", "resolution": "退回重复款"},
        headers=h,
    )
    assert (r.json()["state"], r.json()["resolution_code"]) == ("resolved", "refunded")
    # Then every step is in the log with the key's name and the client's address
    log = r.json()["log"]
    assert [(x["action"], x["actor"], x["source_ip"]) for x in log] == [
        ("opened", "system", None),
        ("assigned", "cs-tester", "203.0.113.7"),
        ("commented", "cs-tester", "203.0.113.7"),
        ("handed_off", "cs-tester", "203.0.113.7"),
        ("resolved", "cs-tester", "203.0.113.7"),
    ]
    assert log[2]["detail"] == {"attachments": ["s3://evidence/chat.png"]}
    # And it reopens with a fresh clock, and cancels
    r = await client.post(
        f"/api/v1/cases/{case_id}/reopen", json={"reason": "买家再次反馈"}, headers=h
    )
    assert (r.json()["state"], r.json()["resolution_code"]) == ("open", None)
    r = await client.post(f"/api/v1/cases/{case_id}/cancel", json={"reason": "误开"}, headers=h)
    assert r.json()["state"] == "cancelled"
    r = await client.post(f"/api/v1/cases/{case_id}/cancel", json={"reason": "again"}, headers=h)
    assert (r.status_code, r.json()["code"]) == (409, "exceptions.not_active")


async def test_a_hand_off_without_its_evidence_is_refused_and_writes_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a double payment case (finance needs the refund approval)
    order = await make_order(db, "paid")
    case_id = await _open(db, order.id, "double_payment")
    before = await _counts(db)
    # When cs hands it to finance without the approval
    r = await client.post(
        f"/api/v1/cases/{case_id}/hand-off",
        json={"to_role": "finance", "evidence": {"note": "x"}},
        headers=auth(keys["cs"]),
    )
    # Then it is refused with a clear code, and neither the case nor its log changed
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (r.json()["code"], r.json()["missing"]) == (
        "exceptions.evidence_missing",
        ["refund_approval"],
    )
    assert await _counts(db) == before
    shown = (await client.get(f"/api/v1/cases/{case_id}", headers=auth(keys["cs"]))).json()
    assert (shown["owner_role"], shown["state"], len(shown["log"])) == ("finance", "open", 1)
    # And with the approval it goes through
    r = await client.post(
        f"/api/v1/cases/{case_id}/hand-off",
        json={"to_role": "finance", "evidence": {"refund_approval": "OA-2026-77"}},
        headers=auth(keys["cs"]),
    )
    assert r.status_code == 200


async def test_filters_facets_and_keyset_pages(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given cases on orders of two channels and SKUs, and one without an order
    mini = await make_order(db, "paid")
    shop = await make_order(
        db,
        "paid",
        channel="douyin",
        lines=[{"sku": "A", "quantity": 1, "unit_price": "9.90"}],
    )
    ids = [
        await _open(db, mini.id, "double_payment"),
        await _open(db, mini.id, "tracking_stale", category="fulfillment"),
        await _open(db, shop.id, "tracking_stale", category="fulfillment"),
        await _open(db, shop.id, "sku_unmapped", category="channel"),
        await _open(db, None, "unknown_trade"),
    ]
    h = auth(keys["ops"])
    # When the list is walked two at a time
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/cases", params=params, headers=h)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Then every case appears once, newest first, and the facets count them all
    assert seen == sorted(ids, reverse=True)
    assert page["facets"]["category"] == {"customer": 1, "system": 2, "supply_chain": 2}

    async def ids_of(**params: Any) -> list[int]:
        r = await client.get("/api/v1/cases", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert await ids_of(channel="douyin") == [ids[3], ids[2]]
    assert await ids_of(sku="A") == [ids[3], ids[2]]
    assert await ids_of(sku="TEA-LJ-250", type="tracking_stale") == [ids[1]]
    assert await ids_of(category="supply_chain", order_no=mini.order_no) == [ids[1]]
    assert await ids_of(role="finance") == [ids[4], ids[0]]
    assert await ids_of(breached=True) == []
    assert await ids_of(due_within_minutes=8 * 60) == [ids[4], ids[3], ids[0]]
    bad = await client.get("/api/v1/cases", params={"cursor": "nope"}, headers=h)
    assert (bad.status_code, bad.json()["code"]) == (400, "casework.bad_cursor")


async def test_a_policy_edit_applies_to_new_cases(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given ops sets the stale tracking policy to 30 minutes, owned by cs
    body = {
        "sla_minutes": 30,
        "warn_minutes": 10,
        "owner_role": "cs",
        "severity": "high",
        "evidence": {"finance": ["refund_approval"]},
        "notify_on_open": True,
    }
    r = await client.put(
        "/api/v1/case-policies/tracking_stale", json=body, headers=auth(keys["ops"])
    )
    assert (r.status_code, r.json()["owner_role"], r.json()["category"]) == (
        200,
        "cs",
        "supply_chain",
    )
    refused = await client.put(
        "/api/v1/case-policies/tracking_stale", json=body, headers=auth(keys["cs"])
    )
    assert refused.status_code == 403
    unknown = await client.put(
        "/api/v1/case-policies/no_such", json=body, headers=auth(keys["ops"])
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "exceptions.unknown_type")
    # When a case of the type opens, it follows the stored policy
    order = await make_order(db, "paid")
    case_id = await _open(db, order.id, "tracking_stale")
    shown = (await client.get(f"/api/v1/cases/{case_id}", headers=auth(keys["cs"]))).json()
    assert (shown["owner_role"], shown["severity"]) == ("cs", "high")
    async with db.transaction(write=False) as session:
        case = await exceptions_service.get_case(session, case_id)
    assert (case.due_at - case.created_at).total_seconds() == 30 * 60


def test_the_schemas_know_every_role_and_severity() -> None:
    assert set(get_args(Role)) == set(ROLES)
    assert set(get_args(PolicyIn.model_fields["severity"].annotation)) == set(SEVERITIES)
