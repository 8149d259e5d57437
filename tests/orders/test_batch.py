"""Group commit of POST /orders: concurrent requests of one process are created together,
every request still gets its own answer, and anything unusual runs alone exactly as before."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from ordertally.app import create_app
from ordertally.core import ids
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.models import OutboxEvent
from ordertally.idempotency.models import IdempotencyKey
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder
from tests.conftest import LiveServer
from tests.factories import add_warehouse, auth, order_body, receive

pytestmark = pytest.mark.anyio


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _burst(
    client: httpx.AsyncClient, requests: list[tuple[dict[str, Any], dict[str, str]]]
) -> list[httpx.Response]:
    """Send every request at once (the tasks start together, after a gate opens)."""
    gate = asyncio.Event()

    async def one(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        await gate.wait()
        return await client.post("/api/v1/orders", json=body, headers=headers)

    tasks = [asyncio.create_task(one(b, h)) for b, h in requests]
    await asyncio.sleep(0.05)
    gate.set()
    return await asyncio.gather(*tasks)


def _phone(n: int) -> str:
    return f"139{n:08d}"


def _body(n: int, **overrides: Any) -> dict[str, Any]:
    body = order_body(**overrides)
    body["customer"] = {"name": "王五", "phone": _phone(n)}
    return body


async def test_a_burst_is_written_in_batches_and_each_client_gets_its_own_order(
    live_server: LiveServer, keys: dict[str, str], db: Database
) -> None:
    batches_before = _metric("ordertally_order_batch_size_count")
    counted_before = _metric("ordertally_orders_created_total", channel="wechat_mini")
    n = 60
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=live_server.url, limits=limits, timeout=30) as client:
        # When 60 clients create 60 different orders at once over real HTTP
        responses = await _burst(
            client,
            [(_body(i), auth(keys["ops"], **{"Idempotency-Key": f"burst-{i}"})) for i in range(n)],
        )
        # Then each gets 201 with its own order: its phone, its location, its reservations
        assert [r.status_code for r in responses] == [201] * n
        docs = [r.json() for r in responses]
        for i, (response, doc) in enumerate(zip(responses, docs, strict=True)):
            assert doc["customer"]["phone"] == f"139****{_phone(i)[-4:]}"
            assert response.headers["location"] == f"/api/v1/orders/{doc['order_no']}"
            assert "idempotent-replayed" not in response.headers
            assert [(r["sku"], r["quantity"], r["state"]) for r in doc["reservations"]] == [
                ("TEA-LJ-250", 2, "held"),
                ("CUP-CER-01", 1, "held"),
            ]
            assert doc["allocation"] is not None and doc["holds"] == []
        assert len({d["order_no"] for d in docs}) == n
        # And what each response says is what a read of the stored order says
        for doc in docs[:5]:
            stored = await client.get(
                f"/api/v1/orders/{doc['order_no']}", headers=auth(keys["ops"])
            )
            assert {k: v for k, v in stored.json().items() if k != "shipments"} == {
                k: v for k, v in doc.items() if k != "shipments"
            }
        # And a repeated key replays the stored response byte for byte
        again = await client.post(
            "/api/v1/orders",
            json=_body(7),
            headers=auth(keys["ops"], **{"Idempotency-Key": "burst-7"}),
        )
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.content == responses[7].content
    # And fewer transactions than orders wrote them, each with everything an order has
    batches = _metric("ordertally_order_batch_size_count") - batches_before
    assert 1 <= batches < n
    # each order counted once (by its batch, per channel), the replay not at all
    counted = _metric("ordertally_orders_created_total", channel="wechat_mini") - counted_before
    assert counted == n
    assert await _count(db, SalesOrder) == n
    assert await _count(db, OrderLine) == 2 * n
    assert await _count(db, OrderEvent) == n
    assert await _count(db, IdempotencyKey) == n
    assert await _count(db, Reservation) == 2 * n
    async with db.transaction(write=False) as session:
        created = await session.scalar(
            select(func.count()).where(OutboxEvent.event_type == "OrderCreated")
        )
        reserved = dict(
            (
                await session.execute(
                    select(Stock.sku, func.sum(Stock.reserved)).group_by(Stock.sku)
                )
            ).all()
        )
    assert created == n
    assert reserved["TEA-LJ-250"] == 2 * n and reserved["CUP-CER-01"] == n


async def test_unusual_requests_in_a_batch_get_the_answers_they_always_got(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    ops = keys["ops"]
    # Given an order stored under a key, and one a channel already sent
    first = await client.post(
        "/api/v1/orders", json=_body(1), headers=auth(ops, **{"Idempotency-Key": "kept"})
    )
    assert first.status_code == 201
    other = await client.post(
        "/api/v1/orders", json=_body(8), headers=auth(ops, **{"Idempotency-Key": "kept-2"})
    )
    assert other.status_code == 201
    channel_body = _body(2, channel="shopify", external_id="gid-1001")
    sent = await client.post("/api/v1/orders", json=channel_body, headers=auth(ops))
    assert sent.status_code == 201
    unkeyed = _body(3)
    original = await client.post("/api/v1/orders", json=unkeyed, headers=auth(ops))
    assert original.status_code == 201
    await add_warehouse(db, "EMPTY")
    await receive(db, "EMPTY", "RARE-1", 1)

    plain = [(_body(100 + i), auth(ops, **{"Idempotency-Key": f"plain-{i}"})) for i in range(10)]
    unusual = [
        (_body(1), auth(ops, **{"Idempotency-Key": "kept"})),  # replay
        (_body(9), auth(ops, **{"Idempotency-Key": "kept-2"})),  # a key, another body
        (channel_body, auth(ops)),  # the channel's order again
        (unkeyed, auth(ops)),  # a suspected duplicate (flagged by default)
        (_body(4, lines=[{"sku": "RARE-1", "quantity": 2, "unit_price": "1.00"}]), auth(ops)),
        (_body(5, discount="9999.00"), auth(ops)),  # invalid
        (_body(6), auth(ops, **{"Idempotency-Key": "twice"})),
        (_body(6), auth(ops, **{"Idempotency-Key": "twice"})),
    ]
    # When they all arrive at once with ten plain ones
    responses = await _burst(client, plain + unusual)
    ok, rest = responses[:10], responses[10:]
    assert [r.status_code for r in ok] == [201] * 10
    replay, mismatch, again, duplicate, short, invalid, twice_a, twice_b = rest
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "idempotency.mismatch"
    assert again.status_code == 200 and again.json()["order_no"] == sent.json()["order_no"]
    assert duplicate.status_code == 201
    assert [h["type"] for h in duplicate.json()["holds"]] == ["suspected_duplicate"]
    assert short.status_code == 409 and short.json()["code"] == "inventory.insufficient"
    assert invalid.status_code == 422 and invalid.json()["code"] == "order.invalid"
    # Two requests with one key: one order; the other replays it or is told it is in flight
    pair = sorted([twice_a, twice_b], key=lambda r: "idempotent-replayed" in r.headers)
    assert pair[0].status_code == 201 and "idempotent-replayed" not in pair[0].headers
    assert (pair[1].status_code, pair[1].headers.get("idempotent-replayed")) in {
        (201, "true"),
        (409, None),
    }
    if pair[1].status_code == 201:
        assert pair[1].content == pair[0].content
    # And the database holds exactly the orders that were answered as new
    assert await _count(db, SalesOrder) == 4 + 10 + 1 + 1
    async with db.transaction(write=False) as session:
        reserved = await session.scalar(
            select(func.sum(Stock.reserved)).where(Stock.sku == "RARE-1")
        )
    assert reserved == 0


async def test_a_batch_that_fails_runs_each_request_alone(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given order numbers that clash (the unique index refuses the batch's INSERT)
    real = ids.order_no
    clashing = itertools.chain(["OT000000000000000001"] * 4)

    def order_no(at: Any) -> str:
        return next(clashing, None) or real(at)

    monkeypatch.setattr(ids, "order_no", order_no)
    failed_before = _metric("ordertally_order_batch_alone_total", reason="error")
    # When a burst arrives
    responses = await _burst(
        client, [(_body(i), auth(keys["ops"], **{"Idempotency-Key": f"f-{i}"})) for i in range(8)]
    )
    # Then every request is answered once, on its own, with its own order
    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["order_no"] for r in responses}) == 8
    assert _metric("ordertally_order_batch_alone_total", reason="error") > failed_before
    assert await _count(db, SalesOrder) == 8
    assert await _count(db, IdempotencyKey) == 8
    assert await _count(db, Reservation) == 16


async def test_two_processes_racing_for_the_last_units_never_oversell(
    keys: dict[str, str], db: Database
) -> None:
    # Given two API processes (two engines, two batchers) on one database
    other = Database(db.url, pool_size=10)
    await add_warehouse(db, "HOT")
    try:
        apps = [create_app(get_settings(), db=db), create_app(get_settings(), db=other)]
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ordertally.test"
            )
            for app in apps
        ]
        for round_no in range(5):
            sku = f"LAST-{round_no}"
            await receive(db, "HOT", sku, 50)
            body_of = [
                _body(
                    1000 * round_no + i, lines=[{"sku": sku, "quantity": 1, "unit_price": "5.00"}]
                )
                for i in range(200)
            ]
            # When 200 buyers want one of the 50 units each, half through each process
            responses = await asyncio.gather(
                _burst(
                    clients[0],
                    [
                        (b, auth(keys["ops"], **{"Idempotency-Key": f"r{round_no}-{i}"}))
                        for i, b in enumerate(body_of)
                        if i % 2 == 0
                    ],
                ),
                _burst(
                    clients[1],
                    [
                        (b, auth(keys["ops"], **{"Idempotency-Key": f"r{round_no}-{i}"}))
                        for i, b in enumerate(body_of)
                        if i % 2 == 1
                    ],
                ),
            )
            responses = responses[0] + responses[1]
            # Then exactly 50 are sold, 150 are refused, and the stock adds up
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201] * 50 + [409] * 150, round_no
            async with db.transaction(write=False) as session:
                on_hand, reserved = (
                    await session.execute(
                        select(func.sum(Stock.on_hand), func.sum(Stock.reserved)).where(
                            Stock.sku == sku
                        )
                    )
                ).one()
                live = await session.scalar(
                    select(func.sum(Reservation.quantity)).where(Reservation.sku == sku)
                )
            assert (on_hand, reserved, live) == (50, 50, 50), round_no
        for c in clients:
            await c.aclose()
    finally:
        await other.dispose()
