"""Small factories for test data."""

from __future__ import annotations

from typing import Any

from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind

# The actor that may drive each transition, for walking an order along the table.
DRIVERS: dict[str, ActorKind] = {
    "payment_succeeded": ActorKind.PAYMENT_CALLBACK,
    "payment_timeout": ActorKind.SCHEDULER,
    "cancel": ActorKind.OPERATOR,
    "allocate": ActorKind.ALLOCATOR,
    "start_fulfillment": ActorKind.WAREHOUSE,
    "ship": ActorKind.WAREHOUSE,
    "deliver": ActorKind.CARRIER,
    "complete": ActorKind.SCHEDULER,
    "refund": ActorKind.PAYMENT_CALLBACK,
    "reopen_paid": ActorKind.PAYMENT_CALLBACK,
    "confirm_receipt": ActorKind.CHANNEL_SYNC,
    "aftersale_partial_refund": ActorKind.AFTERSALES,
    "aftersale_refund": ActorKind.AFTERSALES,
    "review_pass": ActorKind.OPERATOR,
    "review_hold": ActorKind.OPERATOR,
    "review_edit": ActorKind.OPERATOR,
}

# The shortest path from pending_payment to each status.
PATHS: dict[str, list[str]] = {
    "pending_payment": [],
    "paid": ["payment_succeeded"],
    "allocated": ["payment_succeeded", "allocate"],
    "fulfilling": ["payment_succeeded", "allocate", "start_fulfillment"],
    "shipped": ["payment_succeeded", "allocate", "start_fulfillment", "ship"],
    "delivered": ["payment_succeeded", "allocate", "start_fulfillment", "ship", "deliver"],
    "completed": [
        "payment_succeeded",
        "allocate",
        "start_fulfillment",
        "ship",
        "deliver",
        "complete",
    ],
    "closed": ["cancel"],
    "refunded": ["payment_succeeded", "refund"],
    "partially_refunded": [
        "payment_succeeded",
        "allocate",
        "start_fulfillment",
        "ship",
        "aftersale_partial_refund",
    ],
}


def auth(key: str, **headers: str) -> dict[str, str]:
    """Headers with a bearer key."""
    return {"Authorization": f"Bearer {key}", **headers}


def order_body(**overrides: Any) -> dict[str, Any]:
    """A valid order request body."""
    body: dict[str, Any] = {
        "channel": "wechat_mini",
        "customer": {"name": "张三", "phone": "13812345678"},
        "shipping_address": {
            "name": "李四",
            "phone": "13987654321",
            "province": "上海市",
            "city": "上海市",
            "district": "浦东新区",
            "line1": "世纪大道1号",
            "postal_code": "200120",
        },
        "lines": [
            {"sku": "TEA-LJ-250", "quantity": 2, "unit_price": "59.90"},
            {"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"},
        ],
        "currency": "CNY",
    }
    body.update(overrides)
    return body


async def make_order(db: Database, status: str = "pending_payment", **overrides: Any) -> SalesOrder:
    """Create an order through the service and walk it to `status`."""
    cmd = OrderCreate.model_validate(order_body(**overrides))
    async with db.transaction() as session:
        snap, _ = await orders_service.create_order(
            session, cmd, Actor(ActorKind.API, "factory"), check_fingerprint=False
        )
        order = snap.order
        for name in PATHS[status]:
            result = await orders_service.transition(
                session, order.order_no, name, Actor(DRIVERS[name], "factory")
            )
            order = result.order
    return order


async def add_warehouse(
    db: Database, code: str, province: str = "上海市", priority: int = 1, **values: Any
) -> None:
    """A warehouse, active, with no stock."""
    from ordertally.inventory import service as inventory_service

    async with db.transaction() as session:
        await inventory_service.create_warehouse(
            session,
            {
                "code": code,
                "name": f"仓库 {code}",
                "province": province,
                "city": province,
                "latitude": None,
                "longitude": None,
                "priority": priority,
                "cost_factor": 1.0,
                "active": True,
                **values,
            },
        )


async def add_skus(db: Database, *codes: str) -> None:
    """Catalogue rows for these codes (named after them) unless they exist."""
    from ordertally.catalog import service as catalog_service

    async with db.transaction() as session:
        known = await catalog_service.known_codes(session, codes)
        await catalog_service.add_skus(
            session,
            [
                {"code": c, "name": f"测试商品 {c}", "name_en": f"Test item {c}"}
                for c in dict.fromkeys(codes)
                if c not in known
            ],
            "factories",
        )


async def add_bundle(db: Database, code: str, components: dict[str, int], **values: Any) -> None:
    """A bundle of catalogue SKUs (created first when unknown)."""
    from ordertally.catalog import service as catalog_service

    await add_skus(db, *components)
    async with db.transaction() as session:
        await catalog_service.create_sku(
            session,
            {"code": code, "name": f"礼盒 {code}", "name_en": f"Gift box {code}", **values},
            "factories",
            [{"sku": c, "quantity": q} for c, q in components.items()],
        )


async def receive(db: Database, warehouse: str, sku: str, quantity: int) -> None:
    """A receipt of stock (of a catalogue SKU, created first when unknown)."""
    from ordertally.inventory import service as inventory_service

    await add_skus(db, sku)
    async with db.transaction() as session:
        await inventory_service.record_movement(
            session,
            warehouse_code=warehouse,
            sku=sku,
            kind="receipt",
            quantity=quantity,
            reason="test receipt",
            actor="tests",
        )


def order_for(
    lines: list[tuple[str, int]], province: str = "上海市", **overrides: Any
) -> OrderCreate:
    """An order command for some (sku, quantity) lines."""
    body = order_body(
        lines=[{"sku": sku, "quantity": q, "unit_price": "10.00"} for sku, q in lines],
        **overrides,
    )
    body["shipping_address"]["province"] = province
    return OrderCreate.model_validate(body)


async def close_case(db: Database, case_id: int, how: str) -> None:
    """Close an exception case as an operator does: `resolve` it, or `cancel` it as opened
    by mistake (either publishes ExceptionCaseClosed)."""
    async with db.transaction() as session:
        if how == "resolve":
            await exceptions_service.resolve(session, case_id, "ops", "confirmed with the buyer")
        else:
            who = exceptions_service.Who("ops")
            await exceptions_service.cancel(session, case_id, "opened by mistake", who)
