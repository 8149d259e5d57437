"""Flat with data (issue 21): every table that grows with traffic but is only needed for a while
has a purge that the domain wiring schedules, and the purges not covered elsewhere do what they
say on both databases. The outbox, consumers' dedupe rows and job runs: tests/events/
test_retention.py; the inbox bodies: tests/security/test_data_inbox_bodies.py; idempotency keys:
tests/idempotency/test_service.py; sessions: tests/web/test_auth.py."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.jobs import scheduler
from ordertally.payments.models import PaymentNonce

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)

# What grows with traffic and the job that keeps it bounded, with its longest allowed period.
PURGES = {
    "machinery_purge": "outbox events, consumers' dedupe rows, job runs",
    "payments_inbox_purge": "payment inbox bodies",
    "payments_purge_nonces": "payment notification nonces",
    "channels_webhook_purge": "channel webhook inbox bodies",
    "aftersales_record_purge": "after-sales platform record bodies",
    "purge_idempotency_keys": "idempotency keys",
    "purge_order_fingerprints": "the duplicate check's order fingerprints",
    "purge_user_sessions": "back-office sessions",
}
LONGEST_PERIOD_S = 3600

PROBE = """
import json
from ordertally.core.settings import get_settings
from ordertally.domains import register_all
from ordertally.jobs.scheduler import JOBS
register_all(get_settings())
print(json.dumps({name: JOBS[name].every_seconds for name in JOBS}))
"""


def test_every_retention_purge_is_scheduled_at_least_hourly() -> None:
    # Given the domains wired as the worker wires them (in a fresh interpreter: the registry is
    # process-wide)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    periods = json.loads(out.stdout.strip().splitlines()[-1])
    # Then each purge is registered, and runs at least once an hour
    assert {name: name in periods for name in PURGES} == dict.fromkeys(PURGES, True)
    slow = {name: periods[name] for name in PURGES if periods[name] > LONGEST_PERIOD_S}
    assert slow == {}


async def test_the_nonce_purge_job_forgets_only_nonces_past_the_replay_window(
    db: Database,
) -> None:
    # Given the payments jobs registered, a nonce that expired a minute ago and one still live
    from ordertally.payments import jobs  # noqa: F401  (@periodic registers the purges)

    async with db.transaction() as session:
        session.add(
            PaymentNonce(provider="wechatpay", nonce="old", expires_at=T0 - timedelta(minutes=1))
        )
        session.add(
            PaymentNonce(provider="wechatpay", nonce="new", expires_at=T0 + timedelta(minutes=4))
        )
    # When the purge job runs at T0
    with clock.frozen(T0):
        result = await scheduler.run_tick(db, scheduler.JOBS["payments_purge_nonces"], "test")
    # Then only the expired nonce is gone
    assert result == {"purged": 1}
    async with db.transaction(write=False) as session:
        left = (await session.execute(select(PaymentNonce.nonce))).scalars().all()
    assert left == ["new"]
