"""Shipping in batches (ADR 0050): concurrent `POST /shipments/{id}/ship` of one process go
together in one transaction and store exactly what the same requests store one by one, with
the same answers, errors included."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import service
from ordertally.fulfillment.ship_batch import ShipRequest, ship_many
from ordertally.inventory.models import Stock
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import auth, order_for
from tests.fulfillment.helpers import normalise, shipments, split_paid_order, stored_rows
from tests.statements import Statements

pytestmark = pytest.mark.anyio

WAREHOUSE = Actor(ActorKind.WAREHOUSE, "batch-tests")
SINGLE = 6  # single-parcel orders per data set
SPLIT = 3  # two-parcel orders per data set


async def _single_paid_orders(db: Database, tag: str) -> list[SalesOrder]:
    """Paid single-parcel orders (1–3 units), their shipments planned (allocated)."""
    numbers = []
    async with db.transaction() as session:
        for n in range(SINGLE):
            snap, _ = await orders_service.create_order(
                session,
                order_for(
                    [("TEA-LJ-250", 1 + n % 3)],
                    external_id=f"batch-{tag}-{n}",
                    customer={"name": "张三", "phone": f"1380000{n:04d}"},
                ),
                Actor(ActorKind.API, "tests"),
                check_fingerprint=False,
            )
            await orders_service.transition(
                session,
                snap.order.order_no,
                "payment_succeeded",
                Actor(ActorKind.PAYMENT_CALLBACK, "tests"),
            )
            numbers.append(snap.order.order_no)
    await drain(db, get_settings())
    async with db.transaction() as session:
        return [o for no in numbers if (o := await orders_service.get_order(session, no))]


async def _data_set(db: Database, tag: str) -> tuple[list[SalesOrder], list[tuple[int, Any]]]:
    """Orders in every shape a warehouse meets, and the ship requests of one scan wave as
    (shipment id, JSON body): single parcels, both parcels of two-parcel orders, one parcel of
    another, an order confirmed before (fulfilling), an order on hold, a parcel shipped before
    (asked again with its number and with another), a parcel without a waybill number and an
    unknown shipment."""
    singles = await _single_paid_orders(db, tag)
    splits = [await split_paid_order(db, external_id=f"batch-{tag}-m{n}") for n in range(SPLIT)]
    orders = singles + splits
    parcels = {o.id: [s.id for s in await shipments(db, o.id)] for o in orders}

    def body(pos: int, n: int = 0) -> dict[str, str]:
        return {"waybill_no": f"ZT-{tag}-{pos}-{n}", "company": "zhongtong"}

    held, pre_shipped, confirmed = singles[4], singles[3], singles[5]
    async with db.transaction() as session:
        await exceptions_service.open_case(
            session,
            order_id=held.id,
            category="order",
            type="address_check",
            blocking=True,
            detail={},
        )
        await service.confirm(session, parcels[confirmed.id][0], WAREHOUSE)
        await service.ship(session, parcels[pre_shipped.id][0], WAREHOUSE, **body(3, 9))
    wave: list[tuple[int, Any]] = [
        (parcels[singles[pos].id][0], body(pos)) for pos in (0, 1, 2, 4, 5)
    ]
    wave += [
        (parcels[pre_shipped.id][0], body(3, 9)),  # the same number again: unchanged
        (parcels[pre_shipped.id][0], body(3, 1)),  # another number: already shipped
        (10**9, body(99)),  # no such shipment
    ]
    for m, order in enumerate(splits):
        first, second = parcels[order.id]
        wave.append((first, body(SINGLE + m, 0)))
        # the last split order's second parcel has no waybill number yet and none is given
        wave.append((second, body(SINGLE + m, 1) if m < SPLIT - 1 else {}))
    return orders, wave


async def _stock(db: Database) -> dict[tuple[int, str], tuple[int, int]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(Stock.warehouse_id, Stock.sku, Stock.on_hand, Stock.reserved)
        )
        out: dict[tuple[int, str], tuple[int, int]] = {}
        for r in rows.all():
            on_hand, reserved = out.get((r.warehouse_id, r.sku), (0, 0))
            out[(r.warehouse_id, r.sku)] = (on_hand + r.on_hand, reserved + r.reserved)
        return out


def _delta(
    before: dict[tuple[int, str], tuple[int, int]], after: dict[tuple[int, str], tuple[int, int]]
) -> dict[tuple[int, str], tuple[int, int]]:
    return {
        key: (after[key][0] - before[key][0], after[key][1] - before[key][1])
        for key in after
        if after[key] != before.get(key)
    }


def _ship_batches() -> tuple[float, float]:
    """(batches, requests) the ship group commit has seen so far in this process."""
    count = REGISTRY.get_sample_value("ordertally_ship_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("ordertally_ship_batch_size_sum") or 0.0
    return count, total


def _answer(r: httpx.Response, names: dict[str, str], tag: str) -> Any:
    doc = r.json()
    if r.status_code != 200:
        return r.status_code, doc["code"]
    return r.status_code, normalise(
        {k: doc[k] for k in ("warehouse", "carrier", "waybill_no", "status", "order_no")},
        names,
        tag,
    )


async def test_ships_sent_together_store_exactly_what_one_by_one_stores(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wh = auth(keys["warehouse"])

    # Given a warehouse's scan wave over orders of every shape, sent all at once
    a_orders, a_wave = await _data_set(db, "A")
    a_before = await _stock(db)
    batches_before, requests_before = _ship_batches()
    a_answers = await asyncio.gather(
        *(client.post(f"/api/v1/shipments/{sid}/ship", json=b, headers=wh) for sid, b in a_wave)
    )
    batches_after, requests_after = _ship_batches()
    a_delta = _delta(a_before, await _stock(db))

    # And the same wave over the same shapes, sent one by one with batching off
    monkeypatch.setenv("ORDERTALLY_SHIP_BATCH_MAX", "0")
    reset_settings()
    b_orders, b_wave = await _data_set(db, "B")
    b_before = await _stock(db)
    b_answers = [
        await client.post(f"/api/v1/shipments/{sid}/ship", json=b, headers=wh) for sid, b in b_wave
    ]
    b_delta = _delta(b_before, await _stock(db))

    # Then the wave really went in batches (fewer transactions than requests)
    assert requests_after - requests_before == len(a_wave)
    assert batches_after - batches_before < len(a_wave)
    # And every request got the same answer, errors with the same problem codes
    a_names = {o.order_no: f"#{p}" for p, o in enumerate(a_orders)}
    b_names = {o.order_no: f"#{p}" for p, o in enumerate(b_orders)}
    answers = [_answer(r, a_names, "A") for r in a_answers]
    assert answers == [_answer(r, b_names, "B") for r in b_answers]
    assert [code for code, _ in answers].count(200) == 10
    assert sorted(doc for code, doc in answers if code != 200) == [
        "fulfillment.already_shipped",
        "fulfillment.shipment_not_found",
        "fulfillment.waybill_missing",
        "order.on_hold",
    ]
    # And the stored rows are the same, order by order: the order, its shipments, its audit
    # trail, its outbox events, its ledger rows and reservations; and the stock moved alike
    a_stored = await stored_rows(db, a_orders, "A")
    b_stored = await stored_rows(db, b_orders, "B")
    for pos, (a, b) in enumerate(zip(a_stored, b_stored, strict=True)):
        assert a == b, f"order #{pos}"
    assert a_delta == b_delta
    # (and the wave did something: 7 orders have left, with 9 ledger rows, one before it)
    assert sum(s["order"]["status"] == "shipped" for s in a_stored) == 7
    assert sum(len(s["ledger"]) for s in a_stored) == 9


async def test_a_batch_leaves_to_the_one_request_path_what_it_does_not_take(
    db: Database,
) -> None:
    # Given two single-parcel orders and a two-parcel one
    singles = await _single_paid_orders(db, "C")
    split = await split_paid_order(db, external_id="batch-C-m")
    first = (await shipments(db, singles[0].id))[0].id
    second = (await shipments(db, singles[1].id))[0].id
    p1, p2 = (s.id for s in await shipments(db, split.id))

    def request(sid: int, number: str, **scope: Any) -> ShipRequest:
        return ShipRequest(sid, WAREHOUSE, number, "zhongtong", **scope)

    # When one batch holds, in order: a parcel, the same parcel again, another parcel with the
    # first one's number, a parcel of another warehouse for a warehouse-scoped caller, both
    # parcels of the split order (the second for a caller scoped to its own warehouse)
    batch = [
        request(first, "ZT-C-1"),
        request(first, "ZT-C-1"),
        request(second, "ZT-C-1"),
        request(p1, "ZT-C-2", warehouses=("WH-TEST",)),
        request(p1, "ZT-C-3"),
        request(p2, "ZT-C-4", warehouses=("WH-TEST",)),
    ]
    async with db.transaction() as session:
        results = await ship_many(session, batch)
    # Then the batch took what one by one would have done without a question, and left the
    # rest (each then runs alone on `ship`, after the batch)
    taken = [(r.id, r.status, r.waybill_no) if r is not None else None for r in results]
    assert taken == [
        (first, "shipped", "ZT-C-1"),
        None,  # the same parcel twice: alone, it is unchanged
        None,  # a number another parcel holds: alone, it is refused
        None,  # another warehouse's parcel: alone, it is forbidden
        (p1, "shipped", "ZT-C-3"),
        (p2, "shipped", "ZT-C-4"),
    ]
    async with db.transaction() as session:
        again, changed = await service.ship(session, first, WAREHOUSE, waybill_no="ZT-C-1")
    assert (again.status, changed) == ("shipped", False)
    async with db.transaction() as session:
        order = await orders_service.get_order(session, split.order_no)
        events = await orders_service.events_of(session, split.order_no)
    assert (order.status, order.waybill_nos) == ("shipped", "ZT-C-3 ZT-C-4")
    assert [e.event for e in events][-2:] == ["start_fulfillment", "ship"]


async def test_a_batch_runs_the_same_statements_whatever_its_size(db: Database) -> None:
    # Given six allocated single-parcel orders
    orders = await _single_paid_orders(db, "D")
    ids = [(await shipments(db, o.id))[0].id for o in orders]

    def wave(group: list[int]) -> list[ShipRequest]:
        return [ShipRequest(sid, WAREHOUSE, f"ZT-D-{sid}", "zhongtong") for sid in group]

    # When one is shipped alone, then the five others in one batch
    counts = []
    for group in (ids[:1], ids[1:]):
        with Statements(db) as seen:
            async with db.transaction() as session:
                results = await ship_many(session, wave(group))
        assert [r.status for r in results if r is not None] == ["shipped"] * len(group)
        counts.append(len(seen.seen))
    # Then the five cost the statements of the one: a fixed number per batch
    assert counts[0] == counts[1]
    async with db.transaction() as session:
        assert {(await orders_service.get_order(session, o.order_no)).status for o in orders} == {
            "shipped"
        }
