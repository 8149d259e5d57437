"""The orders HTTP API over the real app and database."""

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import OrderEvent, PiiAccess, SalesOrder
from tests.factories import auth, make_order, order_body

pytestmark = pytest.mark.anyio


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_create_order(client: AsyncClient, keys: dict[str, str], db: Database) -> None:
    # When ops creates an order
    response = await client.post(
        "/api/v1/orders", json=order_body(discount="10.00"), headers=auth(keys["ops"])
    )
    # Then it exists, pending payment, with amounts as decimal strings and masked phones
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "pending_payment"
    assert order["order_no"].startswith("OT") and len(order["order_no"]) == 20
    assert response.headers["location"] == f"/api/v1/orders/{order['order_no']}"
    assert (order["subtotal"], order["discount"], order["total"]) == ("159.70", "10.00", "149.70")
    assert order["currency"] == "CNY" and order["fx_rate"] == "1"
    assert order["customer"] == {"name": "张*", "phone": "138****5678"}
    assert order["shipping_address"]["phone"] == "139****4321"
    assert order["shipping_address"]["name"] == "李*"
    # the discount is split across lines by largest remainder and adds up
    assert [(li["sku"], li["total"], li["discount"]) for li in order["lines"]] == [
        ("TEA-LJ-250", "112.30", "7.50"),
        ("CUP-CER-01", "37.40", "2.50"),
    ]
    assert order["created_at"].endswith("Z")
    assert await _count(db, OrderEvent) == 1
    assert await _count(db, OutboxEvent) == 1
    # personal data is not stored in clear
    async with db.transaction(write=False) as session:
        row = (await session.scalars(select(SalesOrder))).one()
    assert "13812345678" not in row.customer_phone_enc and "张三" not in row.customer_name_enc


async def test_same_key_same_body_replays(client: AsyncClient, keys: dict[str, str], db: Database):
    headers = auth(keys["ops"], **{"Idempotency-Key": "order-1"})
    first = await client.post("/api/v1/orders", json=order_body(), headers=headers)
    second = await client.post("/api/v1/orders", json=order_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert await _count(db, SalesOrder) == 1


async def test_same_key_other_body_is_refused(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    headers = auth(keys["ops"], **{"Idempotency-Key": "order-1"})
    await client.post("/api/v1/orders", json=order_body(), headers=headers)
    response = await client.post("/api/v1/orders", json=order_body(currency="USD"), headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency.mismatch"
    assert await _count(db, SalesOrder) == 1


async def test_keys_are_scoped_to_the_api_key(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    for role in ("ops", "cs"):
        response = await client.post(
            "/api/v1/orders",
            json=order_body(channel=f"shop_{role}"),
            headers=auth(keys[role], **{"Idempotency-Key": "shared"}),
        )
        assert response.status_code == 201
    assert await _count(db, SalesOrder) == 2


async def test_failed_request_releases_its_key(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    headers = auth(keys["ops"], **{"Idempotency-Key": "k"})
    bad = await client.post("/api/v1/orders", json=order_body(currency="XYZ"), headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "money.unknown_currency"
    good = await client.post("/api/v1/orders", json=order_body(), headers=headers)
    assert good.status_code == 201
    assert await _count(db, SalesOrder) == 1


async def test_same_external_id_returns_the_existing_order(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    body = order_body(channel="jd", external_id="JD-778899")
    first = await client.post("/api/v1/orders", json=body, headers=auth(keys["ops"]))
    second = await client.post("/api/v1/orders", json=body, headers=auth(keys["ops"]))
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["order_no"] == second.json()["order_no"]
    assert await _count(db, SalesOrder) == 1
    assert await _count(db, OutboxEvent) == 1


async def test_suspected_duplicate_is_flagged_as_a_hold(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    first = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    second = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    assert (first.status_code, second.status_code) == (201, 201)
    holds = second.json()["holds"]
    assert len(holds) == 1
    assert holds[0]["type"] == "suspected_duplicate" and holds[0]["blocking"] is True
    assert holds[0]["detail"]["duplicate_of"] == first.json()["order_no"]
    assert first.json()["holds"] == []
    assert await _count(db, ExceptionCase) == 1


async def test_suspected_duplicate_rejected_by_policy(
    client: AsyncClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.core.settings import reset_settings

    monkeypatch.setenv("ORDERTALLY_DUPLICATE_POLICY", "reject")
    reset_settings()
    first = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    second = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    assert second.status_code == 409
    assert second.json()["code"] == "order.suspected_duplicate"
    assert second.json()["duplicate_of"] == first.json()["order_no"]
    assert await _count(db, SalesOrder) == 1


async def test_authentication_and_roles(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    no_key = await client.post("/api/v1/orders", json=order_body())
    assert no_key.status_code == 401 and no_key.json()["code"] == "auth.unauthenticated"
    bad_key = await client.get("/api/v1/orders", headers=auth("ot_not-a-real-key"))
    assert bad_key.status_code == 401
    warehouse = await client.post(
        "/api/v1/orders", json=order_body(), headers=auth(keys["warehouse"])
    )
    assert warehouse.status_code == 403 and warehouse.json()["code"] == "auth.forbidden"
    finance = await client.post(
        "/api/v1/orders/OT000/cancel", json={}, headers=auth(keys["finance"])
    )
    assert finance.status_code == 403
    assert await _count(db, SalesOrder) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "paid"}, "status"),
        ({"total": "0.01"}, "total"),
        ({"lines": []}, "lines"),
        ({"currency": "cny"}, "currency"),
        ({"lines": [{"sku": "A", "quantity": 0, "unit_price": "1.00"}]}, "quantity"),
        ({"lines": [{"sku": "A", "quantity": 1, "unit_price": "-1.00"}]}, "unit_price"),
        ({"lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00", "role": "admin"}]}, "role"),
        ({"channel": "JD Shop!"}, "channel"),
    ],
)
async def test_invalid_bodies_are_refused(
    client: AsyncClient, keys: dict[str, str], db: Database, change: dict, field: str
) -> None:
    response = await client.post(
        "/api/v1/orders", json=order_body(**change), headers=auth(keys["ops"])
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "request.invalid"
    assert any(field in [str(p) for p in e["loc"]] for e in problem["errors"]), problem
    assert await _count(db, SalesOrder) == 0


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"lines": [{"sku": "A", "quantity": 1, "unit_price": "1.234"}]}, "money.invalid"),
        ({"discount": "500.00"}, "order.invalid"),
        ({"currency": "USD"}, "money.fx_rate_unavailable"),
        ({"customer": {"name": "x", "phone": "12"}}, "customer.invalid_phone"),
    ],
)
async def test_domain_validation(
    client: AsyncClient, keys: dict[str, str], db: Database, change: dict, code: str
) -> None:
    response = await client.post(
        "/api/v1/orders", json=order_body(**change), headers=auth(keys["ops"])
    )
    assert response.json()["code"] == code
    assert response.status_code in (409, 422)
    assert await _count(db, SalesOrder) == 0


async def test_foreign_currency_locks_the_rate(
    client: AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.core.settings import reset_settings

    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043", "JPY": "0.0472"}')
    reset_settings()
    usd = await client.post(
        "/api/v1/orders", json=order_body(currency="USD"), headers=auth(keys["ops"])
    )
    jpy = await client.post(
        "/api/v1/orders",
        json=order_body(currency="JPY", lines=[{"sku": "A", "quantity": 3, "unit_price": "1500"}]),
        headers=auth(keys["ops"]),
    )
    assert usd.json()["fx_rate"] == "7.10430000"
    assert (jpy.json()["total"], jpy.json()["fx_rate"]) == ("4500", "0.04720000")


async def test_oversized_body_is_413(client: AsyncClient, keys: dict[str, str], db: Database):
    body = order_body()
    body["customer"]["name"] = "x" * 1_100_000
    response = await client.post("/api/v1/orders", json=body, headers=auth(keys["ops"]))
    assert response.status_code == 413
    assert response.json()["code"] == "request.too_large"

    async def chunks():
        yield orjson.dumps(body)[:600_000]
        yield orjson.dumps(body)[600_000:]

    chunked = await client.post(
        "/api/v1/orders",
        content=chunks(),
        headers=auth(keys["ops"], **{"content-type": "application/json"}),
    )
    assert chunked.status_code == 413
    assert await _count(db, SalesOrder) == 0


async def test_get_list_and_paginate(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    created = [
        await make_order(db, status, channel=ch)
        for status, ch in [
            ("pending_payment", "jd"),
            ("paid", "jd"),
            ("paid", "taobao"),
            ("closed", "jd"),
            ("paid", "jd"),
        ]
    ]
    one = await client.get(f"/api/v1/orders/{created[1].order_no}", headers=auth(keys["warehouse"]))
    assert one.status_code == 200 and one.json()["status"] == "paid"
    assert len(one.json()["lines"]) == 2
    missing = await client.get("/api/v1/orders/OT000", headers=auth(keys["cs"]))
    assert missing.status_code == 404 and missing.json()["code"] == "order.not_found"

    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "paid", "channel": "jd", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/orders", params=params, headers=auth(keys["cs"]))).json()
        seen += [item["order_no"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [created[4].order_no, created[1].order_no]

    too_big = await client.get("/api/v1/orders", params={"limit": 1000}, headers=auth(keys["cs"]))
    assert too_big.status_code == 422
    bad_status = await client.get(
        "/api/v1/orders", params={"status": "lost"}, headers=auth(keys["cs"])
    )
    assert bad_status.status_code == 422
    naive = await client.get(
        "/api/v1/orders", params={"created_from": "2026-01-01T00:00:00"}, headers=auth(keys["cs"])
    )
    assert naive.status_code == 422
    ranged = await client.get(
        "/api/v1/orders",
        params={"created_from": "2000-01-01T00:00:00+08:00", "created_to": "2000-01-02T00:00:00Z"},
        headers=auth(keys["cs"]),
    )
    assert ranged.json() == {"items": [], "next_cursor": None}


async def test_cancel_and_audit_trail(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    order = await make_order(db)
    url = f"/api/v1/orders/{order.order_no}"
    first = await client.post(
        f"{url}/cancel", json={"reason": "buyer asked"}, headers=auth(keys["cs"])
    )
    again = await client.post(f"{url}/cancel", headers=auth(keys["cs"]))
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == again.json()["status"] == "closed"
    trail = await client.get(f"{url}/events", headers=auth(keys["finance"]))
    assert [
        (e["event"], e["from_status"], e["to_status"], e["actor_kind"]) for e in trail.json()
    ] == [
        ("create", None, "pending_payment", "api"),
        ("cancel", "pending_payment", "closed", "operator"),
    ]
    assert trail.json()[1]["actor_id"] == "cs-tester"
    assert trail.json()[1]["source_ip"] == "203.0.113.7"
    assert trail.json()[1]["note"] == "buyer asked"
    paid = await make_order(db, "paid")
    refused = await client.post(f"/api/v1/orders/{paid.order_no}/cancel", headers=auth(keys["cs"]))
    assert refused.status_code == 409 and refused.json()["code"] == "order.illegal_transition"
    warehouse = await client.get(f"{url}/events", headers=auth(keys["warehouse"]))
    assert warehouse.status_code == 403


async def test_contact_is_unmasked_and_logged(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    order = await make_order(db)
    url = f"/api/v1/orders/{order.order_no}/contact"
    response = await client.get(url, params={"reason": "courier call"}, headers=auth(keys["ops"]))
    assert response.json()["customer_phone"] == "+8613812345678"
    assert response.json()["shipping_address"]["line1"] == "世纪大道1号"
    assert await _count(db, PiiAccess) == 1
    refused = await client.get(url, params={"reason": "curious"}, headers=auth(keys["finance"]))
    assert refused.status_code == 403
    assert await _count(db, PiiAccess) == 1


async def test_resolve_hold(client: AsyncClient, keys: dict[str, str], db: Database) -> None:
    await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    dup = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    case_id = dup.json()["holds"][0]["id"]
    resolved = await client.post(
        f"/api/v1/exceptions/{case_id}/resolve",
        json={"resolution": "genuine second order"},
        headers=auth(keys["ops"]),
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    again = await client.post(
        f"/api/v1/exceptions/{case_id}/resolve",
        json={"resolution": "x"},
        headers=auth(keys["ops"]),
    )
    assert again.status_code == 409
    order = await client.get(f"/api/v1/orders/{dup.json()['order_no']}", headers=auth(keys["ops"]))
    assert order.json()["holds"] == []


async def test_health_ready_metrics_and_unknown_routes(
    client: AsyncClient, keys: dict[str, str]
) -> None:
    await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    text = (await client.get("/metrics")).text
    for name in (
        "ordertally_orders_created_total",
        "ordertally_outbox_backlog 1.0",
        "ordertally_outbox_oldest_age_seconds",
        'ordertally_http_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/api/v1/orders",status="201"}',
    ):
        assert name in text
    missing = await client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
