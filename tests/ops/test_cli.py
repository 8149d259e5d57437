"""The command line, run as a newcomer would run it: a real process against the database."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from ordertally.auth.service import Authenticator
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.errors import Unauthenticated
from tests.factories import make_order
from tests.search.helpers import index

pytestmark = pytest.mark.anyio


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


async def test_apikey_create_prints_the_key_last_and_stores_it_hashed(db: Database) -> None:
    result = _cli("apikey", "create", "--name", "erp-sync", "--role", "warehouse")
    assert result.returncode == 0, result.stderr
    raw = result.stdout.strip().splitlines()[-1]
    assert raw.startswith("ot_") and len(raw) > 40
    principal = await Authenticator(db, 0).authenticate(f"Bearer {raw}")
    assert (principal.name, principal.role) == ("erp-sync", "warehouse")
    with pytest.raises(Unauthenticated):
        await Authenticator(db, 0).authenticate(f"Bearer {raw}x")
    refused = _cli("apikey", "create", "--name", "x", "--role", "superuser")
    assert refused.returncode == 2 and "role must be one of" in refused.stderr


async def test_doctor_passes_on_a_healthy_database(db: Database) -> None:
    await make_order(db)
    await index(db)
    result = _cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [
        "database",
        "migrations",
        "outbox",
        "dead_letters",
        "reserved_matches_reservations",
        "on_hand_matches_ledger",
        "expired_reservations",
        "available_not_negative",
        "stuck_orders",
        "unreserved_paid_orders",
        "order_fingerprints",
        "breached_cases",
        "payment_providers",
        "payment_inbox",
        "payment_queries",
        "search_index_lag",
        "search_plan",
        "aftersales_refunds",
        "aftersales_returned_stock",
    ]


async def test_doctor_fails_on_stuck_orders_and_outbox_backlog(db: Database) -> None:
    with clock.frozen(clock.now() - timedelta(hours=3)):
        await make_order(db)
    result = _cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    # (and the order's fingerprint outlived the duplicate window: no worker purged it)
    assert set(failed) == {
        "outbox",
        "stuck_orders",
        "expired_reservations",
        "search_index_lag",
        "order_fingerprints",
    }
    assert failed["stuck_orders"]["data"] == {"pending_payment_past_deadline": 1}
    assert failed["outbox"]["data"]["backlog"] == 1
    # the order's creation is queued for the search lane, 3 h old
    assert failed["search_index_lag"]["data"]["backlog"] == 1
    assert failed["search_index_lag"]["data"]["oldest_age_seconds"] >= 3 * 3600


def test_schemas_prints_every_event_schema() -> None:
    result = _cli("schemas")
    assert result.returncode == 0
    schemas = json.loads(result.stdout)
    assert "OrderCreated.v1" in schemas and "OrderPaid.v1" in schemas
    assert "total_minor" in schemas["OrderCreated.v1"]["properties"]


async def test_replay_requeues_dead_events(db: Database) -> None:
    from sqlalchemy import select, update

    from ordertally.events.models import DeadLetter, OutboxEvent

    await make_order(db)
    async with db.transaction() as session:
        event = (await session.scalars(select(OutboxEvent))).one()
        await session.execute(update(OutboxEvent).values(status="dead", attempts=20))
        session.add(
            DeadLetter(
                event_id=event.event_id,
                event_type=event.event_type,
                consumer="x",
                reason="boom",
                attempts=20,
                created_at=clock.now(),
            )
        )
    result = _cli("replay")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 dead events requeued", event.event_id]
    async with db.transaction(write=False) as session:
        assert (await session.scalar(select(OutboxEvent.status))) == "pending"
        assert (await session.scalar(select(OutboxEvent.attempts))) == 0
        assert (await session.scalars(select(DeadLetter))).all() == []


def test_the_commands_log_no_line_per_outbound_request() -> None:
    # Given the logging a command sets up (serve, worker, and the rest)
    import logging

    from ordertally import cli

    before = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        cli._logging()
        # Then httpx's INFO line per request is off, its warnings and errors still come through
        for name in ("httpx", "httpcore"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
