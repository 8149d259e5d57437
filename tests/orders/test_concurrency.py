"""Races over real HTTP against a live server: one key, one order; one external id, one order."""

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.idempotency.models import IdempotencyKey
from ordertally.orders.models import OrderEvent, SalesOrder
from tests.conftest import LiveServer
from tests.factories import auth, order_body

pytestmark = pytest.mark.anyio


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _fire(url: str, n: int, headers: dict[str, str], body: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = asyncio.Event()

        async def one() -> httpx.Response:
            await start.wait()
            return await client.post("/api/v1/orders", json=body, headers=headers)

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


async def test_twenty_concurrent_requests_with_one_key_create_one_order(
    live_server: LiveServer, keys: dict[str, str], db: Database
) -> None:
    # Given 20 clients sending the same request with the same Idempotency-Key at once
    headers = auth(keys["ops"], **{"Idempotency-Key": "double-click-1"})
    responses = await _fire(live_server.url, 20, headers, order_body())
    # Then exactly one order exists; every answer is that order or "still in flight"
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert len({r.json()["order_no"] for r in created}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in created) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency.in_flight"
    assert await _count(db, SalesOrder) == 1
    assert await _count(db, OrderEvent) == 1
    assert await _count(db, IdempotencyKey) == 1
    # And a retry after the dust settles replays the stored order
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        again = await client.post("/api/v1/orders", json=order_body(), headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["order_no"] == created[0].json()["order_no"]


async def test_concurrent_same_external_id_creates_one_order(
    live_server: LiveServer, keys: dict[str, str], db: Database
) -> None:
    # Given a channel delivering the same platform order 10 times at once, without keys
    body = order_body(channel="shopify", external_id="gid-450789469")
    responses = await _fire(live_server.url, 10, auth(keys["ops"]), body)
    # Then one is created and the others return it
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["order_no"] for r in responses}) == 1
    assert await _count(db, SalesOrder) == 1
