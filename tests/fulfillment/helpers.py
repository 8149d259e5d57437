"""Fulfillment test helpers: a paid order split over two warehouses, signed Kuaidi100 pushes
built with the adapter's own wire functions, and reads of what the database holds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import ordertally.fulfillment.consumers  # noqa: F401  (the allocate consumer, as a worker has it)
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.exceptions.models import ExceptionCase
from ordertally.fulfillment.carriers import kuaidi100
from ordertally.fulfillment.models import Shipment, TrackingEvent
from ordertally.inventory.models import Reservation, StockMovement
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import add_warehouse, order_for, receive

SALT = "test-salt-里程"
SECOND_WAREHOUSE = "WH-B"
SECOND_SKU = "B-ONLY"


def configure_kuaidi100(monkeypatch: pytest.MonkeyPatch, api_base: str, **extra: str) -> None:
    """Turn the Kuaidi100 adapter on, pointed at `api_base` (a simulator, or nothing at all)."""
    values = {
        "ORDERTALLY_KUAIDI100_API_BASE": api_base,
        "ORDERTALLY_KUAIDI100_CUSTOMER": "TESTCUSTOMER",
        "ORDERTALLY_KUAIDI100_KEY": "testkey",
        "ORDERTALLY_KUAIDI100_SALT": SALT,
        "ORDERTALLY_KUAIDI100_SECRET": "testsecret",
        "ORDERTALLY_KUAIDI100_TIMEOUT_SECONDS": "2",
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings()


async def split_paid_order(db: Database, **overrides: Any) -> SalesOrder:
    """A paid order whose lines sit in two warehouses, its OrderPaid event dispatched (so the
    fulfillment consumer has planned its shipments)."""
    await ensure_second_warehouse(db)
    cmd = order_for([("TEA-LJ-250", 2), (SECOND_SKU, 1)], **overrides)
    async with db.transaction() as session:
        snap, _ = await orders_service.create_order(
            session, cmd, Actor(ActorKind.API, "tests"), check_fingerprint=False
        )
        await orders_service.transition(
            session,
            snap.order.order_no,
            "payment_succeeded",
            Actor(ActorKind.PAYMENT_CALLBACK, "tests"),
        )
    await drain(db, get_settings())
    async with db.transaction() as session:
        order = await session.scalar(
            select(SalesOrder).where(SalesOrder.order_no == snap.order.order_no)
        )
        assert order is not None
        return order


async def ensure_second_warehouse(db: Database) -> None:
    async with db.transaction() as session:
        from ordertally.inventory import service as inventory_service

        codes = {w.code for w in await inventory_service.list_warehouses(session)}
    if SECOND_WAREHOUSE not in codes:
        await add_warehouse(db, SECOND_WAREHOUSE, province="广东省")
        await receive(db, SECOND_WAREHOUSE, SECOND_SKU, 100_000)


async def shipments(db: Database, order_id: int) -> list[Shipment]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Shipment).where(Shipment.order_id == order_id).order_by(Shipment.id)
        )
        return list(rows.all())


async def events_of(db: Database, shipment_id: int) -> list[TrackingEvent]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(TrackingEvent)
            .where(TrackingEvent.shipment_id == shipment_id)
            .order_by(TrackingEvent.occurred_at)
        )
        return list(rows.all())


def beijing(at: datetime) -> str:
    return kuaidi100.format_beijing_time(at)


def push_form(
    company: str,
    number: str,
    steps: list[tuple[datetime, str, str]],
    *,
    status: str = "polling",
    salt: str = SALT,
    forge: bool = False,
) -> dict[str, str]:
    """A Kuaidi100 push for `steps` (time, state code, words), newest first as Kuaidi100 sends
    them, signed MD5(param + salt) upper hex."""
    ordered = sorted(steps, key=lambda s: s[0], reverse=True)
    state = ordered[0][1] if ordered else "0"
    param = {
        "status": status,
        "billstatus": "got",
        "message": "",
        "lastResult": {
            "message": "ok",
            "state": state,
            "status": "200",
            "condition": "F00",
            "ischeck": "1" if state == "3" else "0",
            "com": company,
            "nu": number,
            "data": [
                {
                    "context": words,
                    "time": beijing(at),
                    "ftime": beijing(at),
                    "status": kuaidi100.STATE_NAMES.get(code, "在途"),
                    "statusCode": code,
                    "areaName": "上海市",
                }
                for at, code, words in ordered
            ],
        },
    }
    text = json.dumps(param, ensure_ascii=False, separators=(",", ":"))
    sign = kuaidi100.push_sign(text, salt)
    if forge:
        sign = ("0" if sign[0] != "0" else "1") + sign[1:]
    return {"param": text, "sign": sign}


def script(start: datetime, final: str = "3", steps: int = 5) -> list[tuple[datetime, str, str]]:
    """揽收, in transit, out for delivery and a final state, an hour apart."""
    out = [(start, "1", "【上海市】快件已揽收")]
    for n in range(1, steps - 2):
        out.append((start + timedelta(hours=n), "0", f"【中转站{n}】快件已发出"))
    out.append((start + timedelta(hours=steps - 2), "5", "【上海市】快件派送中"))
    words = {"3": "已签收，签收人是本人", "14": "收件人拒签", "2": "地址不详，疑难件"}
    out.append((start + timedelta(hours=steps - 1), final, words.get(final, "状态更新")))
    return out


def now_minus(hours: float) -> datetime:
    return clock.now() - timedelta(hours=hours)


VOLATILE = {"order_id", "shipment_id", "event_id", "tracking_url"}


def normalise(value: Any, names: dict[str, str], tag: str) -> Any:
    """A stored value without what differs between two data sets: ids, times, our order
    numbers (by position), our waybill numbers (by tag)."""
    if isinstance(value, dict):
        return {
            k: normalise(v, names, tag)
            for k, v in sorted(value.items())
            if k not in VOLATILE and not k.endswith("_at")
        }
    if isinstance(value, (list, tuple)):
        return [normalise(v, names, tag) for v in value]
    if isinstance(value, str):
        for real, alias in names.items():
            value = value.replace(real, alias)
        return value.replace(f"-{tag}-", "-X-")
    return value


async def stored_rows(db: Database, orders: list[SalesOrder], tag: str) -> list[dict[str, Any]]:
    """Per order (in data-set order): the order row, its shipments, its audit trail, its outbox
    events, its ledger rows and reservations, normalised."""
    names = {o.order_no: f"#{pos}" for pos, o in enumerate(orders)}
    out = []
    async with db.transaction() as session:
        for order in orders:
            fresh = await session.get(SalesOrder, order.id, populate_existing=True)
            assert fresh is not None
            parcels = (
                await session.scalars(
                    select(Shipment).where(Shipment.order_id == order.id).order_by(Shipment.id)
                )
            ).all()
            audit = (
                await session.scalars(
                    select(OrderEvent)
                    .where(OrderEvent.order_id == order.id)
                    .order_by(OrderEvent.version)
                )
            ).all()
            events = (
                await session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.aggregate_id == order.order_no)
                    .order_by(OutboxEvent.id)
                )
            ).all()
            ledger = (
                await session.scalars(
                    select(StockMovement)
                    .where(StockMovement.order_id == order.id)
                    .order_by(StockMovement.id)
                )
            ).all()
            reservations = (
                await session.execute(
                    select(Reservation.sku, Reservation.state, Reservation.quantity).where(
                        Reservation.order_id == order.id
                    )
                )
            ).all()
            cases = (
                await session.execute(
                    select(ExceptionCase.type, ExceptionCase.blocking, ExceptionCase.detail)
                    .where(
                        ExceptionCase.order_id == order.id,
                        # the customer rules' cases (a burst of one buyer's orders) belong to
                        # the data sets' making, not to what is compared
                        ExceptionCase.category == "fulfillment",
                    )
                    .order_by(ExceptionCase.id)
                )
            ).all()
            # Two parcels of one order scanned together may be taken in either order: the
            # sequence keeps where each ShipmentShipped stands, their payloads are compared
            # as a set.
            sequence = [e.event_type for e in events]
            shipped = sorted(
                (
                    normalise(e.payload, names, tag)
                    for e in events
                    if e.event_type == "ShipmentShipped"
                ),
                key=repr,
            )
            others = [
                (e.event_type, normalise(e.payload, names, tag))
                for e in events
                if e.event_type != "ShipmentShipped"
            ]
            out.append(
                {
                    "order": normalise(
                        {
                            "status": fresh.status,
                            "version": fresh.version,
                            "waybill_nos": fresh.waybill_nos,
                        },
                        names,
                        tag,
                    ),
                    "shipments": [
                        normalise(
                            {
                                "warehouse": s.warehouse_code,
                                "status": s.status,
                                "company": s.company,
                                "waybill_no": s.waybill_no,
                                "shipped_by": s.shipped_by,
                                "confirmed": s.confirmed_at is not None,
                                "shipped": s.shipped_at is not None,
                                "subscribe_due": s.next_subscribe_at is not None,
                                "waybill_due": s.next_waybill_at is not None,
                                "tracking_state_code": s.tracking_state_code,
                                "delivered": s.delivered_at is not None,
                                "last_event": s.last_event_at is not None,
                                "poll_due": s.next_poll_at is not None,
                            },
                            names,
                            tag,
                        )
                        for s in parcels
                    ],
                    "audit": [
                        (a.version, a.event, a.from_status, a.to_status, a.actor_kind, a.actor_id)
                        for a in audit
                    ],
                    "sequence": sequence,
                    "shipped": shipped,
                    "events": others,
                    "ledger": [
                        (m.warehouse_id, m.sku, m.kind, m.quantity, m.reason, m.actor)
                        for m in ledger
                    ],
                    "reservations": sorted(tuple(r) for r in reservations),
                    "cases": [normalise(tuple(c), names, tag) for c in cases],
                }
            )
    return out
