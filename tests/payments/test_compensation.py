"""Compensation against the simulator over real HTTP: payments opened through the API, buyers
paying while the simulator drops 10% of the notifications; active queries bring every paid
order to paid before its deadline, the timeout closes only the unpaid ones, and the last query
before closing catches a payment made at the last moment. Also: reconciliation of the
simulator's own bill, and manual recovery that finds the payment by querying first. And a buyer
who pays after a person cancelled the order, with the notification lost: the attempt is still
queried up to its deadline, so the payment is recorded as paid after close (issue 21's drill)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ordertally.auth import service as auth_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import dispatcher
from ordertally.exceptions.models import ExceptionCase
from ordertally.jobs import scheduler
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.payments import (
    consumers,  # noqa: F401  (registers the apply consumer)
    reconcile,
)
from ordertally.payments import jobs as payment_jobs  # noqa: F401  (registers the jobs)
from ordertally.payments.models import Payment, PaymentNotification
from ordertally.payments.simulator import keys as sim_keys
from tests.factories import auth, order_body
from tests.live import LiveServer
from tests.payments.helpers import serve_payment_simulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def simulator(sim_key_dir: Path) -> Iterator[tuple[str, sim_keys.SimKeys]]:
    """The payment simulator on a free port (time scaled 1000x), and its keys (the session's)."""
    with serve_payment_simulator(sim_key_dir) as simulator:
        yield simulator


@pytest.fixture
def wired(
    simulator: tuple[str, sim_keys.SimKeys],
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, LiveServer]]:
    """ordertally configured with the simulator's keys and API bases, notified at the server."""
    base, keys = simulator
    for name, value in keys.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORDERTALLY_PAYMENT_NOTIFY_BASE_URL", live_server.url)
    reset_settings()
    yield base, live_server
    reset_settings()


async def _sim_idle(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status = (await client.get(f"{base}/sim/status")).json()
        if status["pending_deliveries"] == 0:
            return dict(status)
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def _statuses(db: Database, order_nos: list[str]) -> Counter[str]:
    async with db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(SalesOrder.status).where(SalesOrder.order_no.in_(order_nos))
            )
        ).all()
    return Counter(rows)


async def _run_job(db: Database, name: str) -> dict[str, Any] | None:
    return await scheduler.run_tick(db, scheduler.JOBS[name], "test-worker")


async def _open_payments(
    client: httpx.AsyncClient, server: LiveServer, key: str, n: int
) -> list[dict[str, Any]]:
    opened = []
    for i in range(n):
        order = await client.post(
            f"{server.url}/api/v1/orders",
            json=order_body(external_id=f"comp-{i}"),
            headers=auth(key),
        )
        assert order.status_code == 201, order.text
        provider = "wechatpay" if i % 2 else "alipay"
        response = await client.post(
            f"{server.url}/api/v1/orders/{order.json()['order_no']}/payments",
            json={"provider": provider},
            headers=auth(key, **{"Idempotency-Key": f"pay-{i}"}),
        )
        assert response.status_code == 201, response.text
        opened.append(response.json())
    return opened


async def test_compensation_pays_every_paid_order_and_closes_none_of_them(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    base, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        # Given 40 orders with a QR code each (half WeChat Pay, half Alipay)
        opened = await _open_payments(client, server, keys["cs"], 40)
        assert {p["provider_params"]["trade_type"] for p in opened} == {"NATIVE", "PRECREATE"}
        assert all(p["state"] == "pending" and p["amount"] == "159.70" for p in opened)
        # And each trade expires at the platform when its order's payment deadline passes
        # (time_expire), so a buyer cannot pay an order the timeout is closing
        async with db.transaction(write=False) as session:
            rows = await session.execute(
                select(SalesOrder.order_no, SalesOrder.payment_deadline_at)
            )
            deadlines = {no: at for no, at in rows}
        trades = (await client.get(f"{base}/sim/payments")).json()
        assert len(trades) == 40
        for trade in trades:
            deadline = deadlines[trade["out_trade_no"].rsplit("P", 1)[0]]
            assert deadline is not None
            expires = datetime.fromisoformat(trade["expires_at"])
            assert expires == deadline.replace(microsecond=0), trade
        # And a repeated request (same Idempotency-Key) replays the same attempt
        replay = await client.post(
            f"{server.url}/api/v1/orders/{opened[0]['order_no']}/payments",
            json={"provider": opened[0]["provider"]},
            headers=auth(keys["cs"], **{"Idempotency-Key": "pay-0"}),
        )
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.json()["out_trade_no"] == opened[0]["out_trade_no"]
        # When the simulator drops 10% of notifications and 30 buyers pay
        behaviour = await client.post(f"{base}/sim/behaviour", json={"drop_rate": 0.1, "seed": 5})
        assert behaviour.status_code == 200
        payers, idlers = opened[:30], opened[30:]
        for p in payers:
            paid = await client.post(
                f"{base}/sim/pay",
                json={"provider": p["provider"], "out_trade_no": p["out_trade_no"]},
            )
            assert paid.status_code == 200, paid.text
        await _sim_idle(client, base)
        dropped = [
            d
            for d in (await client.get(f"{base}/sim/deliveries")).json()
            if d["variant"] == "dropped"
        ]
        await dispatcher.drain(db, get_settings())
        paid_nos = [p["order_no"] for p in payers]
        # Then the notified ones are paid and the dropped ones still pending
        assert 1 <= len(dropped) < 30
        assert await _statuses(db, paid_nos) == {
            "paid": 30 - len(dropped),
            "pending_payment": len(dropped),
        }
        # When nothing is due yet, the compensation job asks nobody
        assert await _run_job(db, "payments_query_due") == {"queried": 0}
        # When 5 minutes pass, the job queries every attempt without a result
        clock.advance(timedelta(minutes=5, seconds=1))
        result = await _run_job(db, "payments_query_due")
        assert result is not None
        assert result["queried"] == len(dropped) + 10
        assert result.get("paid") == len(dropped)
        # Then every paid order is paid, by the compensation query, well before its deadline
        assert await _statuses(db, paid_nos) == {"paid": 30}
        async with db.transaction(write=False) as session:
            by_query = (
                await session.scalars(
                    select(OrderEvent.actor_kind).where(OrderEvent.event == "payment_succeeded")
                )
            ).all()
        assert Counter(by_query) == {
            "payment_callback": 30 - len(dropped),
            "compensation_query": len(dropped),
        }
        # And the unpaid attempts are asked again 15 minutes later, not before
        clock.advance(timedelta(minutes=1))
        assert await _run_job(db, "payments_query_due") == {"queried": 0}
        # When one more buyer pays at the last minute and the notification is lost
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        late = idlers[0]
        await client.post(
            f"{base}/sim/pay",
            json={"provider": late["provider"], "out_trade_no": late["out_trade_no"]},
        )
        # And the payment deadline passes
        clock.advance(timedelta(minutes=25))
        closed = await _run_job(db, "close_unpaid_orders")
        # Then the timeout closes only the 9 orders nobody paid; the last query caught the late one
        assert closed == {"closed": 9}
        assert await _statuses(db, [p["order_no"] for p in opened]) == {"paid": 31, "closed": 9}
        async with db.transaction(write=False) as session:
            closed_paid = await session.scalar(
                select(SalesOrder.order_no).where(
                    SalesOrder.order_no.in_([*paid_nos, late["order_no"]]),
                    SalesOrder.status == "closed",
                )
            )
        assert closed_paid is None


async def test_a_payment_after_a_cancel_with_its_notification_lost_is_found_by_a_query(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    base, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        # Given two orders with a QR code each (Alipay, WeChat Pay), every notification lost
        opened = await _open_payments(client, server, keys["cs"], 2)
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        for p in opened:
            # When the buyer leaves and cs cancels the order (the last query hears "not paid")
            cancelled = await client.post(
                f"{server.url}/api/v1/orders/{p['order_no']}/cancel",
                json={"reason": "buyer left"},
                headers=auth(keys["cs"]),
            )
            assert cancelled.status_code == 200, cancelled.text
            # And then pays the QR code anyway
            paid = await client.post(
                f"{base}/sim/pay",
                json={"provider": p["provider"], "out_trade_no": p["out_trade_no"]},
            )
            assert paid.status_code == 200, paid.text
        await _sim_idle(client, base)
        sent = [d["variant"] for d in (await client.get(f"{base}/sim/deliveries")).json()]
        assert sent == ["dropped", "dropped"]
        await dispatcher.drain(db, get_settings())
        # When the next regular query is due (15 minutes later, before the 30-minute deadline)
        clock.advance(timedelta(minutes=15, seconds=1))
        result = await _run_job(db, "payments_query_due")
    # Then both payments are found and recorded as paid after close
    assert result == {"queried": 2, "paid_after_close": 2}
    await dispatcher.drain(db, get_settings())
    trades = [p["out_trade_no"] for p in opened]
    async with db.transaction(write=False) as session:
        outcomes = (
            await session.execute(
                select(
                    PaymentNotification.out_trade_no,
                    PaymentNotification.source,
                    PaymentNotification.outcome,
                )
                .where(PaymentNotification.out_trade_no.in_(trades))
                .order_by(PaymentNotification.out_trade_no)
            )
        ).all()
        cases = (
            await session.scalars(
                select(ExceptionCase.type).where(ExceptionCase.type == "paid_after_close")
            )
        ).all()
        attempts = (
            await session.scalars(
                select(Payment.next_query_at).where(Payment.out_trade_no.in_(trades))
            )
        ).all()
    assert sorted(outcomes) == sorted((t, "query", "paid_after_close") for t in trades)
    assert cases == ["paid_after_close", "paid_after_close"]
    assert attempts == [None, None]
    # And the orders stay closed, never paid
    assert await _statuses(db, [p["order_no"] for p in opened]) == {"closed": 2}
    async with db.transaction(write=False) as session:
        paid_events = await session.scalar(
            select(OrderEvent.id).where(OrderEvent.event == "payment_succeeded")
        )
    assert paid_events is None


async def test_bill_from_the_simulator_reconciles_after_compensation(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str], tmp_path: Path
) -> None:
    base, server = wired
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        opened = await _open_payments(client, server, keys["cs"], 6)
        # The notification of one WeChat payment is lost and nobody queried yet
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        lost = next(p for p in opened if p["provider"] == "wechatpay")
        await client.post(
            f"{base}/sim/pay",
            json={"provider": "wechatpay", "out_trade_no": lost["out_trade_no"]},
        )
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 0.0})
        for p in opened:
            if p["provider"] == "wechatpay" and p is not lost:
                await client.post(
                    f"{base}/sim/pay",
                    json={"provider": "wechatpay", "out_trade_no": p["out_trade_no"]},
                )
        await _sim_idle(client, base)
        await dispatcher.drain(db, get_settings())
        bill = await client.get(f"{base}/sim/bills/wechatpay")
        assert bill.status_code == 200
    path = tmp_path / "bill.csv"
    path.write_bytes(bill.content)
    # When the day's bill is reconciled
    report = await reconcile.run_file(db, "wechatpay", path, run_by="finance-tester")
    # Then the two notified payments match and the lost one is applied from the statement
    assert (report.counts["matched"], report.counts["platform_only"]) == (2, 1)
    assert [d["applied"] for d in report.discrepancies] == ["paid"]
    assert (await _statuses(db, [lost["order_no"]])) == {"paid": 1}


async def test_manual_approval_queries_the_provider_first(
    db: Database, wired: tuple[str, LiveServer], keys: dict[str, str]
) -> None:
    base, server = wired
    async with db.transaction() as session:
        _, second = await auth_service.create_api_key(session, "finance-second", "finance")
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        [attempt] = await _open_payments(client, server, keys["cs"], 1)
        # The buyer paid, the notification was lost; finance vouches for a bank reference
        await client.post(f"{base}/sim/behaviour", json={"drop_rate": 1.0})
        await client.post(
            f"{base}/sim/pay",
            json={"provider": attempt["provider"], "out_trade_no": attempt["out_trade_no"]},
        )
        request = await client.post(
            f"{server.url}/api/v1/orders/{attempt['order_no']}/manual-payment",
            json={
                "reference": "screenshot-889",
                "amount": "159.70",
                "paid_at": (clock.now() - timedelta(hours=2)).isoformat(),
                "reason": "buyer sent a payment screenshot",
            },
            headers=auth(keys["finance"]),
        )
        assert request.status_code == 201, request.text
        # When a second finance user approves it
        approved = await client.post(
            f"{server.url}/api/v1/manual-payments/{request.json()['id']}/approve",
            headers=auth(second),
        )
    # Then the active query found the real payment: the order is paid by it, not by finance
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "superseded"
    assert "paid" in approved.json()["query_outcome"]
    async with db.transaction(write=False) as session:
        trail = (
            await session.scalars(
                select(OrderEvent.actor_kind).where(OrderEvent.event == "payment_succeeded")
            )
        ).all()
    assert trail == ["compensation_query"]
