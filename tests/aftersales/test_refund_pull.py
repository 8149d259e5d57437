"""Pinduoduo after-sale records pulled (pdd.refund.list.increment.get) from the channel
simulator over real HTTP: the unit of `refund_amount` checked against the platform's own
example and an independent SDK's, windows and pages under the platform's rules, each refund
id applied once however often it is read, no transaction held while the platform answers, and
the cursor moved only after a window is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ordertally.aftersales import platforms, pulls, repository
from ordertally.aftersales.models import AftersaleCase, AftersalePlatformRecord, AftersaleRefund
from ordertally.aftersales.state_machine import CaseType
from ordertally.channels.adapters import pinduoduo
from ordertally.channels.errors import RateLimited
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.simkit.server import serve
from tests.aftersales.helpers import order_status, walk
from tests.channels.helpers import make_account
from tests.factories import make_order

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 01:00 on the 21st in Asia/Shanghai


def _items(name: str) -> list[dict[str, object]]:
    doc = json.loads((FIXTURES / name).read_text())
    items: list[dict[str, object]] = doc["refund_increment_get_response"]["refund_list"]
    return items


def test_refund_amount_is_yuan_as_the_platform_and_an_sdk_publish_it() -> None:
    # Given the SDK's realistic record: a 退货退款 of "8.00" on an 8.00 order, SKU "04"
    [sdk] = _items("pdd_refund_list_increment_get_sdk.json")
    # When it is mapped
    record = platforms.from_pinduoduo(sdk, "pdd_a")
    # Then 8.00 yuan is 800 fen, and the return concerns one unit of SKU 04
    assert (record.platform_refund_id, record.external_order_id) == (
        "301851299",
        "180410-416081954561509",
    )
    assert (record.type, record.amount_minor, record.skus) == (
        CaseType.RETURN_REFUND,
        800,
        {"04": 1},
    )
    # And the platform's own example (placeholder "1" yuan, type 1) maps as 1 yuan = 100 fen
    [official] = _items("pdd_refund_list_increment_get_official.json")
    assert platforms.from_pinduoduo(official).amount_minor == 100


@pytest.fixture(scope="module")
def sim_server() -> Iterator[tuple[str, ChannelSim]]:
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@pytest.fixture
def sim(sim_server: tuple[str, ChannelSim]) -> Iterator[tuple[str, ChannelSim]]:
    url, state = sim_server
    state.reset()
    with clock.frozen(NOW):
        yield url, state
    state.reset()


async def _account(db: Database, url: str, **extra: object) -> None:
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client"},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        overlap_seconds=600,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        **extra,
    )


def _checked_out(db: Database) -> int:
    """Connections of this process's engines in use right now (0: no transaction open)."""
    pools = {id(e.pool): e.pool for e in (db.write_engine, db.read_engine)}
    return sum(pool.checkedout() for pool in pools.values())  # type: ignore[attr-defined]


async def _cases(db: Database) -> list[tuple[str | None, str, str, int]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(AftersaleCase).order_by(AftersaleCase.id))).all()
    return [(c.platform_refund_id, c.type, c.status, c.refund_minor) for c in rows]


async def test_a_pull_applies_each_refund_once_outside_any_transaction(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given a Pinduoduo account created an hour ago, and three of its orders (two paid, one
    # shipped)
    with clock.frozen(NOW - timedelta(hours=1)):
        await _account(db, url)
    nos = []
    for sn, to in (("261120-01", None), ("261120-02", "shipped"), ("261120-03", None)):
        order = await make_order(db, "paid", channel="pdd_a", external_id=sn)
        if to:
            await walk(db, order.order_no, to)
        nos.append(order.order_no)
    # And the platform holds: a refund of 10.00 succeeded; a return of one tea (59.90)
    # succeeded; a refund still awaiting the merchant (status 2: not ours to apply yet); a
    # refund on an order we never had; spread over three 30-minute windows
    state.pdd.add_refund(7001, "261120-01", NOW - timedelta(minutes=50), refund_amount="10.00")
    state.pdd.add_refund(
        7002,
        "261120-02",
        NOW - timedelta(minutes=20),
        after_sales_type=3,
        refund_amount="59.90",
        reason="质量问题",
    )
    state.pdd.add_refund(7003, "261120-03", NOW - timedelta(minutes=20), after_sales_status=2)
    state.pdd.add_refund(7004, "NOT-OURS", NOW - timedelta(minutes=8), refund_amount="1.00")
    in_use: list[int] = []
    state.pdd.on_refunds = lambda: in_use.append(_checked_out(db))
    # When the account's after-sale records are pulled
    outcome = await pulls.pull_account(db, "pdd_a")
    # Then every refund list call ran with no connection (so no transaction) held
    calls = [r for r in state.pdd.requests if r["type"] == pinduoduo.REFUND_API]
    assert in_use and set(in_use) == {0} and len(in_use) == len(calls)
    # And each call followed the platform's rules: one status, every type, <= 30 minutes
    assert {r["after_sales_status"] for r in calls} == {"10", "14"}
    assert {r["after_sales_type"] for r in calls} == {"1"}
    assert all(0 < int(r["end_updated_at"]) - int(r["start_updated_at"]) <= 1800 for r in calls)
    # And the two successful refunds became cases with their yuan amounts in fen
    assert outcome.complete and (outcome.read, outcome.result.created) == (3, 2)
    assert outcome.result.unknown_order == 1
    assert await _cases(db) == [
        ("7001", "refund_only", "refunded", 1000),
        ("7002", "return_refund", "awaiting_return", 5990),
    ]
    # (a refund before shipment leaves a paid order paid; after shipment it shows)
    assert [await order_status(db, n) for n in nos] == ["paid", "partially_refunded", "paid"]
    # And the cursor stands 3 minutes (and 5 s) behind the platform clock
    end = NOW - pinduoduo.MIN_LAG - timedelta(seconds=5)
    assert outcome.cursor_at == end
    async with db.transaction(write=False) as session:
        pulled = await repository.pull_state(session, "pdd_a")
        assert pulled is not None and clock.as_utc(pulled.cursor_at) == end
        assert (pulled.records_seen, pulled.error_count) == (3, 0)

    # When the platform updates refund 7001 again and the merchant's refund 7003 succeeds,
    # and a later pull re-reads the overlap
    state.pdd.add_refund(7001, "261120-01", NOW - timedelta(seconds=30), refund_amount="10.00")
    state.pdd.add_refund(7003, "261120-03", NOW - timedelta(seconds=20), refund_amount="5.00")
    with clock.frozen(NOW + timedelta(minutes=5)):
        again = await pulls.pull_account(db, "pdd_a")
    # Then 7003 is applied; 7001 (updated) and 7004 (in the overlap) are read again and change
    # nothing
    assert (again.result.created, again.result.duplicates, again.read) == (1, 2, 3)
    assert await _cases(db) == [
        ("7001", "refund_only", "refunded", 1000),
        ("7002", "return_refund", "awaiting_return", 5990),
        ("7003", "refund_only", "refunded", 500),
    ]
    async with db.transaction(write=False) as session:
        refunds = (await session.scalars(select(AftersaleRefund))).all()
        records = (await session.scalars(select(AftersalePlatformRecord))).all()
    assert sorted((r.source, r.amount_minor) for r in refunds) == [
        ("platform", 500),
        ("platform", 1000),
        ("platform", 5990),
    ]
    assert sorted((r.platform_refund_id, r.status) for r in records) == [
        ("7001", "applied"),
        ("7002", "applied"),
        ("7003", "applied"),
        ("7004", "unknown_order"),
    ]


async def test_pages_are_walked_and_a_rate_limit_keeps_the_cursor(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an account with pages of 2 and five successful refunds in one window
    with clock.frozen(NOW - timedelta(minutes=40)):
        await _account(db, url, page_size=2)
    for i in range(5):
        order = await make_order(db, "paid", channel="pdd_a", external_id=f"261120-1{i}")
        assert order.order_no
        state.pdd.add_refund(
            8000 + i, f"261120-1{i}", NOW - timedelta(minutes=30, seconds=-i), refund_amount="1.00"
        )
    # When the platform limits the first refund list call
    state.pdd.throttle.fail_next(1)
    with pytest.raises(RateLimited):
        await pulls.pull_account(db, "pdd_a")
    # Then nothing was applied, the cursor did not move, and the account backs off
    async with db.transaction(write=False) as session:
        pulled = await repository.pull_state(session, "pdd_a")
        assert pulled is not None
        assert clock.as_utc(pulled.cursor_at) == NOW - timedelta(minutes=40)  # where it began
        assert pulled.error_count == 1 and pulled.backoff_until is not None
        assert await pulls.due_accounts(session, NOW) == []
    assert await _cases(db) == []
    # When it is pulled again
    outcome = await pulls.pull_account(db, "pdd_a")
    # Then the three pages of the window were read from the last one, and five cases opened
    pages = [
        r["page"]
        for r in state.pdd.requests
        if r["type"] == pinduoduo.REFUND_API and r["after_sales_status"] == "10"
    ]
    assert pages[:4] == ["1", "1", "3", "2"]  # the limited call, then 1, then 3, 2, 1
    assert outcome.result.created == 5 and outcome.read == 5
    # (stored page by page from the last: 3 = [8004], 2 = [8002, 8003], 1 = [8000, 8001])
    assert [c[0] for c in await _cases(db)] == ["8004", "8002", "8003", "8000", "8001"]
