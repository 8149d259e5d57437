"""Fulfillment use cases, by name, for the other domains, the CLI and the worker: shipments from
the allocation (allocation.py), the warehouse's confirm and ship (shipping.py), the carrier's
tracking applied (tracking_updates.py), replacement shipments of sent orders (replacement.py)
and the calls to the carrier (carrier_loop.py).

Session functions never commit (the caller's boundary does). `carrier_work` is the exception: it
talks to the carrier, so it takes the database and opens short transactions around each call,
never holding one while the carrier thinks.
"""

from __future__ import annotations

# The use cases live in the modules named above; their names stay importable from here for the
# callers outside fulfillment (ops/demo.py, bench/fulfillment.py, other domains).
from ordertally.fulfillment.allocation import (
    ALLOCATOR,
    allocate,
    allocate_waiting,
    company_for,
    plan_shipments,
)
from ordertally.fulfillment.carrier_loop import carrier_work
from ordertally.fulfillment.replacement import ReplacementLine, plan_replacement
from ordertally.fulfillment.shipments import (
    get_shipment,
    lines_by_shipment,
    shipments_of,
    shipments_of_orders,
    timelines,
)
from ordertally.fulfillment.shipping import confirm, ship, ship_rows
from ordertally.fulfillment.tracking_updates import (
    CARRIER,
    TrackingOutcome,
    apply_tracking,
    flag_stale,
)

__all__ = [
    "ALLOCATOR",
    "CARRIER",
    "ReplacementLine",
    "TrackingOutcome",
    "allocate",
    "allocate_waiting",
    "apply_tracking",
    "carrier_work",
    "company_for",
    "confirm",
    "flag_stale",
    "get_shipment",
    "lines_by_shipment",
    "plan_replacement",
    "plan_shipments",
    "ship",
    "ship_rows",
    "shipments_of",
    "shipments_of_orders",
    "timelines",
]
