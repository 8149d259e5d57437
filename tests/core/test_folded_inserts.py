"""Plain INSERTs folded into one statement (ADR 0055): the rows are the ones the INSERTs would
have written, on both databases; PostgreSQL gets one statement for them whatever their number,
nothing when the block fails, and a value too long for its column fails as it always did. The
group commit's batch then runs a fixed number of statements whatever its size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError

from ordertally.core.db import (
    Database,
    Read,
    end_fold_with,
    folded_inserts,
    insert_rows,
    read_together,
    table_of,
)
from ordertally.events.models import OutboxEvent
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.models import IdempotencyKey
from ordertally.orders import api
from ordertally.orders import repository as orders_repository
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.state_machine import Actor, ActorKind
from ordertally.search import consumers as search_consumers
from ordertally.search.models import SearchDirty
from tests.conftest import ONLY_PG
from tests.factories import make_order, order_body

pytestmark = pytest.mark.anyio

_OUTBOX = table_of(OutboxEvent)


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The statements the write engine sends meanwhile (an executemany counts once)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _outbox_row(n: int, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "event_type": "OrderCreated",
        "event_version": 1,
        "aggregate_type": "order",
        "aggregate_id": f"SO{n}",
        "payload": {"order_id": n, "名": "张三", "lines": [{"qty": n}], "none": None},
        "occurred_at": at,
        "status": "pending",
        "attempts": 0,
        "available_at": at + timedelta(seconds=n),
    }


async def _stored(db: Database) -> list[tuple[Any, ...]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                OutboxEvent.event_id,
                OutboxEvent.event_type,
                OutboxEvent.payload,
                OutboxEvent.occurred_at,
                OutboxEvent.available_at,
                OutboxEvent.attempts,
                OutboxEvent.last_error,
                OutboxEvent.done_at,
            ).order_by(OutboxEvent.event_id)
        )
        return [tuple(r) for r in rows.all()]


async def test_folded_rows_are_the_rows_the_inserts_write(db: Database) -> None:
    at = datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC)
    order = await make_order(db)
    async with db.transaction() as session:
        await session.execute(_OUTBOX.delete())
    # Given the same rows written with plain INSERTs, then folded
    async with db.transaction() as session:
        await insert_rows(session, _OUTBOX, [_outbox_row(n, at) for n in (1, 2, 3)])
    plain = await _stored(db)
    async with db.transaction() as session:
        await session.execute(_OUTBOX.delete())
    with statements(db) as sent:
        async with db.transaction() as session, folded_inserts(session):
            await insert_rows(session, _OUTBOX, [_outbox_row(n, at) for n in (1, 2)])
            await insert_rows(session, _OUTBOX, _outbox_row(3, at))
            audit = {
                "order_id": order.id,
                "version": 2,
                "event": "note",
                "from_status": None,
                "to_status": "pending_payment",
                "actor_kind": "operator",
                "actor_id": "小王",
                "source_ip": None,
                "evidence_ref": None,
                "note": "folded",
                "occurred_at": at,
            }
            await insert_rows(session, table_of(OrderEvent), [audit])
            assert await _stored(db) == []  # nothing is sent before the block ends
    # Then the same rows are stored, to the microsecond and the JSON value
    assert await _stored(db) == plain
    assert plain[0][2] == {"order_id": 1, "名": "张三", "lines": [{"qty": 1}], "none": None}
    assert plain[1][4] == at + timedelta(seconds=2)
    async with db.transaction(write=False) as session:
        notes = (
            await session.execute(
                select(OrderEvent.note, OrderEvent.actor_id, OrderEvent.occurred_at).where(
                    OrderEvent.version == 2
                )
            )
        ).all()
    assert [tuple(n) for n in notes] == [("folded", "小王", at)]
    # And PostgreSQL got them, two tables, in one statement; SQLite one INSERT each call
    inserts = [s for s in sent if s.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert len(inserts) == (3 if db.is_sqlite else 1)


async def test_a_failed_block_sends_nothing_and_a_savepoint_inserts_at_once(
    db: Database,
) -> None:
    at = datetime(2026, 12, 6, tzinfo=UTC)
    with statements(db) as sent, pytest.raises(RuntimeError):
        async with db.transaction() as session, folded_inserts(session):
            await insert_rows(session, _OUTBOX, [_outbox_row(1, at)])
            raise RuntimeError("the batch failed")
    # PostgreSQL sent nothing for the gathered row (SQLite inserted it, then rolled back)
    assert len([s for s in sent if _OUTBOX.name in s]) == (1 if db.is_sqlite else 0)
    assert await _stored(db) == []
    async with db.transaction() as session, folded_inserts(session):
        await insert_rows(session, _OUTBOX, [_outbox_row(1, at)])
        async with session.begin_nested():
            await insert_rows(session, _OUTBOX, [_outbox_row(2, at)])
            # The savepoint's row is there before the block ends; the folded one is not yet
            found = await session.scalars(select(OutboxEvent.aggregate_id))
            assert sorted(found) == (["SO1", "SO2"] if db.is_sqlite else ["SO2"])
    assert [r[0][-1] for r in await _stored(db)] == ["1", "2"]


@ONLY_PG  # SQLite does not check VARCHAR lengths
async def test_a_value_too_long_fails_rather_than_being_cut(db: Database) -> None:
    row = {**_outbox_row(1, datetime(2026, 12, 6, tzinfo=UTC)), "event_type": "x" * 65}
    with pytest.raises(DBAPIError, match="too long"):
        async with db.transaction() as session, folded_inserts(session):
            await insert_rows(session, _OUTBOX, [row])
    assert await _stored(db) == []


def _requests(n: int, first: int, *, keyed: bool = False) -> list[api._Create]:
    actor = Actor(ActorKind.API, "bench", "127.0.0.1")
    out = []
    for i in range(first, first + n):
        body = OrderCreate.model_validate(
            order_body(customer={"name": "王五", "phone": f"137{i:08d}"})
        )
        req_hash = idempotency_service.request_hash("POST", "/api/v1/orders", body)
        out.append(api._Create(body, actor, "ops", f"key-{i}" if keyed else None, req_hash))
    return out


# Statements of a batch on PostgreSQL (ADR 0057), BEGIN and COMMIT aside, with keys or
# without: the key and fingerprint locks with the catalogue; the stored keys, external ids,
# recent fingerprints, candidate stock and new ids; every INSERT, the stored responses and
# the stock UPDATE folded in one. Main before it: 8 with keys, 7 without.
PG_STATEMENTS = 3


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
async def test_a_creation_batch_runs_a_fixed_number_of_statements(
    db: Database, keyed: bool
) -> None:
    assert search_consumers.mark_dirty  # the search queue's publish hook, as in the app
    counts = {}
    for size, first in ((1, 0), (2, 10), (25, 100)):
        with statements(db) as sent:
            done = await api._create_batch(db, _requests(size, first, keyed=keyed))
        assert all(d is not None for d in done)
        counts[size] = len(sent)
    # The same number for a batch of 1, 2 or 25 orders (before ADR 0055: 13 on PostgreSQL,
    # the batch's plain INSERTs one each, the search queue's among them)
    assert counts[1] == counts[2] == counts[25]
    if not db.is_sqlite:
        assert counts[1] == PG_STATEMENTS, counts
    async with db.transaction(write=False) as session:
        created = list(await session.scalars(select(SalesOrder.id)))
        audit = list(await session.scalars(select(OrderEvent.order_id)))
        events = list(await session.scalars(select(OutboxEvent.aggregate_type)))
        dirty = list(await session.scalars(select(SearchDirty.order_id)))
        stored = list(await session.scalars(select(IdempotencyKey.key)))
    assert len(created) == 28 and sorted(audit) == sorted(created) == sorted(dirty)
    assert events.count("order") == 28
    assert len(stored) == (28 if keyed else 0)


async def test_reads_together_answer_as_each_alone_in_one_statement(db: Database) -> None:
    # Given a stored response, an order sent by a channel and a key another transaction holds
    await make_order(db, channel="shopify", external_id="gid-1")
    async with db.transaction() as session:
        await idempotency_service.store(session, "ops", "stored", "h" * 64, 201, '"kept"')
    async with contextlib.AsyncExitStack() as holding:
        if not db.is_sqlite:  # SQLite has one writer: nothing is held elsewhere
            holder = await holding.enter_async_context(db.transaction())
            assert await idempotency_service.claim(holder, [("ops", "held")]) == [True]
        # When a batch reads what both domains know, with numbered parameters in each read
        with statements(db) as sent:
            async with db.transaction() as session:
                free, externals, nothing = await read_together(
                    session,
                    idempotency_service.claim_locks(
                        session, [("ops", "stored"), ("ops", "held"), ("ops", "new"), None]
                    ),
                    orders_repository.externals_read(
                        session, [("shopify", "gid-1"), ("shopify", "gid-2"), ("tmall", "gid-1")]
                    ),
                    Read.known("nothing to read"),
                )
                (stored,) = await read_together(
                    session, idempotency_service.claim_stored(session, free)
                )
    # Then each read answers as it would alone
    held_elsewhere = set() if db.is_sqlite else {("ops", "held")}
    assert free == {("ops", "stored"), ("ops", "held"), ("ops", "new")} - held_elsewhere
    assert stored == {("ops", "stored")}
    assert externals == {("shopify", "gid-1")}
    assert nothing == "nothing to read"
    # And PostgreSQL got the key locks and external ids in one statement, the stored keys in
    # the next (SQLite takes no locks: one statement for each of the other two reads)
    reads = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2
    assert db.is_sqlite or "ARRAY(SELECT r FROM" in reads[0]


async def test_a_folded_upsert_replaces_a_stored_response_and_the_last_statement_checks(
    db: Database,
) -> None:
    at = datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)
    order = await make_order(db)
    async with db.transaction() as session:
        await session.execute(_OUTBOX.delete())
        await idempotency_service.store(session, "ops", "old", "h" * 64, 201, '"expired"')

    def check(rows: list[Any]) -> None:
        if rows != [(order.id,)]:
            raise RuntimeError(f"unexpected rows {rows}")

    # Given a fold that stores two responses (one over a stored key), adds an outbox row and
    # ends with a read
    with statements(db) as sent:
        async with db.transaction() as session, folded_inserts(session):
            await insert_rows(session, _OUTBOX, [_outbox_row(1, at)])
            await idempotency_service.store_many(
                session,
                [
                    idempotency_service.response_row("ops", "old", "a" * 64, 201, '"again"'),
                    idempotency_service.response_row("ops", "new", "b" * 64, 201, '"fresh"'),
                ],
            )
            ended = await end_fold_with(
                session, "SELECT id FROM sales_order WHERE id = $1", [order.id], check
            )
    # Then both responses are stored, the old one replaced, with the outbox row
    assert ended is not db.is_sqlite
    async with db.transaction(write=False) as session:
        kept = (
            await session.execute(
                select(IdempotencyKey.key, IdempotencyKey.response_body).order_by(
                    IdempotencyKey.key
                )
            )
        ).all()
    assert [tuple(k) for k in kept] == [("new", '"fresh"'), ("old", '"again"')]
    assert len(await _stored(db)) == 1
    # PostgreSQL: in one statement with the last one (SQLite: each at once)
    writes = [s for s in sent if s.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert len(writes) == (2 if db.is_sqlite else 1)
    # And a check that raises when the block ends rolls the whole transaction back
    if not db.is_sqlite:

        def refuse(rows: list[Any]) -> None:
            raise RuntimeError("short")

        with pytest.raises(RuntimeError, match="short"):
            async with db.transaction() as session, folded_inserts(session):
                await insert_rows(session, _OUTBOX, [_outbox_row(2, at)])
                await end_fold_with(session, "SELECT 1", [], refuse)
        assert len(await _stored(db)) == 1
