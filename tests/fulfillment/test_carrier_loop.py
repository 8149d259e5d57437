"""The carrier loop calls the carrier with no transaction open: while a carrier holds a waybill
request, the order it is for can be locked and written (on SQLite: any write goes through)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.fulfillment import carrier_loop
from ordertally.fulfillment.models import Shipment
from ordertally.orders import queries as orders_queries
from tests.fulfillment.helpers import configure_kuaidi100, split_paid_order

pytestmark = pytest.mark.anyio


async def test_the_order_can_be_written_while_the_carrier_thinks(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a carrier endpoint that takes every request and answers nothing for seconds
    asked, release = asyncio.Event(), asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        held.append(writer)
        asked.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    configure_kuaidi100(
        monkeypatch, f"http://127.0.0.1:{port}", ORDERTALLY_KUAIDI100_TIMEOUT_SECONDS="1.5"
    )
    # And a paid order whose two shipments are due for a waybill
    order = await split_paid_order(db)
    try:
        # When the carrier loop asks for the waybills
        work = asyncio.create_task(carrier_loop.carrier_work(db))
        await asyncio.wait_for(asked.wait(), 5)
        # Then, while the carrier holds the request, the order is locked and written at once
        started = time.perf_counter()
        async with db.transaction() as session:
            locked = await orders_queries.lock(session, [order.id])
            await orders_queries.set_waybills(
                session, order.id, ["WRITTEN-MEANWHILE"], locked[0].updated_at
            )
        waited = time.perf_counter() - started
        assert not work.done()
        assert waited < 0.5
        # And the loop records the carrier's silence as unavailable, once per shipment
        result = await work
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        for writer in held:
            await writer.wait_closed()
    assert result == {
        "carrier": "kuaidi100",
        "waybills": {"unavailable": 2},
        "subscriptions": {},
        "queries": {},
    }
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(Shipment.status, Shipment.waybill_attempts, Shipment.waybill_no)
                .where(Shipment.order_id == order.id)
                .order_by(Shipment.id)
            )
        ).all()
        written = await orders_queries.get_by_id(session, order.id)
    assert [tuple(r) for r in rows] == [("waybill_requested", 1, None)] * 2
    assert written is not None and written.waybill_nos == "WRITTEN-MEANWHILE"
