"""The group commit's per-order response cost: an order just written rendered to its JSON, from
mapped objects built by the ORM's constructor (the path before session 9) and from the rows as
written (`creation.Written`, after). Both are timed interleaved in one process, so the ratio holds
on a busy machine even when the absolute figures do not.

    python -m bench.order_response [--orders 20000] [--rounds 5] [--lines 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ordertally.inventory import service as inventory_service
from ordertally.orders import creation
from ordertally.orders.api import order_doc
from ordertally.orders.models import OrderLine, SalesOrder
from ordertally.orders.snapshot import OrderSnapshot


def _written(lines: int) -> creation.Created:
    """An order as `create_many` returns it: every column of the order and its lines set."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {c.key: None for c in SalesOrder.__table__.columns if c.key != "id"}
    values |= {
        "order_no": "OT2612050000001",
        "channel": "api",
        "status": "pending_payment",
        "version": 1,
        "currency": "CNY",
        "base_currency": "CNY",
        "subtotal_minor": 15970,
        "discount_minor": 0,
        "total_minor": 15970,
        "created_at": now,
        "updated_at": now,
        "payment_deadline_at": now,
    }
    rows = []
    for n in range(1, lines + 1):
        row: dict[str, Any] = {c.key: None for c in OrderLine.__table__.columns}
        row |= {
            "id": n,
            "order_id": 1,
            "line_no": n,
            "sku": f"TEA-{n}",
            "quantity": 2,
            "unit_price_minor": 7985,
            "discount_minor": 0,
            "total_minor": 15970,
        }
        rows.append(row)
    return creation.Created(1, values, rows, [], None)


def _mapped(created: creation.Created) -> OrderSnapshot:
    """The snapshot as it was built before: mapped objects through the ORM's constructor."""
    lines = [OrderLine(**row) for row in created.lines]
    inventory = inventory_service.view_of_new(
        created.reserved, {line.id: line.line_no for line in lines}
    )
    return OrderSnapshot(SalesOrder(id=created.order_id, **created.values), lines, [], inventory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20000, help="orders per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=2, help="lines per order")
    args = parser.parse_args()
    created = _written(args.lines)
    assert order_doc(_mapped(created)) == order_doc(created.snapshot()), "the two paths differ"
    paths = {
        "mapped objects (before)": lambda: orjson.dumps(order_doc(_mapped(created))),
        "rows as written (after)": lambda: orjson.dumps(order_doc(created.snapshot())),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, render in paths.items():
            started = time.perf_counter()
            for _ in range(args.orders):
                render()
            times[name].append((time.perf_counter() - started) / args.orders * 1e6)
    for name, values in times.items():
        shown = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:26} median {statistics.median(values):7.1f} µs per order  ({shown})")
    before, after = (statistics.median(v) for v in times.values())
    print(f"ratio after/before: {after / before:.2f}")


if __name__ == "__main__":
    main()
