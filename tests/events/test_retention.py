"""The machinery's retention job (issue 21: flat with data): delivered events go after
`outbox_retention_days`, consumers' dedupe rows after `dedupe_retention_days` unless their event
can still be delivered again, job runs after `job_run_retention_days`; nothing younger goes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.events import outbox
from ordertally.events.models import OutboxEvent, ProcessedEvent
from ordertally.jobs import (
    retention,  # registers machinery_purge
    scheduler,
)
from ordertally.jobs.models import JobRun
from ordertally.search.events import SearchReindexRequested

pytestmark = pytest.mark.anyio

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def frozen() -> Iterator[None]:
    with clock.frozen(START):
        yield


async def _event(db: Database, status: str, consumers: list[str], done_days_ago: float) -> str:
    """An event that became available and (when done) was delivered `done_days_ago` before
    START + 10 days, with a dedupe row per consumer written then."""
    at = START + timedelta(days=10 - done_days_ago)
    async with db.transaction() as session:
        event_id = await outbox.publish(
            session,
            "SearchReindexRequested",
            SearchReindexRequested(skus=["TEA-LJ-250"], reason="probe"),
            aggregate_type="catalog",
            aggregate_id="probe",
        )
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.event_id == event_id)
            .values(
                status=status,
                available_at=at,
                occurred_at=at,
                done_at=at if status == "done" else None,
            )
        )
        for consumer in consumers:
            session.add(ProcessedEvent(consumer=consumer, event_id=event_id, processed_at=at))
    return event_id


async def _left(db: Database) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    async with db.transaction(write=False) as session:
        events = set((await session.scalars(select(OutboxEvent.event_id))).all())
        dedupe = {
            (c, e)
            for c, e in await session.execute(
                select(ProcessedEvent.consumer, ProcessedEvent.event_id)
            )
        }
        runs = set((await session.scalars(select(JobRun.slot))).all())
    return events, dedupe, runs


async def test_the_purge_keeps_what_is_young_or_still_deliverable(
    db: Database, frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_OUTBOX_RETENTION_DAYS", "30")
    reset_settings()
    # Given delivered events 40 and 3 days old, a pending and a dead event 40 days old whose
    # consumers partly applied them, each with dedupe rows as old as the event
    old_done = await _event(db, "done", ["a", "b"], 40)
    young_done = await _event(db, "done", ["a"], 3)
    old_pending = await _event(db, "pending", ["a"], 40)
    old_dead = await _event(db, "dead", ["b"], 40)
    # And delivered events 10 days old: gone from the dedupe table, kept in the log
    mid_done = await _event(db, "done", ["a"], 10)
    # And job runs 8 days and 1 hour old
    async with db.transaction() as session:
        for slot, age in (("old", timedelta(days=8)), ("new", timedelta(hours=1))):
            session.add(
                JobRun(
                    job_name="probe",
                    slot=slot,
                    worker_id="w",
                    started_at=START + timedelta(days=10) - age,
                )
            )
    # When the retention job runs ten days after START
    clock.advance(timedelta(days=10))
    result = await scheduler.run_tick(db, scheduler.JOBS["machinery_purge"], "test-worker")
    # Then the old delivered event and its dedupe rows are gone
    events, dedupe, runs = await _left(db)
    assert old_done not in events
    assert events == {young_done, old_pending, old_dead, mid_done}
    # And dedupe rows go after a week, except those of events that can be delivered again
    # (pending, or dead and replayable), which keep a consumer from applying them twice
    assert dedupe == {("a", young_done), ("a", old_pending), ("b", old_dead)}
    # And only the old job run went (the tick's own run is young)
    assert "old" not in runs and "new" in runs
    assert result == {"dedupe_rows": 3, "job_runs": 1, "events": 1}
    # When it runs again in the next slot, nothing more goes
    clock.advance(timedelta(minutes=10))
    again = await scheduler.run_tick(db, scheduler.JOBS["machinery_purge"], "test-worker")
    assert again == {"dedupe_rows": 0, "job_runs": 0, "events": 0}
    reset_settings()


async def test_events_are_kept_for_ever_when_the_retention_is_zero(
    db: Database, frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_OUTBOX_RETENTION_DAYS", "0")
    reset_settings()
    ancient = await _event(db, "done", [], 4000)
    clock.advance(timedelta(days=10))
    result = await scheduler.run_tick(db, scheduler.JOBS["machinery_purge"], "test-worker")
    async with db.transaction(write=False) as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.event_id == ancient)
        )
    assert count == 1
    assert result is not None and "events" not in result
    reset_settings()


async def test_one_tick_works_off_a_backlog_in_chunks_up_to_its_bound(
    db: Database, frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERTALLY_OUTBOX_RETENTION_DAYS", "30")
    reset_settings()
    # Given chunks of 2 rows, at most 2 chunks a tick, and five delivered events 40 days old
    # with a dedupe row each (a backlog: more than a tick may delete)
    monkeypatch.setattr(retention, "CHUNK", 2)
    monkeypatch.setattr(retention, "CHUNKS", 2)
    old = [await _event(db, "done", ["a"], 40) for _ in range(5)]
    # When the retention job runs
    clock.advance(timedelta(days=10))
    result = await scheduler.run_tick(db, scheduler.JOBS["machinery_purge"], "test-worker")
    # Then it deleted two chunks of each, in separate transactions, and stopped there
    assert result is not None
    assert (result["dedupe_rows"], result["events"]) == (4, 4)
    events, dedupe, _ = await _left(db)
    assert len(events) == 1 and len(dedupe) == 1
    # And the next tick deletes the rest and stops at the short chunk
    clock.advance(timedelta(minutes=10))
    again = await scheduler.run_tick(db, scheduler.JOBS["machinery_purge"], "test-worker")
    assert again is not None and (again["dedupe_rows"], again["events"]) == (1, 1)
    events, dedupe, _ = await _left(db)
    assert not events & set(old) and not dedupe
    reset_settings()
