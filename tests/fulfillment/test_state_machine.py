"""The shipment table: its rows, its status groups, and every (transition, status) pair tried as
the compare-and-set the code runs, on a real shipment row: a move from a status outside the
transition's sources changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.fulfillment import repository, state_machine
from ordertally.fulfillment.carriers.base import TrackingStatus
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.state_machine import (
    NOT_SHIPPED,
    ON_THE_ROAD,
    STATUSES,
    TERMINAL,
    TRANSITIONS,
    ShipmentStatus,
)
from tests.fulfillment.helpers import split_paid_order

pytestmark = pytest.mark.anyio

ROAD = ["exception", "in_transit", "out_for_delivery", "shipped"]


def test_the_table_row_by_row() -> None:
    # Given the shipment table / When it is printed / Then each row is exactly this
    assert state_machine.as_rows() == [
        {
            "transition": "request_waybill",
            "from": ["planned"],
            "to": "waybill_requested",
            "trigger": "waybill_loop",
            "event": "",
        },
        {
            "transition": "waybill_created",
            "from": ["waybill_requested"],
            "to": "ready",
            "trigger": "waybill_loop",
            "event": "",
        },
        {
            "transition": "ship",
            "from": ["planned", "ready", "waybill_requested"],
            "to": "shipped",
            "trigger": "warehouse",
            "event": "ShipmentShipped",
        },
        {
            "transition": "track_in_transit",
            "from": ROAD,
            "to": "in_transit",
            "trigger": "carrier_event",
            "event": "",
        },
        {
            "transition": "track_out_for_delivery",
            "from": ROAD,
            "to": "out_for_delivery",
            "trigger": "carrier_event",
            "event": "",
        },
        {
            "transition": "deliver",
            "from": ROAD,
            "to": "delivered",
            "trigger": "carrier_event",
            "event": "ShipmentDelivered",
        },
        {
            "transition": "track_returned",
            "from": ROAD,
            "to": "returned",
            "trigger": "carrier_event",
            "event": "ShipmentTrackingException",
        },
        {
            "transition": "track_exception",
            "from": ROAD,
            "to": "exception",
            "trigger": "carrier_event",
            "event": "ShipmentTrackingException",
        },
    ]


def test_statuses_fall_in_exactly_one_group_and_the_ends_have_no_way_out() -> None:
    # Given the three groups of statuses
    groups = [NOT_SHIPPED, ON_THE_ROAD, TERMINAL]
    # Then they are disjoint and cover every status, in the table's order
    assert sorted(s for g in groups for s in g) == sorted(STATUSES)
    assert sum(len(g) for g in groups) == len(STATUSES) == 9
    assert STATUSES[0] == state_machine.INITIAL == "planned"
    # And nothing leaves delivered or returned; everything else has a way forward
    assert {s: [t.name for t in state_machine.allowed_from(s)] for s in TERMINAL} == {
        "delivered": [],
        "returned": [],
    }
    assert all(state_machine.allowed_from(s) for s in STATUSES if s not in TERMINAL)
    # And the table's CHECK constraint lists the same statuses, in the same order
    check = next(c for c in Shipment.__table__.constraints if c.name == "ck_shipment_status_known")
    assert str(check.sqltext) == "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))


def test_every_tracking_status_has_its_transition_and_nothing_else_does() -> None:
    # Given the statuses a carrier event can carry / When each is looked up
    found = {s.value: state_machine.by_carrier_event(s.value) for s in TrackingStatus}
    # Then each leads to its own status, from anywhere on the road
    assert {s: (t.name, t.target.value) for s, t in found.items() if t is not None} == {
        "in_transit": ("track_in_transit", "in_transit"),
        "out_for_delivery": ("track_out_for_delivery", "out_for_delivery"),
        "delivered": ("deliver", "delivered"),
        "returned": ("track_returned", "returned"),
        "exception": ("track_exception", "exception"),
    }
    assert all(t is not None and t.sources == ON_THE_ROAD for t in found.values())
    # And the warehouse-side statuses are no carrier event
    assert [state_machine.by_carrier_event(s) for s in ("planned", "ready", "shipped", "")] == [
        None,
        None,
        None,
        None,
    ]


async def test_every_transition_from_every_status_as_a_compare_and_set(db: Database) -> None:
    # Given a planned shipment
    order = await split_paid_order(db)
    async with db.transaction() as session:
        shipment_id = (await repository.of_order(session, order.id))[0].id
    moved: list[tuple[str, str, str]] = []
    for spec in TRANSITIONS:
        for status in STATUSES:
            # Given the shipment in `status`
            stamp = clock.now()
            async with db.transaction() as session:
                await repository.update_one(
                    session, shipment_id, {"status": status, "updated_at": stamp}
                )
            # When the transition is applied as the code applies it
            async with db.transaction() as session:
                count = await repository.move(
                    session, [shipment_id], spec, {"last_error": f"moved by {spec.name}"}
                )
            async with db.transaction(write=False) as session:
                row = (
                    await session.execute(
                        select(Shipment.status, Shipment.last_error).where(
                            Shipment.id == shipment_id
                        )
                    )
                ).one()
            # Then it moves exactly when the status is one of its sources, else nothing changes
            if ShipmentStatus(status) in spec.sources:
                assert (count, row.status, row.last_error) == (
                    1,
                    spec.target.value,
                    f"moved by {spec.name}",
                )
                moved.append((spec.name, status, row.status))
            else:
                assert (count, row.status) == (0, status)
                assert row.last_error != f"moved by {spec.name}"
            async with db.transaction() as session:
                await repository.update_one(session, shipment_id, {"last_error": ""})
    # And the moves made are exactly the table's
    assert len(moved) == sum(len(t.sources) for t in TRANSITIONS) == 1 + 1 + 3 + 5 * 4
