"""A shipment's life as data: every status change of a shipment is one row of TRANSITIONS.

Like the order table (orders/state_machine.py), it is read by the code that moves a shipment
(each update is a compare-and-set on the row's sources), printed by the docs and enumerated by
the tests. The first three statuses belong to the warehouse side, the rest to the carrier.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ShipmentStatus(StrEnum):
    PLANNED = "planned"
    WAYBILL_REQUESTED = "waybill_requested"
    READY = "ready"
    SHIPPED = "shipped"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"
    EXCEPTION = "exception"


# In this order in the table's CHECK constraint (models.py): do not reorder.
STATUSES: tuple[str, ...] = tuple(s.value for s in ShipmentStatus)

S = ShipmentStatus

# A new shipment is planned (one per warehouse of the order's committed reservations).
INITIAL = S.PLANNED
# Before the parcel leaves the warehouse.
NOT_SHIPPED: frozenset[str] = frozenset({S.PLANNED, S.WAYBILL_REQUESTED, S.READY})
# Left the warehouse and not at an end: subscribed to, polled, moved by tracking events.
ON_THE_ROAD: frozenset[str] = frozenset({S.SHIPPED, S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.EXCEPTION})
# The carrier's last word: nothing moves a shipment out of these.
TERMINAL: frozenset[str] = frozenset({S.DELIVERED, S.RETURNED})


class Trigger(StrEnum):
    """Who moves a shipment."""

    WAYBILL_LOOP = "waybill_loop"  # our waybill requests to the carrier (carrier_loop.py)
    WAREHOUSE = "warehouse"  # the warehouse or ERP: ship API, shipped lists
    CARRIER_EVENT = "carrier_event"  # the newest tracking event, pushed or polled


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    sources: frozenset[ShipmentStatus]
    target: ShipmentStatus
    trigger: Trigger
    event_type: str = ""  # the outbox event the move publishes, if any


def _t(
    name: str,
    sources: frozenset[str] | tuple[ShipmentStatus, ...],
    target: ShipmentStatus,
    trigger: Trigger,
    event_type: str = "",
) -> Transition:
    return Transition(name, frozenset(S(s) for s in sources), target, trigger, event_type)


T = Trigger

TRANSITIONS: tuple[Transition, ...] = (
    _t("request_waybill", (S.PLANNED,), S.WAYBILL_REQUESTED, T.WAYBILL_LOOP),
    _t("waybill_created", (S.WAYBILL_REQUESTED,), S.READY, T.WAYBILL_LOOP),
    _t("ship", NOT_SHIPPED, S.SHIPPED, T.WAREHOUSE, "ShipmentShipped"),
    # The shipment takes the status of its newest event by event time, from wherever it is on
    # the road: a late scan may move it back (out for delivery -> in transit after a failed try).
    _t("track_in_transit", ON_THE_ROAD, S.IN_TRANSIT, T.CARRIER_EVENT),
    _t("track_out_for_delivery", ON_THE_ROAD, S.OUT_FOR_DELIVERY, T.CARRIER_EVENT),
    _t("deliver", ON_THE_ROAD, S.DELIVERED, T.CARRIER_EVENT, "ShipmentDelivered"),
    _t("track_returned", ON_THE_ROAD, S.RETURNED, T.CARRIER_EVENT, "ShipmentTrackingException"),
    _t("track_exception", ON_THE_ROAD, S.EXCEPTION, T.CARRIER_EVENT, "ShipmentTrackingException"),
)

BY_NAME: dict[str, Transition] = {t.name: t for t in TRANSITIONS}

REQUEST_WAYBILL = BY_NAME["request_waybill"]
WAYBILL_CREATED = BY_NAME["waybill_created"]
SHIP = BY_NAME["ship"]
DELIVER = BY_NAME["deliver"]

# The tracking transition that leads to each status a carrier event can carry.
_BY_TRACKED_STATUS: dict[str, Transition] = {
    t.target.value: t for t in TRANSITIONS if t.trigger is Trigger.CARRIER_EVENT
}


def find(name: str) -> Transition | None:
    """The transition called `name`, if there is one."""
    return BY_NAME.get(name)


def allowed_from(status: str) -> list[Transition]:
    """Transitions that may leave a status."""
    return [t for t in TRANSITIONS if status in t.sources]


def by_carrier_event(status: str) -> Transition | None:
    """The transition a tracking event with this status asks for (None: not a tracking status)."""
    return _BY_TRACKED_STATUS.get(status)


def as_rows() -> list[dict[str, object]]:
    """The table as plain rows, for docs and the UI."""
    return [
        {
            "transition": t.name,
            "from": sorted(s.value for s in t.sources),
            "to": t.target.value,
            "trigger": t.trigger.value,
            "event": t.event_type,
        }
        for t in TRANSITIONS
    ]
