"""The facts a rule's condition sees, gathered through the other domains' services. Only the
facts some condition names are gathered (a rule set over `order` alone never reads stock)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import service as channels_service
from ordertally.core import clock
from ordertally.customers import service as customers_service
from ordertally.inventory import service as inventory_service
from ordertally.orders import queries as orders_queries
from ordertally.rules import repository

if TYPE_CHECKING:
    from ordertally.orders.models import SalesOrder

PLAN_HORIZON = timedelta(days=7)


def _iso(value: Any) -> str:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z")


async def planned_7d(session: AsyncSession, skus: Collection[str]) -> dict[tuple[str, str], int]:
    """Units expected per (SKU, warehouse) from today through the next 7 days."""
    today = clock.now().date()
    return await repository.planned_quantities(session, sorted(skus), today, today + PLAN_HORIZON)


async def order_facts(
    session: AsyncSession, order: SalesOrder, wanted: Collection[str], status: str | None = None
) -> dict[str, Any]:
    """An order's facts (`order`, `lines`, `customer`, `stock`, `channel`), those in `wanted`;
    `status` stands for the order's status when the caller knows it changed since it was read
    (a transition's own transaction)."""
    return (await orders_facts(session, [order], wanted, status))[0]


async def orders_facts(
    session: AsyncSession,
    orders: list[SalesOrder],
    wanted: Collection[str],
    status: str | None = None,
) -> list[dict[str, Any]]:
    """`order_facts` of many orders, in order: their lines, warehouses and buyers' links are
    read in one query each (a payment transaction evaluates its orders together)."""
    ids = [o.id for o in orders]
    lines_by: dict[int, list[Any]] = {i: [] for i in ids}
    for line in await orders_queries.lines_of_many(session, ids):
        lines_by[line.order_id].append(line)
    placed = [o.id for o in orders if (status or o.status) != "pending_payment"]
    warehouses_by = (
        await inventory_service.warehouses_of_orders(session, placed)
        if "order" in wanted and placed
        else {}
    )
    customers_by = (
        await customers_service.rule_facts_many(session, ids) if "customer" in wanted else {}
    )
    return [
        await _facts_of(
            session,
            order,
            wanted,
            status or order.status,
            lines_by[order.id],
            sorted(warehouses_by.get(order.id, ())),
            customers_by.get(order.id),
        )
        for order in orders
    ]


async def _facts_of(
    session: AsyncSession,
    order: SalesOrder,
    wanted: Collection[str],
    status: str,
    lines: list[Any],
    warehouses: list[str],
    customer: dict[str, Any] | None,
) -> dict[str, Any]:
    skus = sorted({line.sku for line in lines})
    facts: dict[str, Any] = {}
    if "order" in wanted:
        facts["order"] = {
            "order_no": order.order_no,
            "channel": order.channel,
            "status": status,
            "currency": order.currency,
            "total_minor": order.total_minor,
            "subtotal_minor": order.subtotal_minor,
            "discount_minor": order.discount_minor,
            "shipping_minor": order.shipping_minor,
            "discount_ratio": (
                order.discount_minor / order.subtotal_minor if order.subtotal_minor > 0 else 0.0
            ),
            "line_count": len(lines),
            "quantity": sum(line.quantity for line in lines),
            "skus": skus,
            "province": order.ship_province,
            "warehouse_codes": warehouses,
            "created_at": _iso(order.created_at),
            "age_minutes": int(
                (clock.now() - clock.as_utc(order.created_at)).total_seconds() // 60
            ),
        }
    if "lines" in wanted:
        facts["lines"] = [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "amount_minor": line.total_minor,
            }
            for line in lines
        ]
    if "customer" in wanted:
        facts["customer"] = customer
    if "stock" in wanted:
        planned = await planned_7d(session, skus)
        stock: dict[str, Any] = {}
        for sku in skus:
            total = (await inventory_service.stock_view(session, sku))["total"]
            stock[sku] = {
                "available": int(total.get("available", 0)),
                "on_hand": int(total.get("on_hand", 0)),
                "reserved": int(total.get("reserved", 0)),
                "safety_stock": int(total.get("safety_stock", 0)),
                "planned_7d": sum(q for (s, _), q in planned.items() if s == sku),
            }
        facts["stock"] = stock
    if "channel" in wanted:
        facts["channel"] = {"code": order.channel}
    return facts


async def stock_subjects(session: AsyncSession) -> list[tuple[str, dict[str, Any]]]:
    """Every (SKU, warehouse) as (subject, facts) for the stock rules."""
    levels = await inventory_service.stock_levels(session)
    planned = await planned_7d(session, {row["sku"] for row in levels})
    return [
        (
            f"{row['sku']}@{row['warehouse']}",
            {"stock": {**row, "planned_7d": planned.get((row["sku"], row["warehouse"]), 0)}},
        )
        for row in levels
    ]


async def channel_subjects(session: AsyncSession) -> list[tuple[str, dict[str, Any]]]:
    """Every channel account as (subject, facts) for the channel rules."""
    out: list[tuple[str, dict[str, Any]]] = []
    for account in await channels_service.list_accounts(session):
        state = await channels_service.sync_state(session, account.id)
        out.append(
            (
                account.code,
                {
                    "channel": {
                        "code": account.code,
                        "platform": account.platform,
                        "active": bool(account.active),
                        "empty_pulls": state.empty_streak,
                        "orders_seen": state.orders_seen,
                        "error_count": state.error_count,
                    }
                },
            )
        )
    return out
