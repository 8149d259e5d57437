"""After-sales test helpers: orders paid through the simulator and walked along the order
table, cases opened and moved through the service, counts of what was written."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
from sqlalchemy import func, select

from ordertally.aftersales import refunds, service
from ordertally.aftersales.models import AftersalePlatformRecord, AftersaleRefund
from ordertally.aftersales.schemas import CaseCreate
from ordertally.core.db import Database
from ordertally.inventory.models import StockMovement
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Actor
from ordertally.payments.models import Payment, PaymentRefund
from tests.factories import DRIVERS, make_order
from tests.payments.helpers import make_attempt, paid_notice, store_and_apply

WALK = ["allocate", "start_fulfillment", "ship", "deliver"]


async def walk(db: Database, order_no: str, to: str) -> SalesOrder:
    """Move a paid order along the table until `to` (shipped or delivered)."""
    order = None
    async with db.transaction() as session:
        for name in WALK[: WALK.index({"shipped": "ship", "delivered": "deliver"}[to]) + 1]:
            order = (
                await orders_service.transition(session, order_no, name, Actor(DRIVERS[name], "t"))
            ).order
    assert order is not None
    return order


async def paid_order(
    db: Database, platform: httpx.AsyncClient | None, status: str = "shipped", **overrides: Any
) -> tuple[SalesOrder, Payment]:
    """An order paid through WeChat Pay (the trade exists at the simulator too), then moved
    to `status`."""
    order = await make_order(db, **overrides)
    payment = await make_attempt(db, order)
    if platform is not None:
        opened = await platform.post(
            "/sim/payments",
            json={
                "provider": "wechatpay",
                "out_trade_no": payment.out_trade_no,
                "amount": order.total_minor,
            },
        )
        assert opened.status_code == 201, opened.text
        paid = await platform.post(
            "/sim/pay", json={"provider": "wechatpay", "out_trade_no": payment.out_trade_no}
        )
        assert paid.status_code == 200, paid.text
    _, outcome = await store_and_apply(db, paid_notice(payment))
    assert outcome == "paid"
    if status in ("shipped", "delivered"):
        order = await walk(db, order.order_no, status)
    return order, payment


async def open_case(db: Database, actor: str = "cs-1", **body: Any) -> str:
    """Open a case through the service; returns its number."""
    async with db.transaction() as session:
        case, _ = await service.open_case(session, CaseCreate.model_validate(body), actor)
    return case.case_no


async def approve(db: Database, case_no: str) -> str:
    async with db.transaction() as session:
        return (await service.approve(session, case_no, "cs-1")).status


async def request_refund(db: Database, case_no: str, amount_minor: int | None = None) -> int:
    async with db.transaction() as session:
        made = await refunds.request_refund(
            session, case_no, "cs-1", role="cs", amount_minor=amount_minor
        )
    return made.id


async def case_status(db: Database, case_no: str) -> str:
    async with db.transaction(write=False) as session:
        return (await service.get_case(session, case_no)).status


async def order_status(db: Database, order_no: str) -> str:
    async with db.transaction(write=False) as session:
        return (await orders_service.get_order(session, order_no)).status


async def refund_rows(db: Database) -> list[AftersaleRefund]:
    async with db.transaction(write=False) as session:
        return list(
            (await session.scalars(select(AftersaleRefund).order_by(AftersaleRefund.id))).all()
        )


async def provider_refunds(db: Database) -> list[tuple[str, int]]:
    """(out_refund_no, amount) of the refunds payments recorded."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(PaymentRefund.out_refund_no, PaymentRefund.amount_minor).order_by(
                PaymentRefund.id
            )
        )
        return [(r, int(a)) for r, a in rows.all()]


async def on_hand_and_ledger(db: Database, sku: str) -> tuple[int, int]:
    """Stock on hand of a SKU (all warehouses) and the sum of its ledger movements."""
    from ordertally.inventory.models import Stock

    async with db.transaction(write=False) as session:
        on_hand = await session.scalar(
            select(func.coalesce(func.sum(Stock.on_hand), 0)).where(Stock.sku == sku)
        )
        moved = await session.scalar(
            select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
                StockMovement.sku == sku
            )
        )
    return int(on_hand or 0), int(moved or 0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`ordertally aftersales ARGS` in a process of its own, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ordertally", "aftersales", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


async def stored_records(db: Database) -> list[tuple[str, str, str]]:
    """The after-sales inbox: (channel, key, status) of each stored platform record, in order."""
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(AftersalePlatformRecord).order_by(AftersalePlatformRecord.id)
            )
        ).all()
    return [(r.channel, r.platform_refund_id, r.status) for r in rows]
