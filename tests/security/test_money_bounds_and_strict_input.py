"""Issue 14 (Medium/Low): amounts and quantities are bounded at the edge (a 422 problem, never
a 64-bit overflow answered `internal`); `true` is not a quantity; control characters and bidi
overrides are refused in names, addresses and free text; a payment dated 2099 is refused."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.channels.canonical import CanonicalLine
from ordertally.channels.ingest import ingest_orders
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.orders.models import SalesOrder
from ordertally.payments.models import ManualPayment
from tests.channels.helpers import canonical, make_account
from tests.factories import auth, make_order, order_body

pytestmark = pytest.mark.anyio


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def _lines(unit_price: Any, quantity: Any = 1, n: int = 1) -> dict[str, Any]:
    return order_body(
        lines=[{"sku": "TEA-LJ-250", "quantity": quantity, "unit_price": unit_price}] * n
    )


def _types(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "request.invalid"
    return [e["type"] for e in body["errors"]]


async def test_the_largest_allowed_order_is_stored_exactly(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # When ops creates an order of exactly the largest total allowed
    response = await client.post(
        "/api/v1/orders", json=_lines("9999999999.99"), headers=auth(keys["ops"])
    )
    # Then it is stored to the fen
    assert response.status_code == 201, response.text
    assert (response.json()["subtotal"], response.json()["total"]) == (
        "9999999999.99",
        "9999999999.99",
    )
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(SalesOrder.total_minor)) == 999_999_999_999


@pytest.mark.parametrize(
    ("unit_price", "quantity", "lines", "error"),
    [
        ("9999999999999.99", 10_000, 1, "string_pattern_mismatch"),  # the probe's payload
        ("10000000000.00", 1, 1, "string_pattern_mismatch"),  # one digit above the maximum
        ("9999999999.99", 2, 1, "amount_out_of_range"),  # each price allowed, not the total
        ("5000000000.00", 1, 2, "amount_out_of_range"),
        ("9999999999.99", 100_000, 200, "amount_out_of_range"),  # every bound at its maximum
        ("1.00", 100_001, 1, "less_than_equal"),
    ],
)
async def test_an_amount_above_the_bounds_is_a_422_and_nothing_is_written(
    client: AsyncClient,
    keys: dict[str, str],
    db: Database,
    unit_price: str,
    quantity: int,
    lines: int,
    error: str,
) -> None:
    before = await _count(db, OutboxEvent)
    response = await client.post(
        "/api/v1/orders", json=_lines(unit_price, quantity, lines), headers=auth(keys["ops"])
    )
    assert _types(response) == [error]
    assert (await _count(db, SalesOrder), await _count(db, OutboxEvent)) == (0, before)


@pytest.mark.parametrize("quantity", [True, "5", 2.0])
async def test_a_quantity_must_be_a_json_integer(
    client: AsyncClient, keys: dict[str, str], db: Database, quantity: Any
) -> None:
    response = await client.post(
        "/api/v1/orders", json=_lines("1.00", quantity), headers=auth(keys["ops"])
    )
    assert _types(response) == ["int_type"]
    assert await _count(db, SalesOrder) == 0


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("customer", "name"), "张\x00三"),
        (("customer", "name"), "\u202eadmin"),
        (("shipping_address", "line1"), "世纪大道\u20661号"),
        (("shipping_address", "name"), "李\x1b[31m四"),
        (("shipping_address", "city"), "上海\r\n市"),
    ],
)
async def test_control_characters_are_refused_in_names_and_addresses(
    client: AsyncClient, keys: dict[str, str], db: Database, where: tuple[str, str], value: str
) -> None:
    body = order_body()
    body[where[0]][where[1]] = value
    response = await client.post("/api/v1/orders", json=body, headers=auth(keys["ops"]))
    assert _types(response) == ["text_control_character"]
    assert await _count(db, SalesOrder) == 0


@pytest.mark.parametrize(
    ("paid_at", "error"),
    [
        ("2099-01-01T10:00:00+08:00", "datetime_in_future"),
        ("2001-01-01T10:00:00Z", "datetime_too_old"),
    ],
)
async def test_a_manual_payment_dated_out_of_bounds_is_refused(
    client: AsyncClient, keys: dict[str, str], db: Database, paid_at: str, error: str
) -> None:
    order = await make_order(db)
    response = await client.post(
        f"/api/v1/orders/{order.order_no}/manual-payment",
        json={
            "reference": "bank-889",
            "amount": "159.70",
            "paid_at": paid_at,
            "reason": "buyer sent a screenshot",
        },
        headers=auth(keys["finance"]),
    )
    assert _types(response) == [error]
    assert await _count(db, ManualPayment) == 0


async def test_a_manual_payment_reason_with_a_bidi_override_is_refused(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    order = await make_order(db)
    response = await client.post(
        f"/api/v1/orders/{order.order_no}/manual-payment",
        json={
            "reference": "bank-889",
            "amount": "159.70",
            "paid_at": (clock.now() - timedelta(hours=2)).isoformat(),
            "reason": "approved \u202egnp.exe",
        },
        headers=auth(keys["finance"]),
    )
    assert _types(response) == ["text_control_character"]
    assert await _count(db, ManualPayment) == 0


async def test_a_platform_order_above_the_bounds_is_refused_not_a_crash(db: Database) -> None:
    # Given a platform order whose one line adds up to more than any column can hold
    await make_account(db)
    line = CanonicalLine("TEA-LJ-250", 100_000, 999_999_999_999_999)
    huge = dataclasses.replace(canonical("HUGE"), lines=(line,))
    # When it is ingested with a normal order
    result = await ingest_orders(db, "shop_a", [canonical("FINE"), huge], via="file")
    # Then the normal one is stored and the huge one reported, nothing written for it
    assert result.created == 1
    assert [(e, "more than" in why) for e, why in result.errors] == [("HUGE", True)]
    async with db.transaction(write=False) as session:
        ids = (await session.scalars(select(SalesOrder.external_id))).all()
    assert ids == ["FINE"]
