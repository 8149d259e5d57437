"""Claiming attempts for active queries: a claim leases the due attempts (their next query is
pushed past the time asking them can take), so a second worker claiming at once gets none of
them; attempts not yet due, or with a result, are never claimed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.payments import compensation
from tests.factories import make_order
from tests.payments.helpers import make_attempt, paid_notice, payment_row, store_and_apply

pytestmark = pytest.mark.anyio


async def test_a_claim_leases_the_due_attempts(db: Database) -> None:
    # Given three attempts due for a query, one with a result already, and one not yet due
    due = [await make_attempt(db, await make_order(db)) for _ in range(3)]
    paid = await make_attempt(db, await make_order(db))
    assert (await store_and_apply(db, paid_notice(paid)))[1] == "paid"
    clock.advance(timedelta(minutes=1))
    later = await make_attempt(db, await make_order(db))
    now = clock.now() + timedelta(minutes=4, seconds=30)
    # When two workers claim at the same moment
    first, second = await asyncio.gather(
        compensation.claim_due(db, now, 10), compensation.claim_due(db, now, 10)
    )
    # Then each due attempt is claimed by exactly one of them
    claimed = sorted(p.id for p in [*first, *second])
    assert claimed == sorted(p.id for p in due)
    # And is leased: its next query waits until asking ten attempts could have taken
    lease = compensation.query_lease(get_settings(), 10)
    assert lease == timedelta(seconds=60 + 2 * 5.0)
    for attempt in due:
        assert (await payment_row(db, attempt.id)).next_query_at == now + lease
    # And the others are untouched
    assert (await payment_row(db, paid.id)).next_query_at is None
    assert (await payment_row(db, later.id)).next_query_at == later.next_query_at
    # And a claim during the lease gets only the attempt that became due meanwhile
    during = await compensation.claim_due(db, now + lease - timedelta(seconds=1), 10)
    assert [p.id for p in during] == [later.id]
    # And one once the lease ended gets the first three again
    again = await compensation.claim_due(db, now + lease, 10)
    assert sorted(p.id for p in again) == sorted(p.id for p in due)
