"""Idempotency keys on both databases: what "the same request" is, the check before the work,
the stored response, the batch claim, the purge job, and the HTTP boundary that ties them
together (a replay runs no work; a failed work stores nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.idempotency import service
from ordertally.idempotency.errors import IdempotencyMismatch
from ordertally.idempotency.http import run_idempotent
from ordertally.idempotency.models import IdempotencyKey
from ordertally.idempotency.wiring import register
from ordertally.jobs import scheduler
from ordertally.jobs.models import JobRun

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
HASH = "a" * 64


class Body(BaseModel):
    sku: str
    quantity: int


async def _keys(db: Database) -> list[tuple[str, str, int, str]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                IdempotencyKey.scope,
                IdempotencyKey.key,
                IdempotencyKey.response_status,
                IdempotencyKey.response_body,
            ).order_by(IdempotencyKey.scope, IdempotencyKey.key)
        )
        return [tuple(row) for row in rows.all()]  # type: ignore[misc]


async def _store(db: Database, scope: str, key: str, at: datetime) -> None:
    with clock.frozen(at):
        async with db.transaction() as session:
            await service.store(session, scope, key, HASH, 201, f'{{"key":"{key}"}}')


def test_the_same_request_is_method_path_and_parsed_body() -> None:
    # Given a parsed body and its JSON bytes
    body = Body(sku="TEA", quantity=2)
    raw = body.model_dump_json().encode()
    # When they are hashed / Then model and bytes agree, and method, path or body change it
    assert service.request_hash("POST", "/api/v1/x", body) == service.request_hash(
        "POST", "/api/v1/x", raw
    )
    assert (
        len(
            {
                service.request_hash("POST", "/api/v1/x", body),
                service.request_hash("PUT", "/api/v1/x", body),
                service.request_hash("POST", "/api/v1/y", body),
                service.request_hash("POST", "/api/v1/x", Body(sku="TEA", quantity=3)),
            }
        )
        == 4
    )


async def test_a_stored_response_is_replayed_until_it_expires(db: Database) -> None:
    # Given a response stored at T0 (kept 24 h by default)
    await _store(db, "ops", "k1", T0)
    # When the same request is checked within and after the 24 h
    async with db.transaction() as session:
        with clock.frozen(T0 + timedelta(hours=23, minutes=59)):
            within = await service.check(session, "ops", "k1", HASH)
        with clock.frozen(T0 + timedelta(hours=24)):
            after = await service.check(session, "ops", "k1", HASH)
        # and another scope uses the same key
        with clock.frozen(T0):
            other_scope = await service.check(session, "cs", "k1", HASH)
    # Then it is replayed within, and the expired or foreign key lets the request go ahead
    assert within == service.Replay(201, '{"key":"k1"}')
    assert after is None
    assert other_scope is None


async def test_another_body_under_a_key_is_refused_and_stores_nothing(db: Database) -> None:
    # Given a response stored for one body
    await _store(db, "ops", "k1", T0)
    # When a different body comes with the same key
    with clock.frozen(T0), pytest.raises(IdempotencyMismatch) as refused:
        async with db.transaction() as session:
            await service.check(session, "ops", "k1", "b" * 64)
    # Then it is refused as 422 and the stored response is untouched
    assert (refused.value.status, refused.value.code) == (422, "idempotency.mismatch")
    assert await _keys(db) == [("ops", "k1", 201, '{"key":"k1"}')]


async def test_a_batch_claims_each_free_key_once(db: Database) -> None:
    # Given a key with a stored response
    await _store(db, "ops", "stored", T0)
    # When a batch of requests claims its keys in one transaction
    async with db.transaction() as session:
        go = await service.claim(
            session,
            [None, ("ops", "new"), ("ops", "stored"), ("ops", "new"), ("cs", "new"), None],
        )
    # Then unkeyed requests and the first of each free key go ahead; the others wait
    assert go == [True, True, False, False, True, True]
    # and claiming wrote nothing
    assert await _keys(db) == [("ops", "stored", 201, '{"key":"stored"}')]


async def test_store_many_writes_every_row_and_replaces_an_expired_one(db: Database) -> None:
    # Given an expired response under "old"
    await _store(db, "ops", "old", T0 - timedelta(days=2))
    # When a batch stores its responses
    with clock.frozen(T0):
        async with db.transaction() as session:
            await service.store_many(
                session,
                [
                    service.response_row("ops", "old", HASH, 201, '"again"'),
                    service.response_row("ops", "new", HASH, 200, '"fresh"'),
                ],
            )
            await service.store_many(session, [])
    # Then both are stored, the expired one replaced
    assert await _keys(db) == [("ops", "new", 200, '"fresh"'), ("ops", "old", 201, '"again"')]


async def test_the_purge_job_forgets_only_expired_keys(db: Database) -> None:
    # Given the idempotency domain wired, a key stored 25 h ago and one stored 1 h ago
    register(None)
    await _store(db, "ops", "stale", T0 - timedelta(hours=25))
    await _store(db, "ops", "live", T0 - timedelta(hours=1))
    # When the purge job runs at T0
    with clock.frozen(T0):
        result = await scheduler.run_tick(
            db, scheduler.JOBS["purge_idempotency_keys"], "test-worker"
        )
    # Then exactly the expired key is gone, and the tick is recorded once
    assert result == {"purged": 1}
    assert await _keys(db) == [("ops", "live", 201, '{"key":"live"}')]
    async with db.transaction(write=False) as session:
        runs = (
            await session.execute(
                select(JobRun.job_name, JobRun.result, JobRun.error).where(
                    JobRun.job_name == "purge_idempotency_keys"
                )
            )
        ).all()
    assert [tuple(r) for r in runs] == [("purge_idempotency_keys", {"purged": 1}, None)]


async def test_the_purge_works_off_a_backlog_in_chunks_oldest_first(db: Database) -> None:
    # Given five keys expired at different times (a worker stopped for days) and a live one
    for n in range(5):
        await _store(db, "ops", f"stale-{n}", T0 - timedelta(hours=30 + 10 * (5 - n)))
    await _store(db, "ops", "live", T0 - timedelta(hours=1))
    # When one run may delete two chunks of two keys
    purged = await service.purge_expired(db, T0, chunk=2, chunks=2)
    # Then it deleted four, those that expired first, in chunks, and kept the rest
    assert purged == 4
    assert [k[1] for k in await _keys(db)] == ["live", "stale-4"]
    # And the next run deletes the last expired one and stops at the short chunk
    assert await service.purge_expired(db, T0, chunk=2, chunks=2) == 1
    assert [k[1] for k in await _keys(db)] == ["live"]
    assert await service.purge_expired(db, T0, chunk=2, chunks=2) == 0


async def test_run_idempotent_replays_without_running_the_work(db: Database) -> None:
    # Given a work that counts its runs
    runs: list[int] = []

    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        runs.append(1)
        return 201, orjson.dumps({"n": len(runs)}), {"Location": "/x/1"}

    # When the same keyed request comes twice
    first = await run_idempotent(db, scope="ops", key="k", req_hash=HASH, work=work)
    second = await run_idempotent(db, scope="ops", key="k", req_hash=HASH, work=work)
    # Then the work ran once and the second answer is the stored one, marked replayed
    assert runs == [1]
    assert (first.status_code, first.body, first.headers["location"]) == (201, b'{"n":1}', "/x/1")
    assert "idempotent-replayed" not in first.headers
    assert (second.status_code, second.body) == (201, b'{"n":1}')
    assert second.headers["idempotent-replayed"] == "true"
    assert await _keys(db) == [("ops", "k", 201, '{"n":1}')]


async def test_run_idempotent_stores_nothing_when_the_work_fails(db: Database) -> None:
    # Given a work that fails after it started
    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        raise RuntimeError("boom")

    # When a keyed request runs it
    with pytest.raises(RuntimeError):
        await run_idempotent(db, scope="ops", key="k", req_hash=HASH, work=work)
    # Then no response is stored, so a retry runs the work again
    assert await _keys(db) == []
