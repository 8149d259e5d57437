"""Payments test helpers: attempts written straight through the repository, notices built in
our terms, counts of what applying them left behind, and the payment simulator on a real port."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.payments import apply, inbox, repository
from ordertally.payments.models import Payment
from ordertally.payments.providers import Notice
from ordertally.payments.simulator.app import create_sim_app
from ordertally.payments.simulator.keys import SimKeys
from tests.live import free_port, serve_live

SIM_TIME_SCALE = 1000.0  # the simulator's retry schedules, 1000x faster (15 s: 15 ms)

_seq = itertools.count(1)


async def make_attempt(db: Database, order: SalesOrder, provider: str = "wechatpay") -> Payment:
    """A pending attempt for an order's total, as open_attempt would write it."""
    now = clock.now()
    n = next(_seq)
    values: dict[str, Any] = {
        "order_id": order.id,
        "order_no": order.order_no,
        "provider": provider,
        "out_trade_no": f"{order.order_no}P{n:02d}",
        "amount_minor": order.total_minor,
        "currency": order.currency,
        "state": "pending",
        "provider_txn_id": None,
        "paid_amount_minor": None,
        "paid_at": None,
        "settles_order": False,
        "refunded_minor": 0,
        "provider_params": None,
        "deadline_at": order.payment_deadline_at,
        "next_query_at": now + timedelta(minutes=5),
        "query_count": 0,
        "last_query_at": None,
        "last_query_state": None,
        "last_error": None,
        "created_by": "tests",
        "created_at": now,
        "updated_at": now,
    }
    async with db.transaction() as session:
        payment_id = await repository.insert_payment(session, values)
    return Payment(id=payment_id, **values)


def paid_notice(
    payment: Payment,
    *,
    txn: str | None = None,
    amount_minor: int | None = None,
    dedupe_key: str | None = None,
    out_trade_no: str | None = None,
) -> Notice:
    """A verified TRANSACTION.SUCCESS (or TRADE_SUCCESS) notice in our terms."""
    n = next(_seq)
    return Notice(
        provider=payment.provider,
        dedupe_key=dedupe_key or f"notif-{n}",
        event_type="TRANSACTION.SUCCESS",
        kind="payment",
        out_trade_no=out_trade_no or payment.out_trade_no,
        provider_txn_id=txn or f"4200{payment.id:08d}",
        trade_state="SUCCESS",
        facts={
            "status": "paid",
            "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
            "currency": "CNY",
            "paid_at": clock.now().isoformat(),
        },
        headers={},
        body="{}",
    )


def refund_notice(
    payment: Payment,
    *,
    refund_minor: int,
    out_refund_no: str,
    dedupe_key: str | None = None,
    cumulative: bool = False,
) -> Notice:
    """A REFUND.SUCCESS (WeChat: this refund's amount; Alipay: the running total)."""
    n = next(_seq)
    facts: dict[str, Any] = {
        "status": "success",
        "out_refund_no": out_refund_no,
        "refund_id": f"5030{n:08d}",
        "total_minor": payment.amount_minor,
        "refunded_at": clock.now().isoformat(),
    }
    facts["refunded_total_minor" if cumulative else "refund_minor"] = refund_minor
    return Notice(
        provider=payment.provider,
        dedupe_key=dedupe_key or f"refund-{n}",
        event_type="REFUND.SUCCESS",
        kind="refund",
        out_trade_no=payment.out_trade_no,
        provider_txn_id=f"4200{payment.id:08d}",
        trade_state="SUCCESS",
        facts=facts,
        headers={},
        body="{}",
    )


async def store_and_apply(db: Database, notice: Notice) -> tuple[int | None, str | None]:
    """Store a notice (one transaction) then apply it (another), as callback + worker do."""
    async with db.transaction() as session:
        notification_id = await inbox.store_notice(
            session, notice, source="callback", received_at=clock.now(), publish=False
        )
    if notification_id is None:
        return None, None
    async with db.transaction() as session:
        outcome = await apply.apply_notification(session, notification_id)
    return notification_id, outcome


async def order_state(db: Database, order_no: str) -> tuple[str, int]:
    """(status, version) of an order."""
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))
    assert order is not None
    return order.status, order.version


async def trail(db: Database, order_id: int) -> list[tuple[Any, ...]]:
    """(event, actor_kind, actor_id, evidence_ref) of an order's audit rows after creation."""
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
            )
        ).all()
    return [(e.event, e.actor_kind, e.actor_id, e.evidence_ref) for e in rows[1:]]


async def cases(db: Database, type_: str | None = None) -> list[ExceptionCase]:
    """Payment exception cases, oldest first."""
    async with db.transaction(write=False) as session:
        stmt = select(ExceptionCase).where(ExceptionCase.category == "payment")
        if type_ is not None:
            stmt = stmt.where(ExceptionCase.type == type_)
        return list((await session.scalars(stmt.order_by(ExceptionCase.id))).all())


async def count(db: Database, model: Any, *where: Any) -> int:
    """Rows of a table matching some conditions."""
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def payment_row(db: Database, payment_id: int) -> Payment:
    """An attempt as stored."""
    async with db.transaction(write=False) as session:
        found = await repository.get_payment(session, payment_id)
    assert found is not None
    return found


@contextmanager
def serve_payment_simulator(
    key_dir: Path, wrap: Callable[[Any], Any] = lambda app: app
) -> Iterator[tuple[str, SimKeys]]:
    """The payment simulator (time scaled SIM_TIME_SCALE) on a port of its own until the block
    ends, behind `wrap(app)`; yields its base URL and the key set in `key_dir` pointed at it."""
    port = free_port()
    keys = dataclasses.replace(SimKeys.load(key_dir), api_base=f"http://127.0.0.1:{port}")
    app = lambda: wrap(create_sim_app(keys, time_scale=SIM_TIME_SCALE))  # noqa: E731
    with serve_live(app, port=port, name="paysim") as server:
        yield server.url, keys
