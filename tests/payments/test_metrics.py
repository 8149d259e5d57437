"""Metrics are counted once the transaction that did the work has committed: not before, not
when it rolls back, and not for a savepoint that rolled back inside a committed transaction."""

from __future__ import annotations

import pytest

from ordertally.core.db import Database, count_after_commit

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def test_counted_after_commit_only(db: Database) -> None:
    counted: list[str] = []
    # When work is counted inside a transaction
    async with db.transaction() as session:
        count_after_commit(session, lambda: counted.append("a"))
        count_after_commit(session, lambda: counted.append("b"))
        # Then nothing is counted before the commit
        assert counted == []
    # And everything once it committed, in order
    assert counted == ["a", "b"]


async def test_nothing_counted_when_the_transaction_rolls_back(db: Database) -> None:
    counted: list[str] = []
    with pytest.raises(Boom):
        async with db.transaction() as session:
            count_after_commit(session, lambda: counted.append("lost"))
            raise Boom
    assert counted == []


async def test_a_savepoint_rolled_back_loses_only_its_own_counts(db: Database) -> None:
    counted: list[str] = []
    async with db.transaction() as session:
        count_after_commit(session, lambda: counted.append("before"))
        # Given a savepoint that commits and one that rolls back
        async with session.begin_nested():
            count_after_commit(session, lambda: counted.append("kept savepoint"))
        assert counted == []
        with pytest.raises(Boom):
            async with session.begin_nested():
                count_after_commit(session, lambda: counted.append("rolled back"))
                async with session.begin_nested():
                    count_after_commit(session, lambda: counted.append("inner rolled back"))
                raise Boom
        count_after_commit(session, lambda: counted.append("after"))
        assert counted == []
    # Then the outer commit counts all but the rolled-back savepoint's
    assert counted == ["before", "kept savepoint", "after"]
