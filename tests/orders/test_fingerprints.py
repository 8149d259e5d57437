"""The keyless duplicate check reads `order_fingerprint` (migration 0039, ADR 0056): a twin is
flagged or refused inside the duplicate window and not after it, on the group-commit path and
the one-order path alike; the purge forgets fingerprints past the window (and only those);
`doctor` notices a purge that does not run; the migration copies the last day's fingerprints
of a database with orders and drops the sales_order index."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
from alembic import command
from httpx import AsyncClient
from sqlalchemy import func, inspect, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.jobs import scheduler
from ordertally.ops.doctor import run_checks
from ordertally.ops.migrations import alembic_config
from ordertally.orders import service as orders_service
from ordertally.orders.models import OrderFingerprint, SalesOrder
from tests.factories import auth, make_order, order_body

pytestmark = pytest.mark.anyio

WINDOW = 600  # the default duplicate window, seconds


@pytest.fixture(params=["batch", "alone"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """POST /orders through the group commit (the default), or one order per transaction."""
    if request.param == "alone":
        monkeypatch.setenv("ORDERTALLY_ORDER_BATCH_MAX", "0")
    reset_settings()
    return str(request.param)


async def _post(client: AsyncClient, key: str, **body: Any) -> Any:
    return await client.post("/api/v1/orders", json=order_body(**body), headers=auth(key))


async def _fingerprints(db: Database) -> dict[int, str]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(OrderFingerprint.order_id, OrderFingerprint.fingerprint)
        )
        return {int(order_id): f for order_id, f in rows.all()}


async def test_a_twin_is_flagged_inside_the_window_and_not_after_it(
    client: AsyncClient, keys: dict[str, str], db: Database, path: str
) -> None:
    t0 = clock.now()
    # Given a keyless order at t0
    with clock.frozen(t0):
        first = await _post(client, keys["ops"])
    assert first.status_code == 201 and first.json()["holds"] == []
    # When its twin arrives a second before the window ends
    with clock.frozen(t0 + timedelta(seconds=WINDOW - 1)):
        inside = await _post(client, keys["ops"])
    # Then it is held as a suspected duplicate of the first
    assert inside.status_code == 201
    assert [(h["type"], h["detail"]["duplicate_of"]) for h in inside.json()["holds"]] == [
        ("suspected_duplicate", first.json()["order_no"])
    ]
    # When another twin arrives a second after the window of both
    with clock.frozen(t0 + timedelta(seconds=2 * WINDOW)):
        after = await _post(client, keys["ops"])
    # Then it is created without a hold
    assert after.status_code == 201 and after.json()["holds"] == []
    # and every order's fingerprint was recorded with it, the same as on its row
    async with db.transaction(write=False) as session:
        orders = dict((await session.execute(select(SalesOrder.id, SalesOrder.fingerprint))).all())
    assert len(orders) == 3 and len(set(orders.values())) == 1
    assert await _fingerprints(db) == orders


async def test_a_twin_is_refused_inside_the_window_and_not_after_it(
    client: AsyncClient,
    keys: dict[str, str],
    db: Database,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERTALLY_DUPLICATE_POLICY", "reject")
    reset_settings()
    t0 = clock.now()
    with clock.frozen(t0):
        first = await _post(client, keys["ops"])
    # A twin inside the window is refused with the problem document, and changes nothing
    with clock.frozen(t0 + timedelta(seconds=WINDOW - 1)):
        inside = await _post(client, keys["ops"])
    assert inside.status_code == 409
    assert inside.json()["code"] == "order.suspected_duplicate"
    assert inside.json()["duplicate_of"] == first.json()["order_no"]
    assert len(await _fingerprints(db)) == 1
    # A twin after the window is created
    with clock.frozen(t0 + timedelta(seconds=WINDOW + 1)):
        after = await _post(client, keys["ops"])
    assert after.status_code == 201 and after.json()["holds"] == []
    # An order that differs (another phone) is never a twin
    with clock.frozen(t0 + timedelta(seconds=WINDOW + 2)):
        other = await _post(client, keys["ops"], customer={"name": "张三", "phone": "13800000001"})
    assert other.status_code == 201 and other.json()["holds"] == []


async def test_a_keyed_order_is_a_twin_keyless_ones_are_checked_against(
    client: AsyncClient, keys: dict[str, str], db: Database, path: str
) -> None:
    # Given an order created with an Idempotency-Key (not checked itself)
    keyed = await client.post(
        "/api/v1/orders", json=order_body(), headers=auth(keys["ops"], **{"Idempotency-Key": "k1"})
    )
    assert keyed.status_code == 201 and keyed.json()["holds"] == []
    # When the same order arrives without a key
    keyless = await _post(client, keys["ops"])
    # Then it is held as its twin, as when the check read sales_order
    assert [h["detail"]["duplicate_of"] for h in keyless.json()["holds"]] == [
        keyed.json()["order_no"]
    ]


async def test_the_purge_forgets_only_fingerprints_past_the_window(db: Database) -> None:
    from ordertally.orders import jobs  # noqa: F401  (@periodic_outside registers the purge)

    t0 = clock.now()
    # Given orders created at t0 - 2 windows, t0 - window - 1 s and t0 - window + 1 s
    old = []
    for age in (2 * WINDOW, WINDOW + 1, WINDOW - 1):
        with clock.frozen(t0 - timedelta(seconds=age)):
            old.append(
                await make_order(db, customer={"name": "张三", "phone": f"1380000{age:04d}"})
            )
    # When the purge job runs at t0
    with clock.frozen(t0):
        result = await scheduler.run_tick(db, scheduler.JOBS["purge_order_fingerprints"], "test")
    # Then the two past the window are forgotten, the one inside it is kept, the orders stay
    assert result == {"purged": 2}
    assert list(await _fingerprints(db)) == [old[2].id]
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 3


async def test_the_purge_goes_by_chunks_and_stops_at_a_short_one(db: Database) -> None:
    t0 = clock.now()
    with clock.frozen(t0 - timedelta(seconds=2 * WINDOW)):
        for n in range(5):
            await make_order(db, customer={"name": "张三", "phone": f"1380000000{n}"})
    settings = get_settings()
    # Two chunks of two: four purged, one left for the next run
    assert await orders_service.purge_fingerprints(db, t0, settings, chunk=2, chunks=2) == 4
    assert len(await _fingerprints(db)) == 1
    # The next run purges the last one and stops at its short chunk
    assert await orders_service.purge_fingerprints(db, t0, settings, chunk=2, chunks=5) == 1
    assert await _fingerprints(db) == {}


async def test_doctor_fails_while_fingerprints_outlive_the_window(db: Database) -> None:
    # Given an order created three hours ago (the window is ten minutes, the grace an hour)
    with clock.frozen(clock.now() - timedelta(hours=3)):
        await make_order(db)
    await make_order(db, customer={"name": "张三", "phone": "13800000009"})
    settings = get_settings()
    # Then doctor's fingerprint check fails on it alone
    found = {c.name: c for c in await run_checks(db, settings)}["order_fingerprints"]
    assert (found.ok, found.data) == (False, {"stale": 1})
    # When the purge runs, it passes
    assert await orders_service.purge_fingerprints(db, clock.now(), settings) == 1
    found = {c.name: c for c in await run_checks(db, settings)}["order_fingerprints"]
    assert (found.ok, found.data) == (True, {"stale": 0})


async def test_upgrading_copies_the_last_days_fingerprints_and_drops_the_index(
    db: Database, database_url: str, client: AsyncClient, keys: dict[str, str]
) -> None:
    # Given a database with an order of two days ago and one of a minute ago
    with clock.frozen(clock.now() - timedelta(days=2)):
        await make_order(db)
    with clock.frozen(clock.now() - timedelta(minutes=1)):
        recent = await make_order(db, customer={"name": "张三", "phone": "13800000007"})
    await db.dispose()  # no pooled connection holds the table the downgrade drops
    config = alembic_config(database_url)

    def sales_order_indexes(connection: Any) -> set[str]:
        return {ix["name"] for ix in inspect(connection).get_indexes("sales_order")}

    try:
        # When the database goes back to 0038 (the fingerprint index on sales_order) and up
        await anyio.to_thread.run_sync(command.downgrade, config, "0038")
        async with db.read_engine.connect() as conn:
            before = await conn.run_sync(sales_order_indexes)
        await db.dispose()
        await anyio.to_thread.run_sync(command.upgrade, config, "0039")
    finally:
        await anyio.to_thread.run_sync(command.upgrade, config, "head")
    # Then the index is gone, and only the recent order's fingerprint was copied
    async with db.read_engine.connect() as conn:
        after = await conn.run_sync(sales_order_indexes)
    await db.dispose()
    assert "ix_sales_order_fingerprint_created_at" in before - after
    async with db.transaction(write=False) as session:
        fingerprint = await session.scalar(
            select(SalesOrder.fingerprint).where(SalesOrder.id == recent.id)
        )
    assert await _fingerprints(db) == {recent.id: fingerprint}
    # and a keyless twin of the recent order is held as its duplicate
    twin = await _post(client, keys["ops"], customer={"name": "张三", "phone": "13800000007"})
    assert [h["detail"]["duplicate_of"] for h in twin.json()["holds"]] == [recent.order_no]
