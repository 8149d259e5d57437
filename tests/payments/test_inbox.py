"""The inbox's group commit against the real database: each caller is answered only once its
row and event are committed; replays and duplicates inside one batch and across batches are
told apart exactly; a failed batch stores nothing and the writer recovers; two processes' writers
racing over the same messages never deadlock and store each message once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from sqlalchemy import func, select, text

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.payments.inbox import InboxWriter, Stored
from ordertally.payments.models import PaymentNonce, PaymentNotification
from ordertally.payments.providers import Notice
from tests.conftest import ONLY_PG

pytestmark = pytest.mark.anyio

_seq = itertools.count(1)


def notice(
    provider: str = "wechatpay", *, key: str | None = None, nonce: str | None = ""
) -> Notice:
    """A verified notice; WeChat ones carry a nonce (a fresh one unless given), Alipay's none."""
    n = next(_seq)
    if nonce == "":
        nonce = f"nonce-{n}" if provider == "wechatpay" else None
    return Notice(
        provider=provider,
        dedupe_key=key or f"key-{n}",
        event_type="TRANSACTION.SUCCESS",
        kind="payment",
        out_trade_no=f"OT{n:08d}",
        provider_txn_id=f"4200{n:08d}",
        trade_state="SUCCESS",
        facts={"status": "paid", "amount_minor": 100 + n, "currency": "CNY", "paid_at": None},
        headers={"wechatpay-nonce": nonce or ""},
        body=f'{{"id": "{n}"}}',
        nonce=nonce,
    )


async def store_together(writer: InboxWriter, notices: list[Notice]) -> list[Stored]:
    """Call `store` for all at once: they queue before the flusher runs, so share a batch."""
    now = clock.now()
    return list(
        await asyncio.gather(
            *(writer.store(n, received_at=now, source_ip="203.0.113.9") for n in notices)
        )
    )


async def inbox(db: Database) -> dict[tuple[str, str], dict[str, Any]]:
    """Every stored notification by (provider, dedupe_key), with the events naming it."""
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(PaymentNotification))).all()
        events = (await session.scalars(select(OutboxEvent))).all()
    by_id: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_id.setdefault(event.payload["notification_id"], []).append(event.payload)
    return {
        (r.provider, r.dedupe_key): {
            "out_trade_no": r.out_trade_no,
            "amount_minor": r.facts["amount_minor"],
            "outcome": r.outcome,
            "source_ip": r.source_ip,
            "events": by_id.get(r.id, []),
        }
        for r in rows
    }


async def nonces(db: Database) -> set[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        return {
            (p, n)
            for p, n in (
                await session.execute(select(PaymentNonce.provider, PaymentNonce.nonce))
            ).all()
        }


async def test_each_caller_is_answered_after_its_row_and_event_are_committed(db: Database) -> None:
    # Given one writer and 40 callbacks arriving together (WeChat and Alipay)
    writer = InboxWriter(db)
    notices = [notice("wechatpay" if i % 2 else "alipay") for i in range(40)]
    seen_when_answered: list[tuple[int, int]] = []

    async def one(n: Notice) -> Stored:
        stored = await writer.store(n, received_at=clock.now(), source_ip=None)
        # Then, the moment its answer arrives, another connection already sees both rows
        async with db.transaction(write=False) as session:
            rows = await session.scalar(
                select(func.count()).where(
                    PaymentNotification.provider == n.provider,
                    PaymentNotification.dedupe_key == n.dedupe_key,
                )
            )
            events = await session.scalar(
                select(func.count()).where(OutboxEvent.aggregate_id == n.out_trade_no)
            )
        seen_when_answered.append((int(rows or 0), int(events or 0)))
        return stored

    # When each is stored
    results = await asyncio.gather(*(one(n) for n in notices))

    # Then all were accepted, each row and its one event visible before its caller went on
    assert results == ["accepted"] * 40
    assert seen_when_answered == [(1, 1)] * 40
    stored = await inbox(db)
    assert len(stored) == 40
    for n in notices:
        row = stored[(n.provider, n.dedupe_key)]
        assert (row["out_trade_no"], row["amount_minor"], row["outcome"]) == (
            n.out_trade_no,
            n.facts["amount_minor"],
            "pending",
        )
        [event] = row["events"]
        assert event["out_trade_no"] == n.out_trade_no
        assert (event["provider"], event["kind"]) == (n.provider, "payment")


async def test_replays_and_duplicates_are_told_apart_within_and_across_batches(
    db: Database,
) -> None:
    writer = InboxWriter(db)
    # Given a first batch already stored: a WeChat message (nonce N0, key K0) and an Alipay one
    first = notice(key="K0", nonce="N0")
    ali_first = notice("alipay", key="A0")
    assert await store_together(writer, [first, ali_first]) == ["accepted", "accepted"]

    # When one batch brings every case at once
    batch = [
        notice(key="K1", nonce="N1"),  # new
        notice(key="K2", nonce="N1"),  # the same nonce again in this batch: a replay
        notice(key="K1", nonce="N3"),  # the same message resent with a new nonce: duplicate
        notice(key="K4", nonce="N0"),  # a nonce used by an earlier batch: a replay
        notice(key="K0", nonce="N5"),  # an earlier batch's message resent: duplicate
        notice(key="K6", nonce="N0"),  # a replayed nonce on a message not stored yet ...
        notice(key="K6", nonce="N7"),  # ... and the genuine copy after it: stored
        notice("alipay", key="A1"),  # new (Alipay has no nonce)
        notice("alipay", key="A1"),  # resent in the same batch: duplicate
        notice("alipay", key="A0"),  # resent from an earlier batch: duplicate
    ]
    results = await store_together(writer, batch)

    # Then each gets its exact answer
    assert results == [
        "accepted",
        "replay",
        "duplicate",
        "replay",
        "duplicate",
        "replay",
        "accepted",
        "accepted",
        "duplicate",
        "duplicate",
    ]
    # And the inbox holds exactly the five accepted messages, each with one event, as first sent
    stored = await inbox(db)
    assert sorted(stored) == [
        ("alipay", "A0"),
        ("alipay", "A1"),
        ("wechatpay", "K0"),
        ("wechatpay", "K1"),
        ("wechatpay", "K6"),
    ]
    assert stored[("wechatpay", "K1")]["out_trade_no"] == batch[0].out_trade_no
    assert stored[("wechatpay", "K6")]["out_trade_no"] == batch[6].out_trade_no
    assert stored[("wechatpay", "K0")]["out_trade_no"] == first.out_trade_no
    assert stored[("alipay", "A1")]["out_trade_no"] == batch[7].out_trade_no
    assert all(len(row["events"]) == 1 for row in stored.values())
    # And every nonce that reached the database is remembered, the replayed ones once
    assert await nonces(db) == {("wechatpay", n) for n in ("N0", "N1", "N3", "N5", "N7")}


@ONLY_PG  # SQLite does not enforce column lengths, the failure used here
async def test_a_failed_batch_stores_nothing_and_the_next_one_is_written(db: Database) -> None:
    writer = InboxWriter(db)
    # Given a batch in which one notice cannot be stored (a provider name too long for its column)
    good = notice(key="G1", nonce="GN1")
    bad = notice(key="B1", nonce="BN1")
    bad.provider = "p" * 40
    now = clock.now()
    calls = [writer.store(n, received_at=now, source_ip=None) for n in (good, bad)]

    # When it is written
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    # Then every caller of that batch gets the error, and nothing of it was kept, not even the
    # good one's nonce
    assert [type(o).__name__ for o in outcomes] == ["StringDataRightTruncationError"] * 2
    assert await inbox(db) == {}
    assert await nonces(db) == set()
    # And the platform's retry of the good one is accepted on a fresh connection
    assert await store_together(writer, [good]) == ["accepted"]
    assert sorted(await inbox(db)) == [("wechatpay", "G1")]
    assert writer.flusher is None


SLOW_INSERTS = [
    "CREATE FUNCTION ot_test_slow_insert() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$",
    "CREATE TRIGGER ot_test_slow_nonce BEFORE INSERT ON payment_nonce"
    " FOR EACH ROW EXECUTE FUNCTION ot_test_slow_insert()",
    "CREATE TRIGGER ot_test_slow_notification BEFORE INSERT ON payment_notification"
    " FOR EACH ROW EXECUTE FUNCTION ot_test_slow_insert()",
]
FAST_INSERTS = [
    "DROP TRIGGER IF EXISTS ot_test_slow_nonce ON payment_nonce",
    "DROP TRIGGER IF EXISTS ot_test_slow_notification ON payment_notification",
    "DROP FUNCTION IF EXISTS ot_test_slow_insert()",
]


async def run_sql(db: Database, statements: list[str]) -> None:
    async with db.transaction() as session:
        for statement in statements:
            await session.execute(text(statement))


@ONLY_PG  # one SQLite writer per process: there is no race between processes
async def test_two_processes_racing_over_the_same_messages_store_each_once(
    database_url: str, db: Database
) -> None:
    # Given two API processes' writers (each its own engine), and every row insert slowed down
    # (50 ms) so that their batches overlap: rows locked in arrival order would deadlock
    other = Database(database_url, pool_size=2)
    await run_sql(db, SLOW_INSERTS)
    try:
        writers = [InboxWriter(db), InboxWriter(other)]
        answers: list[list[Stored]] = []
        # When both get the same three messages at once, in opposite orders (nonces collide)
        same = [notice(key=f"R{i}", nonce=f"RN{i}") for i in range(3)]
        answers += await asyncio.wait_for(
            asyncio.gather(
                store_together(writers[0], same), store_together(writers[1], same[::-1])
            ),
            timeout=30,
        )
        # And then three more, each copy signed with its own nonce (the notifications collide)
        mine = [notice(key=f"S{i}", nonce=f"SA{i}") for i in range(3)]
        theirs = [notice(key=f"S{i}", nonce=f"SB{i}") for i in range(3)]
        answers += await asyncio.wait_for(
            asyncio.gather(
                store_together(writers[0], mine), store_together(writers[1], theirs[::-1])
            ),
            timeout=30,
        )
    finally:
        await run_sql(db, FAST_INSERTS)
        await other.dispose()

    # Then neither failed (a deadlock is an error) and each message was accepted exactly once:
    # its other copy is a replay (same nonce) or a duplicate (same message, another nonce)
    assert sorted(answers[0] + answers[1]) == ["accepted"] * 3 + ["replay"] * 3
    assert sorted(answers[2] + answers[3]) == ["accepted"] * 3 + ["duplicate"] * 3
    stored = await inbox(db)
    assert sorted(stored) == [("wechatpay", f"{k}{i}") for k in "RS" for i in range(3)]
    assert all(len(row["events"]) == 1 for row in stored.values())


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


async def test_each_batch_reports_its_commit_time_and_its_callbacks(db: Database) -> None:
    # Given one writer and the inbox metrics as they stand
    writer = InboxWriter(db)
    batches = _sample("ordertally_payment_inbox_commit_seconds_count")
    callbacks = _sample("ordertally_payment_inbox_batch_callbacks_sum")
    seconds = _sample("ordertally_payment_inbox_commit_seconds_sum")
    # When 30 callbacks arrive together (one batch), then one alone (another)
    assert await store_together(writer, [notice() for _ in range(30)]) == ["accepted"] * 30
    assert await store_together(writer, [notice("alipay")]) == ["accepted"]
    # Then two batches carrying 31 callbacks were committed, in a measured time
    assert _sample("ordertally_payment_inbox_commit_seconds_count") - batches == 2
    assert _sample("ordertally_payment_inbox_batch_callbacks_sum") - callbacks == 31
    assert _sample("ordertally_payment_inbox_commit_seconds_sum") > seconds
