"""GroupCommit's timing hooks (where a request waits, ADR 0051) and its queue after a batch
is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from ordertally.core.batching import GroupCommit

pytestmark = pytest.mark.anyio


async def test_timing_says_how_long_each_item_queued_and_each_batch_ran() -> None:
    # Given a group commit whose batches take 50 ms
    ran: list[list[int]] = []
    timings: list[tuple[list[float], float]] = []

    async def run(items: list[int]) -> list[int | None]:
        ran.append(items)
        await asyncio.sleep(0.05)
        return items

    commit: GroupCommit[int, int] = GroupCommit(
        run, 10, on_timing=lambda queued, took: timings.append((queued, took))
    )
    # When one item comes alone and three more come 10 ms into its batch
    first = asyncio.ensure_future(commit.submit(1))
    await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(commit.submit(n)) for n in (2, 3, 4)]
    assert await asyncio.gather(first, *rest) == [1, 2, 3, 4]
    # Then the lone item waited for nothing, the others for the rest of the first batch
    assert ran == [[1], [2, 3, 4]]
    (alone, took1), (together, took2) = timings
    # (upper bounds loose: a loaded machine's scheduling adds to every figure)
    assert len(alone) == 1 and len(together) == 3
    assert alone[0] < min(together)
    assert all(0.035 <= q < 2 for q in together)
    assert 0.05 <= took1 < 2 and 0.05 <= took2 < 2


async def test_items_of_a_cancelled_drain_are_not_run_later() -> None:
    # Given a batch that is cancelled while three more items wait behind it
    ran: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int | None]:
        ran.append(items)
        if items == [1]:
            await gate.wait()
            raise asyncio.CancelledError
        return items

    commit: GroupCommit[int, int] = GroupCommit(run, 10, on_timing=lambda queued, took: None)
    waiting = [asyncio.ensure_future(commit.submit(1))]
    await asyncio.sleep(0.01)
    waiting += [asyncio.ensure_future(commit.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    gate.set()
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    # When a new item comes afterwards
    later = await commit.submit(5)
    # Then the waiting items were told (cancelled), and only the new one ran after
    assert all(isinstance(a, asyncio.CancelledError) for a in answers)
    assert later == 5
    assert ran == [[1], [5]]
