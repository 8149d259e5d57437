"""The delivery path in batches (ADR 0050): deliveries and carrier exceptions in a batch of
carrier updates store exactly what the same updates store one by one (shipments, orders and
their audit trail, outbox events, exception cases)."""

from __future__ import annotations

from typing import Any

import pytest

from ordertally.core.db import Database
from ordertally.fulfillment import service, tracking_updates
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.carriers.base import TrackingUpdate
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.fulfillment.helpers import (
    configure_kuaidi100,
    now_minus,
    push_form,
    script,
    shipments,
    split_paid_order,
    stored_rows,
)

pytestmark = pytest.mark.anyio

WAREHOUSE = Actor(ActorKind.WAREHOUSE, "tracking-batch-tests")


async def _data_set(db: Database, tag: str) -> tuple[list[SalesOrder], list[TrackingUpdate]]:
    """Five shipped two-parcel orders and one carrier wave about them, in arrival order:
    both parcels delivered; one delivered and one refused; both still on the road; a stale
    snapshot before the whole story and a parcel in trouble; both delivered, one pushed twice;
    and a waybill we never issued."""
    orders = [await split_paid_order(db, external_id=f"track-{tag}-{n}") for n in range(5)]
    numbers: list[tuple[str, str]] = []
    for pos, order in enumerate(orders):
        first, second = await shipments(db, order.id)
        pair = (f"ZT-{tag}-{pos}-1", f"ZT-{tag}-{pos}-2")
        async with db.transaction() as session:
            for parcel, number in zip((first, second), pair, strict=True):
                await service.ship(session, parcel.id, WAREHOUSE, waybill_no=number)
        numbers.append(pair)
    start = now_minus(10).replace(microsecond=0)
    full, refused, problem = script(start), script(start, final="14"), script(start, final="2")
    adapter = registry.current()
    assert adapter is not None

    def update(pos: int, parcel: int, steps: list[Any]) -> TrackingUpdate:
        return adapter.parse_push(push_form("zhongtong", numbers[pos][parcel], steps))

    wave = [
        update(0, 0, full),
        update(0, 1, full),
        update(1, 0, full),
        update(1, 1, refused),
        update(2, 0, full[:3]),
        update(2, 1, full[:2]),
        update(3, 0, full[:2]),
        update(3, 0, full),
        update(3, 1, problem),
        update(4, 1, full),
        update(4, 0, full),
        update(4, 1, full),
        adapter.parse_push(push_form("zhongtong", f"ZT-{tag}-unknown", full[:1])),
    ]
    return orders, wave


async def test_a_wave_of_deliveries_and_exceptions_stores_what_one_by_one_stores(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    # Given a carrier wave applied as one batch
    a_orders, a_wave = await _data_set(db, "A")
    async with db.transaction() as session:
        a_out = await tracking_updates.apply_tracking_many(session, a_wave, source="push")
    # And the same wave over the same shapes applied one update per transaction
    b_orders, b_wave = await _data_set(db, "B")
    b_out = []
    for one in b_wave:
        async with db.transaction() as session:
            b_out.append(await tracking_updates.apply_tracking(session, one, source="push"))

    # Then each update had the same outcome
    assert a_out == b_out
    assert [o.status for o in a_out] == [
        "delivered",
        "delivered",
        "delivered",
        "exception",
        "in_transit",
        "in_transit",
        "in_transit",
        "delivered",
        "exception",
        "delivered",
        "delivered",
        "delivered",
        None,
    ]
    # And the stored rows are the same, order by order
    a_stored = await stored_rows(db, a_orders, "A")
    b_stored = await stored_rows(db, b_orders, "B")
    for pos, (a, b) in enumerate(zip(a_stored, b_stored, strict=True)):
        assert a == b, f"order #{pos}"
    # And they are what the carrier said: the orders whose parcels all arrived delivered (by
    # the carrier, in their audit trail), one ShipmentDelivered per delivered parcel, a case
    # and an event per parcel in trouble
    assert [s["order"]["status"] for s in a_stored] == [
        "delivered",
        "shipped",
        "shipped",
        "shipped",
        "delivered",
    ]
    assert [s["audit"][-1][1:5] for s in a_stored] == [
        ("deliver", "shipped", "delivered", "carrier"),
        ("ship", "fulfilling", "shipped", "warehouse"),
        ("ship", "fulfilling", "shipped", "warehouse"),
        ("ship", "fulfilling", "shipped", "warehouse"),
        ("deliver", "shipped", "delivered", "carrier"),
    ]
    assert [s["sequence"].count("ShipmentDelivered") for s in a_stored] == [2, 1, 0, 1, 2]
    assert [s["sequence"].count("ShipmentTrackingException") for s in a_stored] == [0, 1, 0, 1, 0]
    assert [[(c[0], c[2]["reason"]) for c in s["cases"]] for s in a_stored] == [
        [],
        [("tracking_exception", "rejected")],
        [],
        [("tracking_exception", "problem")],
        [],
    ]
