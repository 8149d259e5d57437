"""The one creation path: `build_order` turns any spec into the same rows, and `create_many`
writes many orders in either mode (the API's group commit defers the unusual; ingest holds)."""

from __future__ import annotations

import dataclasses
import hashlib

import orjson
import pytest
from sqlalchemy import func, select

from ordertally.catalog.service import LineFacts
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.models import OutboxEvent
from ordertally.inventory.models import Reservation, Stock
from ordertally.orders import creation
from ordertally.orders.errors import InvalidOrder
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.state_machine import Actor, ActorKind, Event
from tests.factories import order_for

pytestmark = pytest.mark.anyio

API = Actor(ActorKind.API, "tester")
SYNC = Actor(ActorKind.CHANNEL_SYNC, "channel:shop")


# The catalogue as build_order sees it (create_order/create_many read it with catalog_facts).
FACTS = {
    code: LineFacts(f"名称 {code}", f"Name {code}", "", None, True)
    for code in ("A", "B", "TEA-LJ-250", "CUP-CER-01")
}


def _spec(skus: list[tuple[str, int]], **changes: object) -> creation.OrderSpec:
    spec = creation.spec_of(order_for(skus), API, check_fingerprint=False)
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def test_build_order_spreads_the_order_discount_over_the_lines_net_of_their_own() -> None:
    # Given a platform-style spec: two lines with their own discounts and an order discount
    spec = _spec(
        [("A", 1)],
        lines=(
            creation.LineSpec("A", 2, 1000, discount_minor=200),
            creation.LineSpec("B", 1, 600),
        ),
        discount_minor=700,
        actor=SYNC,
        initial=Event.IMPORT_PAID,
    )
    # When it is built
    built = creation.build_order(spec, get_settings(), clock.now(), FACTS)
    # Then the order discount is split 1800:600 by largest remainder, on top of line discounts
    assert [(ln["discount_minor"], ln["total_minor"]) for ln in built.lines] == [
        (200 + 525, 2000 - 725),
        (175, 600 - 175),
    ]
    values = built.values
    assert (values["subtotal_minor"], values["discount_minor"], values["total_minor"]) == (
        2600,
        900,
        1700,
    )
    # and an import_paid order is paid with no payment deadline, created by its actor
    assert (values["status"], values["payment_deadline_at"], values["created_by"]) == (
        "paid",
        None,
        "channel:shop",
    )


def test_build_order_refuses_a_discount_above_the_net_subtotal() -> None:
    spec = _spec(
        [("A", 1)],
        lines=(creation.LineSpec("A", 1, 1000, discount_minor=400),),
        discount_minor=601,
    )
    with pytest.raises(InvalidOrder) as refused:
        creation.build_order(spec, get_settings(), clock.now(), FACTS)
    assert refused.value.detail == "discount exceeds the order's subtotal"


def test_an_api_order_keeps_its_duplicate_fingerprint() -> None:
    # Given an API request (prices as the request wrote them)
    cmd = order_for([("TEA-LJ-250", 2), ("CUP-CER-01", 1)])
    spec = creation.spec_of(cmd, API, check_fingerprint=True)
    # When it is built
    built = creation.build_order(spec, get_settings(), clock.now(), FACTS)
    # Then its fingerprint is the one the API always computed (request's price strings)
    expected = hashlib.sha256(
        orjson.dumps(
            [
                cmd.channel,
                spec.personal.customer_phone_bidx,
                cmd.currency,
                3000,
                sorted((ln.sku, ln.quantity, ln.unit_price) for ln in cmd.lines),
            ]
        )
    ).hexdigest()
    assert built.values["fingerprint"] == expected


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_ingest_mode_creates_every_valid_order_and_holds_what_it_must(db: Database) -> None:
    # Given a stocked order, an order of a SKU nobody stocks, one with a hold of its own and
    # one whose discount is too large
    ingest = {"actor": SYNC, "hold_on_shortage": True}
    hold = creation.HoldSpec("channel", "sku_unmapped", {"platform_skus": ["X-1"]})
    specs = [
        _spec([("A", 2)], external_id="E1", **ingest),
        _spec([("NOBODY-STOCKS", 1)], external_id="E2", **ingest),
        _spec([("A", 1)], external_id="E3", holds=(hold,), **ingest),
        _spec([("A", 1)], external_id="E4", discount_minor=10**9, **ingest),
    ]
    async with db.transaction() as session:
        (on_hand, reserved_before) = (
            await session.execute(select(Stock.on_hand, Stock.reserved).where(Stock.sku == "A"))
        ).one()
    # When they are created in ingest mode
    async with db.transaction() as session:
        created = await creation.create_many(session, specs, defer_unusual=False)
    # Then three orders exist, the short one and the one with its own hold are held
    first, short, held, invalid = created.outcomes
    assert isinstance(first, creation.Created) and first.holds == []
    assert isinstance(short, creation.Created)
    assert [(h.type, h.detail) for h in short.holds] == [
        ("stock_shortage", {"skus": [{"sku": "NOBODY-STOCKS", "requested": 1, "missing": 1}]})
    ]
    assert isinstance(held, creation.Created)
    assert [(h.type, h.detail) for h in held.holds] == [
        ("sku_unmapped", {"platform_skus": ["X-1"]})
    ]
    # and the invalid one got its error and wrote nothing
    assert isinstance(invalid, InvalidOrder)
    assert created.stock == {}
    assert await _count(db, SalesOrder) == 3
    assert await _count(db, OrderEvent) == 3
    # (three orders' OrderCreated, and each hold's ExceptionCaseOpened: ADR 0043)
    async with db.transaction(write=False) as session:
        events = (await session.scalars(select(OutboxEvent.event_type))).all()
    assert sorted(events) == ["ExceptionCaseOpened"] * 2 + ["OrderCreated"] * 3
    # and the stock was taken at once for the two stocked orders (3 units), none for the short
    async with db.transaction(write=False) as session:
        assert (
            await session.execute(select(Stock.on_hand, Stock.reserved).where(Stock.sku == "A"))
        ).one() == (on_hand, reserved_before + 3)
        assert (
            await session.scalar(select(func.count()).where(Reservation.order_id == short.order_id))
            == 0
        )


async def test_group_commit_mode_defers_the_unusual_and_leaves_the_stock_to_the_caller(
    db: Database,
) -> None:
    # Given a plain order, a short one, and a twin of the plain one (keyless, checked)
    specs = [
        _spec([("A", 2)], check_fingerprint=True),
        _spec([("NOBODY-STOCKS", 1)], check_fingerprint=True),
        _spec([("A", 2)], check_fingerprint=True),
    ]
    # When they are created in group-commit mode, without taking the stock
    async with db.transaction() as session:
        created = await creation.create_many(session, specs, defer_unusual=True)
        # Then only the plain one is written; the others are left to create_order
        plain, short, twin = created.outcomes
        assert isinstance(plain, creation.Created) and (short, twin) == (None, None)
        stock_ids = list(created.stock)
        assert list(created.stock.values()) == [2]
        reserved = await session.scalar(select(Stock.reserved).where(Stock.id == stock_ids[0]))
        await creation.take_batch_stock(session, created)
        # and the stock row is taken only by take_batch_stock
        assert (
            await session.scalar(select(Stock.reserved).where(Stock.id == stock_ids[0]))
        ) == reserved + 2
    assert await _count(db, SalesOrder) == 1
    assert await _count(db, OrderEvent) == 1
