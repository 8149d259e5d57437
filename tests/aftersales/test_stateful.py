"""Hypothesis drives random after-sales sequences (refunds, returns with inspection, exchanges,
reshipments, platform refunds recorded twice, the refund job) over orders paid through the
WeChat Pay simulator and platform orders, on the real database; after every step: refunded ≤
paid per order and equal to the refund records (and, for our payments, to what payments
recorded), stock on hand = Σ movements, every returned unit of an inspected case restocked or
written off, each platform refund id applied once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from ordertally.aftersales import goods, refunds, service
from ordertally.aftersales.errors import AftersaleError
from ordertally.aftersales.models import AftersaleLine, AftersaleMoney, AftersaleRefund
from ordertally.aftersales.schemas import CaseCreate, Inspection, ParcelIn
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.inventory.models import Stock, StockMovement
from ordertally.payments.models import Payment
from ordertally.payments.simulator import keys as sim_keys
from tests.aftersales.helpers import paid_order
from tests.conftest import TEST_WAREHOUSE, empty_tables, seed_stock

ORDERS = 3  # paid through ordertally; one more comes from a platform


class AftersalesMachine(RuleBasedStateMachine):
    url: str = ""
    sim_base: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url, pool_size=10)
        self.orders: list[str] = []
        self.platform_order = ""
        self.cases: list[str] = []
        self.platform_ids: set[str] = set()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize()
    def setup(self) -> None:
        async def go() -> None:
            await empty_tables(self.db)
            await seed_stock(self.db)
            async with httpx.AsyncClient(base_url=self.sim_base, trust_env=False) as control:
                await control.post("/sim/reset")
                await control.post("/sim/behaviour", json={"drop_rate": 1.0})
                for i in range(ORDERS):
                    order, _ = await paid_order(self.db, control, "delivered", external_id=f"H{i}")
                    self.orders.append(order.order_no)
            order, _ = await paid_order(
                self.db, None, "delivered", channel="pinduoduo", external_id="PDD-1"
            )
            self.platform_order = order.order_no

        self.run(go())

    def teardown(self) -> None:
        self.run(empty_tables(self.db))
        self.run(self.db.dispose())
        self.loop.close()

    async def _try(self, step):  # type: ignore[no-untyped-def]
        try:
            async with self.db.transaction() as session:
                return await step(session)
        except AftersaleError:
            return None

    @rule(i=st.integers(0, ORDERS - 1), cents=st.integers(1, 9000))
    def refund_only(self, i: int, cents: int) -> None:
        async def go() -> None:
            cmd = CaseCreate(
                order_no=self.orders[i],
                type="refund_only",
                reason_code="h",
                refund_goods=f"{cents / 100:.2f}",
            )
            case = await self._try(lambda s: service.open_case(s, cmd, "h"))
            if case is None:
                return
            no = case[0].case_no
            self.cases.append(no)
            await self._try(lambda s: service.approve(s, no, "h"))
            await self._try(lambda s: refunds.request_refund(s, no, "h", role="cs"))

        self.run(go())

    @rule(
        i=st.integers(0, ORDERS - 1),
        good=st.integers(0, 2),
        kind=st.sampled_from(["return_refund", "exchange"]),
    )
    def return_goods(self, i: int, good: int, kind: str) -> None:
        async def go() -> None:
            cmd = CaseCreate(
                order_no=self.orders[i],
                type=kind,
                reason_code="h",
                lines=[{"line_no": 1, "quantity": 2}],
                refund_goods="119.80" if kind == "return_refund" else "0",
            )
            case = await self._try(lambda s: service.open_case(s, cmd, "h"))
            if case is None:
                return
            no = case[0].case_no
            self.cases.append(no)
            await self._try(lambda s: service.approve(s, no, "h"))
            parcel = ParcelIn(warehouse=TEST_WAREHOUSE, case_no=no)
            await self._try(lambda s: goods.receive_parcel(s, parcel, "wh"))
            damaged = 2 - good
            inspection = Inspection(
                warehouse=TEST_WAREHOUSE,
                lines=[
                    {
                        "line_no": 1,
                        "good": good,
                        "damaged": damaged,
                        "reason": "h" if damaged else None,
                    }
                ],
            )
            await self._try(lambda s: goods.inspect(s, no, inspection, "wh"))
            if kind == "exchange":
                await self._try(lambda s: service.exchange(s, no, "h"))
            else:
                await self._try(lambda s: refunds.request_refund(s, no, "h", role="cs"))

        self.run(go())

    @rule(i=st.integers(0, ORDERS - 1))
    def reship(self, i: int) -> None:
        async def go() -> None:
            cmd = CaseCreate(
                order_no=self.orders[i],
                type="reship",
                reason_code="missing",
                lines=[{"line_no": 2, "quantity": 1}],
            )
            case = await self._try(lambda s: service.open_case(s, cmd, "h"))
            if case is not None:
                no = case[0].case_no
                await self._try(lambda s: service.approve(s, no, "h"))
                await self._try(lambda s: service.reship(s, no, "h"))

        self.run(go())

    @rule(rid=st.sampled_from(["P1", "P2", "P3"]), cents=st.integers(1, 6000))
    def platform_refund(self, rid: str, cents: int) -> None:
        async def go() -> None:
            cmd = CaseCreate(
                order_no=self.platform_order,
                type="refund_only",
                reason_code="pdd",
                refund_goods=f"{cents / 100:.2f}",
                platform_refund_id=rid,
            )
            opened = await self._try(lambda s: service.open_case(s, cmd, "pdd-sync"))
            if opened is None:
                return
            case = opened[0]
            await self._try(lambda s: service.approve(s, case.case_no, "pdd-sync"))
            made = await self._try(
                lambda s: refunds.record_platform_refund(
                    s, case.case_no, rid, case.refund_minor, "pdd-sync"
                )
            )
            if made is not None:
                self.platform_ids.add(rid)

        self.run(go())

    @precondition(lambda self: bool(self.cases))
    @rule()
    def refund_job(self) -> None:
        self.run(refunds.send_due(self.db, clock.now()))

    @invariant()
    def money_tallies(self) -> None:
        async def go() -> None:
            async with self.db.transaction(write=False) as session:
                for row in (await session.scalars(select(AftersaleMoney))).all():
                    assert 0 <= row.refunded_minor <= row.committed_minor <= row.paid_minor
                    records = await session.scalar(
                        select(func.coalesce(func.sum(AftersaleRefund.amount_minor), 0)).where(
                            AftersaleRefund.order_id == row.order_id,
                            AftersaleRefund.state == "succeeded",
                        )
                    )
                    assert row.refunded_minor == records
                    paid = await session.scalar(
                        select(Payment.refunded_minor).where(
                            Payment.order_id == row.order_id, Payment.settles_order.is_(True)
                        )
                    )
                    provider = await session.scalar(
                        select(func.coalesce(func.sum(AftersaleRefund.amount_minor), 0)).where(
                            AftersaleRefund.order_id == row.order_id,
                            AftersaleRefund.state == "succeeded",
                            AftersaleRefund.source == "provider",
                        )
                    )
                    assert paid is None or paid == provider

        self.run(go())

    @invariant()
    def stock_is_the_ledger(self) -> None:
        async def go() -> None:
            async with self.db.transaction(write=False) as session:
                on_hand = dict(
                    (
                        await session.execute(
                            select(Stock.sku, func.sum(Stock.on_hand)).group_by(Stock.sku)
                        )
                    ).all()
                )
                moved = dict(
                    (
                        await session.execute(
                            select(StockMovement.sku, func.sum(StockMovement.quantity)).group_by(
                                StockMovement.sku
                            )
                        )
                    ).all()
                )
            assert {k: int(v) for k, v in on_hand.items() if v} == {
                k: int(v) for k, v in moved.items() if v
            }

        self.run(go())

    @invariant()
    def returned_units_are_accounted_for(self) -> None:
        async def go() -> None:
            async with self.db.transaction(write=False) as session:
                for case_no in self.cases:
                    case = await service.get_case(session, case_no)
                    if case.status not in ("inspected", "refunded", "exchanged", "closed"):
                        continue
                    for line in (
                        await session.scalars(
                            select(AftersaleLine).where(AftersaleLine.case_id == case.id)
                        )
                    ).all():
                        if case.type in ("return_refund", "exchange"):
                            assert (
                                line.restocked_quantity + line.written_off_quantity
                                == (line.received_quantity)
                                == line.quantity
                            )

        self.run(go())

    @invariant()
    def each_platform_refund_once(self) -> None:
        async def go() -> None:
            async with self.db.transaction(write=False) as session:
                rows = (
                    await session.scalars(
                        select(AftersaleRefund.provider_refund_id).where(
                            AftersaleRefund.source == "platform"
                        )
                    )
                ).all()
            assert sorted(rows) == sorted(set(rows)) and set(rows) == self.platform_ids

        self.run(go())


def test_aftersales_invariants_hold(
    database_url: str,
    sim_server: tuple[str, sim_keys.SimKeys],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    base, keys = sim_server
    monkeypatch.setenv("ORDERTALLY_DATABASE_URL", database_url)
    monkeypatch.setenv("ORDERTALLY_FULFILLMENT_AUTO_ALLOCATE", "false")
    monkeypatch.setenv("ORDERTALLY_AFTERSALES_REFUND_QUERY_AFTER_SECONDS", "0")
    for name, value in keys.settings_env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    AftersalesMachine.url = database_url
    AftersalesMachine.sim_base = base
    examples = int(os.environ.get("ORDERTALLY_STATEFUL_EXAMPLES", "3"))
    run_state_machine_as_test(
        AftersalesMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
