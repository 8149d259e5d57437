"""The keyless duplicate check is atomic across processes: two real API processes receiving the
same customer + lines + amount at once create it once; every other copy is flagged (held as
`suspected_duplicate`) or refused, as the merchant configured."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from tests.factories import auth, order_body

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

COPIES = 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _api_processes(db: Database, policy: str, count: int = 2) -> Iterator[list[str]]:
    """`count` real `ordertally serve` processes on one database; yields their base URLs."""
    env = os.environ.copy()
    env.update(
        ORDERTALLY_DATABASE_URL=db.url,
        ORDERTALLY_DUPLICATE_POLICY=policy,
        ORDERTALLY_BROKER_URL="",
    )
    ports = [_free_port() for _ in range(count)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with tempfile.TemporaryFile() as log:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ordertally", "serve", "--no-worker", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=log,
            )
            for port in ports
        ]
        try:
            _wait_until_up(urls, procs, log)
            yield urls
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=15)


def _wait_until_up(urls: list[str], procs: list[subprocess.Popen[bytes]], log: IO[bytes]) -> None:
    deadline = time.monotonic() + 90  # two processes starting on a busy machine
    for url, proc in zip(urls, procs, strict=True):
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"API process did not start: {log.read()[-2000:]!r}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)


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
