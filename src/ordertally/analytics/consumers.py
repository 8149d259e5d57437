"""Consumers that keep analytics tables up to date from order, shipment, after-sales and
exception case events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics import aftersale, aftersale_rows, service
from ordertally.events.registry import Envelope, batch_consumer, consumer


# `last`: a tally row (one per day, channel and currency) is shared by every worker. Taken at
# the end of the batch, after the batch's order and stock rows, it closes no lock cycle with a
# ship or another worker (issue 21's drill deadlock; ADR 0017, addendum).
@consumer("analytics.order_daily_tally", "OrderCreated", last=True)
async def tally_created_order(session: AsyncSession, event: Envelope) -> None:
    """Count the order on its merchant-local business day."""
    await service.tally_order(session, event)


@batch_consumer("analytics.order_daily_tally")
async def tally_created_orders(session: AsyncSession, events: list[Envelope]) -> None:
    """The same counts for a dispatch batch: one upsert, its rows in key order."""
    await service.tally_orders(session, events)


# `last` too: besides the order's own timeline row, the batch fold moves the shared stage rows
# (one per day, channel, stage and bucket), taken in key order at the batch's tail (ADR 0038).
@consumer("analytics.order_timeline", *service.TIMELINE_EVENTS, last=True)
async def fold_into_timeline(session: AsyncSession, event: Envelope) -> None:
    """Record when the order reached a stage, where it shipped from and with whom."""
    await service.apply_event(session, event)


@batch_consumer("analytics.order_timeline")
async def fold_batch_into_timeline(session: AsyncSession, events: list[Envelope]) -> None:
    """The same fold for a dispatch batch: the timelines locked and read in one statement,
    written in one, the stage rows moved in one."""
    await service.apply_events(session, events)


# `last` as well: the fold moves shared stage and KPI rows (per day, channel and value), taken
# in key order at the batch's tail (ADR 0040).
@consumer("analytics.aftersale_timeline", *aftersale_rows.AFTERSALE_EVENTS, last=True)
async def fold_into_aftersale_timeline(session: AsyncSession, event: Envelope) -> None:
    """Read the case again and move its timeline, stage and KPI rows to where it stands."""
    await aftersale.apply_events(session, [event])


@batch_consumer("analytics.aftersale_timeline")
async def fold_batch_into_aftersale_timelines(
    session: AsyncSession, events: list[Envelope]
) -> None:
    """The same fold for a dispatch batch: each case read once, its rows moved once."""
    await aftersale.apply_events(session, events)


# `last` too: moves the shared delay-cause rows (per day, channel, stage and case type), taken
# in key order at the batch's tail (ADR 0043).
@consumer("analytics.delay_causes", "ExceptionCaseOpened", last=True)
async def fold_case_into_delay_causes(session: AsyncSession, event: Envelope) -> None:
    """Read the order's case types again and move its delay-cause rows by the change."""
    await service.apply_cases(session, _case_orders([event]))


@batch_consumer("analytics.delay_causes")
async def fold_cases_into_delay_causes(session: AsyncSession, events: list[Envelope]) -> None:
    """The same for a dispatch batch: each order's timeline locked and its types read once."""
    await service.apply_cases(session, _case_orders(events))


def _case_orders(events: list[Envelope]) -> list[int]:
    return [int(e.payload["order_id"]) for e in events]
