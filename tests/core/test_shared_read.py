"""`SharedRead`: concurrent callers share one read, and each gets the answer of a read that
started after it asked (never an older one)."""

from __future__ import annotations

import asyncio

import pytest

from ordertally.core.db import SharedRead

pytestmark = pytest.mark.anyio


async def test_callers_arriving_during_a_read_share_the_next_one_which_sees_their_writes() -> None:
    # Given a value read through a read we can hold open
    value = {"now": 1}
    reads: list[int] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def read() -> int:
        seen = value["now"]  # what the read sees is what was committed when it started
        reads.append(seen)
        started.set()
        await release.wait()
        return seen

    shared = SharedRead(read)
    # When one caller starts a read, then the value changes and four callers ask meanwhile
    first = asyncio.ensure_future(shared.get())
    await started.wait()
    value["now"] = 2
    later = [asyncio.ensure_future(shared.get()) for _ in range(4)]
    await asyncio.sleep(0)
    release.set()
    # Then two reads ran, not five: the first caller's, and one the four shared, which
    # started after they asked and so sees the change
    assert await first == 1
    assert [await f for f in later] == [2, 2, 2, 2]
    assert reads == [1, 2]


async def test_a_failed_read_fails_its_callers_and_the_next_caller_reads_again() -> None:
    # Given a read that fails once
    attempts: list[int] = []

    async def read() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        return 7

    shared = SharedRead(read)
    # When two callers share the failed read, then a third asks
    results = await asyncio.gather(shared.get(), shared.get(), return_exceptions=True)
    # Then both saw the failure, and the third gets a new read's answer
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await shared.get() == 7
    assert len(attempts) == 2
