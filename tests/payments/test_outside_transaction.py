"""No provider call inside a database transaction: while the payment platform stalls for 2.5 s
in the middle of the compensation job or of the close job's last query, `POST /orders` through
the real app still completes in well under a second (on SQLite: the single writer is free), and
the stalled answers are recorded once they arrive."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.jobs import scheduler
from ordertally.orders import jobs as order_jobs  # noqa: F401  (registers close_unpaid_orders)
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.payments import jobs as payment_jobs  # noqa: F401  (jobs and the pre-close check)
from ordertally.payments.models import Payment
from tests.factories import auth, order_body
from tests.payments.helpers import serve_payment_simulator

pytestmark = pytest.mark.anyio

STALL_SECONDS = 2.5  # well over the 1 s an order may take meanwhile


class Stall:
    """The simulator behind a switch: while on, every platform API request (not the /sim
    control routes) waits STALL_SECONDS before the simulator answers it."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.on = threading.Event()
        self.entered = threading.Event()

    def around(self, app: ASGIApp) -> Stall:
        """Put the switch in front of `app`."""
        self.app = app
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.on.is_set() and not scope["path"].startswith("/sim"):
            self.entered.set()
            await asyncio.sleep(STALL_SECONDS)
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest.fixture
def stalling_platform(
    sim_key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Stall]]:
    """The payment simulator on a real port behind a stall switch; ordertally pointed at it
    (HTTP timeout 10 s, so a stalled answer still arrives)."""
    stall = Stall()
    with serve_payment_simulator(sim_key_dir, wrap=stall.around) as (base, keys):
        for name, value in keys.settings_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("ORDERTALLY_PAYMENT_HTTP_TIMEOUT_SECONDS", "10")
        reset_settings()
        yield base, stall
    reset_settings()


@pytest.fixture
async def platform(
    stalling_platform: tuple[str, Stall],
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Stall]]:
    """A client for the simulator's control routes; every notification is lost."""
    base, stall = stalling_platform
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as control:
        dropped = await control.post("/sim/behaviour", json={"drop_rate": 1.0})
        assert dropped.status_code == 200
        yield control, base, stall


async def _open_wechat_payments(
    client: httpx.AsyncClient, key: str, n: int
) -> list[dict[str, Any]]:
    opened = []
    for i in range(n):
        order = await client.post(
            "/api/v1/orders", json=order_body(external_id=f"stall-{i}"), headers=auth(key)
        )
        assert order.status_code == 201, order.text
        payment = await client.post(
            f"/api/v1/orders/{order.json()['order_no']}/payments",
            json={"provider": "wechatpay"},
            headers=auth(key),
        )
        assert payment.status_code == 201, payment.text
        opened.append(payment.json())
    return opened


async def _job_while_stalled(
    db: Database, name: str, stall: Stall, client: httpx.AsyncClient, key: str
) -> tuple[dict[str, Any] | None, float, float, httpx.Response]:
    """Run a job while the platform stalls; create an order once the job is waiting on the
    platform. Returns the job's result, how long it took, how long the order took, the order."""
    stall.on.set()
    started = time.perf_counter()
    job = asyncio.create_task(scheduler.run_tick(db, scheduler.JOBS[name], "stall-worker"))
    deadline = time.monotonic() + 5
    while not stall.entered.is_set():
        assert not job.done(), job.result()
        assert time.monotonic() < deadline, "the job never asked the platform"
        await asyncio.sleep(0.01)
    posted = time.perf_counter()
    created = await client.post(
        "/api/v1/orders", json=order_body(external_id="during-stall"), headers=auth(key)
    )
    order_seconds = time.perf_counter() - posted
    # The platform is still stalling: the order was created while the job waited on it.
    assert not job.done()
    result = await asyncio.wait_for(job, timeout=12)
    return result, time.perf_counter() - started, order_seconds, created


async def _order_states(db: Database, order_nos: list[str]) -> dict[str, str]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(SalesOrder.order_no, SalesOrder.status).where(
                    SalesOrder.order_no.in_(order_nos)
                )
            )
        ).all()
    return {no: status for no, status in rows}


async def _actors(db: Database, event: str) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(SalesOrder.order_no, OrderEvent.actor_kind)
                .join(SalesOrder, SalesOrder.id == OrderEvent.order_id)
                .where(OrderEvent.event == event)
                .order_by(OrderEvent.id)
            )
        ).all()
    return [(no, kind) for no, kind in rows]


async def test_orders_are_created_while_the_compensation_job_waits_on_a_stalled_platform(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    platform: tuple[httpx.AsyncClient, str, Stall],
) -> None:
    control, _, stall = platform
    # Given two WeChat Pay attempts; the first buyer paid and the notification was lost
    paid, unpaid = await _open_wechat_payments(client, keys["cs"], 2)
    buyer = await control.post(
        "/sim/pay", json={"provider": "wechatpay", "out_trade_no": paid["out_trade_no"]}
    )
    assert buyer.status_code == 200, buyer.text
    # And both attempts are due for an active query
    clock.advance(timedelta(minutes=5, seconds=1))
    # When the compensation job runs while the platform stalls 2.5 s on every query
    result, job_seconds, order_seconds, created = await _job_while_stalled(
        db, "payments_query_due", stall, client, keys["cs"]
    )
    # Then an order created meanwhile through the API completed in well under a second
    assert created.status_code == 201, created.text
    assert order_seconds < 1.0
    # And the job really waited on the platform, then recorded both answers
    assert job_seconds >= STALL_SECONDS
    assert result == {"queried": 2, "paid": 1, "pending": 1}
    assert await _order_states(
        db, [paid["order_no"], unpaid["order_no"], created.json()["order_no"]]
    ) == {
        paid["order_no"]: "paid",
        unpaid["order_no"]: "pending_payment",
        created.json()["order_no"]: "pending_payment",
    }
    assert await _actors(db, "payment_succeeded") == [(paid["order_no"], "compensation_query")]
    async with db.transaction(write=False) as session:
        attempts = {
            p.out_trade_no: (p.state, p.query_count, p.last_query_state, p.next_query_at is None)
            for p in (await session.scalars(select(Payment))).all()
        }
    # The unpaid attempt is no longer leased: its next query is scheduled as usual
    assert attempts == {
        paid["out_trade_no"]: ("paid", 1, "SUCCESS", True),
        unpaid["out_trade_no"]: ("pending", 1, "NOTPAY", False),
    }


async def test_orders_are_created_while_the_close_job_asks_a_stalled_platform(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    platform: tuple[httpx.AsyncClient, str, Stall],
) -> None:
    control, _, stall = platform
    # Given two WeChat Pay attempts; the first buyer paid at the last minute, notification lost
    paid, unpaid = await _open_wechat_payments(client, keys["cs"], 2)
    buyer = await control.post(
        "/sim/pay", json={"provider": "wechatpay", "out_trade_no": paid["out_trade_no"]}
    )
    assert buyer.status_code == 200, buyer.text
    # And the payment deadline has passed
    clock.advance(timedelta(minutes=30, seconds=1))
    # When the close job runs while the platform stalls 2.5 s on its last query
    result, job_seconds, order_seconds, created = await _job_while_stalled(
        db, "close_unpaid_orders", stall, client, keys["cs"]
    )
    # Then an order created meanwhile through the API completed in well under a second
    assert created.status_code == 201, created.text
    assert order_seconds < 1.0
    # And the last query, answered after the stall, kept the paid order open and paid it
    assert job_seconds >= STALL_SECONDS
    assert result == {"closed": 1}
    assert await _order_states(
        db, [paid["order_no"], unpaid["order_no"], created.json()["order_no"]]
    ) == {
        paid["order_no"]: "paid",
        unpaid["order_no"]: "closed",
        created.json()["order_no"]: "pending_payment",
    }
    assert await _actors(db, "payment_succeeded") == [(paid["order_no"], "compensation_query")]
    assert await _actors(db, "payment_timeout") == [(unpaid["order_no"], "scheduler")]
