"""`ordertally doctor`'s check for paid orders that nothing will ever ship: no live reservation
for their lines and no hold saying why (what a resolved stock-shortage hold used to leave)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.ops.doctor import Check, run_checks
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from tests.factories import make_order

pytestmark = pytest.mark.anyio


async def _check(db: Database) -> Check:
    checks = {c.name: c for c in await run_checks(db, get_settings())}
    return checks["unreserved_paid_orders"]


async def _release(db: Database, order: SalesOrder) -> None:
    """The old defect's leftover: the order keeps its status, its units are gone."""
    async with db.transaction() as session:
        assert await inventory_service.release_order(session, order.id) == 3


async def _reserve_again(db: Database, order: SalesOrder) -> None:
    async with db.transaction() as session:
        lines = [
            inventory_service.LineDemand(ln.id, ln.line_no, ln.sku, ln.quantity)
            for ln in await orders_service.lines_of(session, order)
        ]
        assert await inventory_service.commit_order(session, order.id, lines, "上海市") == {}


def _doctor_command() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


async def test_unreserved_paid_orders_fail_the_check_until_reserved_again(db: Database) -> None:
    # Given healthy orders in every stock-holding status, delivered to their consumers
    healthy = [await make_order(db, status) for status in ("pending_payment", "paid", "allocated")]
    await drain(db, get_settings())
    assert await _check(db) == Check(
        "unreserved_paid_orders",
        True,
        "0 paid or allocated orders with neither reserved stock nor a hold",
        {"count": 0, "order_nos": []},
    )
    # And a paid and an allocated order that lost their units with no hold, and a paid one
    # that lost them but is on hold (a person knows)
    broken_paid = await make_order(db, "paid")
    broken_allocated = await make_order(db, "allocated")
    on_hold = await make_order(db, "paid")
    await drain(db, get_settings())
    for order in (broken_paid, broken_allocated, on_hold):
        await _release(db, order)
    async with db.transaction() as session:
        await exceptions_service.open_case(
            session,
            order_id=on_hold.id,
            category="inventory",
            type="stock_shortage",
            blocking=True,
            detail={},
        )

    # When the doctor runs, Then the check fails, counting and naming the two
    check = await _check(db)
    assert (check.ok, check.data) == (
        False,
        {"count": 2, "order_nos": [broken_paid.order_no, broken_allocated.order_no]},
    )
    assert check.detail == (
        "2 paid or allocated orders with neither reserved stock nor a hold (e.g. "
        f"{broken_paid.order_no}, {broken_allocated.order_no}): reserve their stock or open a hold"
    )
    assert [o.order_no for o in healthy if o.order_no in check.data["order_nos"]] == []

    # When their units are reserved again, Then every check passes
    await _reserve_again(db, broken_paid)
    await _reserve_again(db, broken_allocated)
    checks = await run_checks(db, get_settings())
    assert [c.name for c in checks if not c.ok] == []
    assert (await _check(db)).data == {"count": 0, "order_nos": []}


async def test_the_command_exits_non_zero_on_an_unreserved_paid_order(db: Database) -> None:
    # Given a paid order that lost its units, with no hold
    order = await make_order(db, "paid")
    await drain(db, get_settings())
    await _release(db, order)
    # When `ordertally doctor --json` runs
    result = _doctor_command()
    # Then it fails on that check alone and names the order
    report = json.loads(result.stdout)
    assert result.returncode == 1
    failed = {c["name"]: c["data"] for c in report["checks"] if not c["ok"]}
    assert failed == {"unreserved_paid_orders": {"count": 1, "order_nos": [order.order_no]}}
