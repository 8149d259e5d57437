"""The pull sync engine against the Amazon and Pinduoduo simulators over real HTTP: paging,
the platforms' time rules, the Asia/Shanghai day-boundary incident, a crash mid-page, rate
limits, empty streaks, and exactly-once across webhook, pull and file paths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from ordertally.channels import ingest, sync
from ordertally.channels.adapters import amazon
from ordertally.channels.errors import RateLimited
from ordertally.channels.ingest import ingest_orders
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import AmazonSim, ChannelSim
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from ordertally.simkit.errors import SimError
from ordertally.simkit.server import serve
from tests.channels.helpers import make_account

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 01:00 on the 21st in Asia/Shanghai


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


async def _amazon_account(db: Database, url: str, cursor: datetime, **extra: Any) -> None:
    await make_account(
        db,
        "amz_a",
        "amazon",
        config={"base_url": url, "marketplace_id": "ATVPDKIKX0DER", "timezone": "Asia/Shanghai"},
        credentials={"access_token": "sim-amazon-token"},
        start_at=cursor.isoformat(),
        overlap_seconds=600,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        **extra,
    )


async def _pdd_account(db: Database, url: str, cursor: datetime) -> None:
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client"},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        start_at=cursor.isoformat(),
        overlap_seconds=0,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )


async def _external_ids(db: Database, channel: str) -> list[str]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(SalesOrder.external_id).where(SalesOrder.channel == channel)
        )
        return sorted(str(r) for r in rows.all())


async def test_amazon_pull_pages_and_advances(db: Database, sim: tuple[str, ChannelSim]) -> None:
    url, state = sim
    for i in range(250):
        state.amazon.add(f"111-{i:07d}-0000001", NOW - timedelta(minutes=50) + timedelta(seconds=i))
    await _amazon_account(db, url, NOW - timedelta(hours=1), page_size=100)
    outcome = await sync.sync_account(db, "amz_a")
    assert outcome.complete and outcome.pages == 3 and outcome.result.created == 250
    assert outcome.cursor_at == NOW - amazon.MIN_LAG - timedelta(seconds=5)
    # Every getOrders call followed the rules (the simulator refuses otherwise).
    first = state.amazon.requests[0]
    assert first["LastUpdatedAfter"] == "2026-11-20T15:50:00Z"  # cursor - 10 min overlap, UTC
    assert first["MaxResultsPerPage"] == "100"
    assert sum("NextToken" in r for r in state.amazon.requests) == 2
    again = await sync.sync_account(db, "amz_a")
    assert again.result.created == 0
    assert len(await _external_ids(db, "amz_a")) == 250


def test_amazon_simulator_enforces_the_rules() -> None:
    sim = AmazonSim()
    with clock.frozen(NOW):
        base = {"MarketplaceIds": "ATVPDKIKX0DER", "LastUpdatedAfter": "2026-11-20T10:00:00Z"}
        with pytest.raises(SimError, match="2 minutes"):
            sim.get_orders({**base, "LastUpdatedBefore": "2026-11-20T16:59:00Z"}, sim.access_token)
        with pytest.raises(SimError, match="MaxResultsPerPage"):
            sim.get_orders({**base, "MaxResultsPerPage": "101"}, sim.access_token)
        with pytest.raises(SimError, match="Exactly one"):
            sim.get_orders({**base, "CreatedAfter": "2026-11-20T10:00:00Z"}, sim.access_token)
        with pytest.raises(SimError):
            sim.get_orders(base, "bad-token")


async def test_day_boundary_in_shanghai_loses_nothing(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    """The incident: a window computed in Asia/Shanghai against a UTC API skipped 8 hours.
    Orders on both sides of Beijing midnight (16:00 UTC) must all arrive, on both platforms."""
    url, state = sim
    times = [
        NOW - timedelta(hours=1, minutes=10),  # 23:50 Beijing
        datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC),  # 23:59:59 Beijing
        datetime(2026, 11, 20, 16, 0, 0, tzinfo=UTC),  # 00:00:00 Beijing, the next day
        datetime(2026, 11, 20, 16, 30, tzinfo=UTC),  # 00:30 Beijing
        NOW - timedelta(minutes=3),  # 00:57 Beijing, inside Amazon's 2-minute-safe range
    ]
    for n, at in enumerate(times):
        state.amazon.add(f"112-{n:07d}-0000001", at)
        state.pdd.add(f"231120-{n:015d}", at)
    cursor = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 23:30 Beijing
    await _amazon_account(db, url, cursor)
    await _pdd_account(db, url, cursor)
    await sync.sync_account(db, "amz_a")
    assert len(await _external_ids(db, "amz_a")) == 5
    first = await sync.sync_account(db, "pdd_a")
    # Pinduoduo's end stays 3 minutes behind its clock: the 00:57 order waits for the next run.
    assert len(await _external_ids(db, "pdd_a")) == 4
    windows = [
        (int(r["start_updated_at"]), int(r["end_updated_at"]))
        for r in state.pdd.requests
        if r.get("type") == "pdd.order.number.list.increment.get"
    ]
    assert all(0 < end - start <= 1800 for start, end in windows)
    assert windows[0][0] == int(cursor.timestamp())
    assert first.cursor_at is not None
    clock.advance(timedelta(minutes=10))
    await sync.sync_account(db, "pdd_a")
    assert len(await _external_ids(db, "pdd_a")) == 5


async def test_pdd_pages_walked_backwards(db: Database, sim: tuple[str, ChannelSim]) -> None:
    url, state = sim
    for n in range(25):
        state.pdd.add(f"231120-{n:015d}", NOW - timedelta(minutes=20) + timedelta(seconds=n))
    await _pdd_account(db, url, NOW - timedelta(minutes=25))
    async with db.transaction() as session:
        from ordertally.channels import service

        account = await service.get_account(session, "pdd_a")
        account.page_size = 10
    outcome = await sync.sync_account(db, "pdd_a")
    assert outcome.result.created == 25
    pages = [
        int(r["page"])
        for r in state.pdd.requests
        if r.get("type") == "pdd.order.number.list.increment.get"
    ]
    assert pages == [1, 3, 2, 1]  # probe for the total, then last to first


async def test_crash_mid_page_rereads_and_dedupes(
    db: Database, sim: tuple[str, ChannelSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = sim
    for i in range(40):
        state.amazon.add(f"113-{i:07d}-0000001", NOW - timedelta(minutes=30) + timedelta(seconds=i))
    await _amazon_account(db, url, NOW - timedelta(hours=1), page_size=20)
    real = ingest.ingest_orders

    async def crash_after_half(db: Database, code: str, orders: Any, *, via: str) -> Any:
        await real(db, code, orders[: len(orders) // 2], via=via)
        raise RuntimeError("process killed mid-page")

    monkeypatch.setattr(sync.ingest, "ingest_orders", crash_after_half)
    with pytest.raises(RuntimeError):
        await sync.sync_account(db, "amz_a")
    assert len(await _external_ids(db, "amz_a")) == 10
    from ordertally.channels import service

    async with db.transaction(write=False) as session:
        account = await service.get_account(session, "amz_a")
        state_row = await service.sync_state(session, account.id)
        assert state_row.cursor_at == NOW - timedelta(hours=1)  # not advanced
    monkeypatch.setattr(sync.ingest, "ingest_orders", real)
    outcome = await sync.sync_account(db, "amz_a")
    assert outcome.result.created == 30 and outcome.result.duplicates == 10
    assert len(await _external_ids(db, "amz_a")) == 40


async def test_rate_limit_backs_off_then_recovers(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    state.amazon.add("114-0000001-0000001", NOW - timedelta(minutes=30))
    await _amazon_account(db, url, NOW - timedelta(hours=1))
    state.amazon.throttle.fail_next(1)
    with pytest.raises(RateLimited):
        await sync.sync_account(db, "amz_a")
    from ordertally.channels import service

    async with db.transaction(write=False) as session:
        status = await service.status_view(session, "amz_a")
        assert status["error_count"] == 1 and "429" in (status["last_error"] or "")
        assert await sync.due_accounts(session, clock.now()) == []  # backing off
    outcome = await sync.sync_account(db, "amz_a")
    assert outcome.result.created == 1
    async with db.transaction(write=False) as session:
        status = await service.status_view(session, "amz_a")
        assert status["error_count"] == 0 and status["last_success_at"] is not None


async def test_empty_streak_alert(db: Database, sim: tuple[str, ChannelSim]) -> None:
    url, state = sim
    state.amazon.add("115-0000001-0000001", NOW - timedelta(minutes=30))
    await _amazon_account(db, url, NOW - timedelta(hours=1), empty_streak_threshold=2)
    await sync.sync_account(db, "amz_a")  # one order: the account is normally active
    for _ in range(2):
        clock.advance(timedelta(minutes=30))
        await sync.sync_account(db, "amz_a")
    async with db.transaction(write=False) as session:
        cases = list(
            (
                await session.scalars(
                    select(ExceptionCase).where(ExceptionCase.type == "channel_empty_streak")
                )
            ).all()
        )
        assert len(cases) == 1 and cases[0].detail["account"] == "amz_a"
        from ordertally.channels import service

        assert (await service.status_view(session, "amz_a"))["empty_streak_alert"] is True


async def test_same_orders_by_every_path_once_each(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    """1,000 orders by pull (Amazon simulator), by the webhook path and by file, repeated and
    interleaved: exactly 1,000 orders."""
    url, state = sim
    n = 1000
    for i in range(n):
        state.amazon.add(f"116-{i:07d}-0000001", NOW - timedelta(minutes=40) + timedelta(seconds=i))
    await _amazon_account(db, url, NOW - timedelta(hours=1))
    canon = [
        amazon.to_canonical(state.amazon.orders[k], state.amazon.items[k])
        for k in sorted(state.amazon.orders)
    ]
    results: list[Any] = []

    async def pull() -> None:
        results.append(await sync.sync_account(db, "amz_a"))

    async def deliver(via: str, orders: list[Any]) -> None:
        for start in range(0, len(orders), 250):
            results.append(await ingest_orders(db, "amz_a", orders[start : start + 250], via=via))

    async with anyio.create_task_group() as tg:
        tg.start_soon(pull)
        tg.start_soon(deliver, "webhook", canon[::-1])
        tg.start_soon(deliver, "file", canon[n // 2 :] + canon[: n // 2])
        tg.start_soon(deliver, "file", canon)
    await sync.sync_account(db, "amz_a")
    async with db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count()).select_from(SalesOrder).where(SalesOrder.channel == "amz_a")
        )
    assert count == n
