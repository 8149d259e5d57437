"""The keyless duplicate check is atomic across processes: two real API processes receiving the
same customer + lines + amount at once create it once; every other copy is flagged (held as
`suspected_duplicate`) or refused, as the merchant configured."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from tests.factories import auth, order_body
from tests.live import ordertally_processes

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

COPIES = 50


@contextmanager
def _api_processes(db: Database, policy: str, count: int = 2) -> Iterator[list[str]]:
    """`count` real `ordertally serve` processes on one database; yields their base URLs."""
    env = os.environ.copy()
    env.update(
        ORDERTALLY_DATABASE_URL=db.url,
        ORDERTALLY_DUPLICATE_POLICY=policy,
        ORDERTALLY_BROKER_URL="",
    )
    with ordertally_processes(env, apis=count) as urls:
        yield urls


async def _same_order_everywhere(urls: list[str], key: str) -> list[httpx.Response]:
    """COPIES identical keyless POST /orders, spread over the processes, released together."""
    gate = asyncio.Event()
    body: dict[str, Any] = order_body()
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]

    async def one(n: int) -> httpx.Response:
        await gate.wait()
        return await clients[n % len(clients)].post("/api/v1/orders", json=body, headers=auth(key))

    try:
        tasks = [asyncio.create_task(one(n)) for n in range(COPIES)]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()


async def _orders_and_flags(db: Database) -> tuple[int, int]:
    async with db.transaction(write=False) as session:
        orders = await session.scalar(select(func.count()).select_from(SalesOrder))
        flagged = await session.scalar(
            select(func.count(func.distinct(ExceptionCase.order_id))).where(
                ExceptionCase.type == "suspected_duplicate"
            )
        )
    return int(orders or 0), int(flagged or 0)


async def test_two_processes_flag_every_copy_but_one(db: Database, keys: dict[str, str]) -> None:
    # Given two API processes with the default policy (flag)
    with _api_processes(db, "flag") as urls:
        # When 50 identical keyless orders arrive at once, half through each
        responses = await _same_order_everywhere(urls, keys["ops"])
    # Then all are accepted, and exactly one of them is not held as a suspected duplicate
    assert [r.status_code for r in responses] == [201] * COPIES
    unflagged = [
        r
        for r in responses
        if not any(h["type"] == "suspected_duplicate" for h in r.json()["holds"])
    ]
    assert len(unflagged) == 1
    assert await _orders_and_flags(db) == (COPIES, COPIES - 1)
    duplicate_of = {
        h["detail"]["duplicate_of"]
        for r in responses
        for h in r.json()["holds"]
        if h["type"] == "suspected_duplicate"
    }
    assert duplicate_of <= {r.json()["order_no"] for r in responses}


async def test_two_processes_refuse_every_copy_but_one(db: Database, keys: dict[str, str]) -> None:
    # Given two API processes that refuse suspected duplicates
    with _api_processes(db, "reject") as urls:
        # When 50 identical keyless orders arrive at once, half through each
        responses = await _same_order_everywhere(urls, keys["ops"])
    # Then exactly one order exists and every other copy was refused, naming it
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (COPIES - 1)
    created = next(r.json()["order_no"] for r in responses if r.status_code == 201)
    refused = [r.json() for r in responses if r.status_code == 409]
    assert {p["code"] for p in refused} == {"order.suspected_duplicate"}
    assert {p["duplicate_of"] for p in refused} == {created}
    assert await _orders_and_flags(db) == (1, 0)
