"""Periodic jobs of after-sales: receipt confirmation, refunds (claim, call, record), SLAs, the
pull of platform after-sale records, the purge of applied platform records' bodies and the case
gauges."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import lifecycle, platforms, pulls, refunds, service
from ordertally.core.db import Database
from ordertally.jobs.scheduler import periodic, periodic_outside

CASES = Gauge(
    "ordertally_aftersale_case_count", "After-sales cases by type and status", ["type", "status"]
)


@periodic("aftersales_confirm_receipts", every_seconds=600)
async def aftersales_confirm_receipts(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Complete delivered orders whose confirmation window has passed."""
    return await lifecycle.confirm_due_receipts(session, now)


@periodic_outside("aftersales_refunds", every_seconds=15)
async def aftersales_refunds(db: Database, now: datetime) -> dict[str, Any]:
    """Send due refunds to the providers and ask about unconfirmed ones, holding no
    transaction while they answer."""
    return await refunds.send_due(db, now)


@periodic("aftersales_sla", every_seconds=300)
async def aftersales_sla(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Open exception cases for case steps past their SLA."""
    return {"opened": await lifecycle.open_sla_cases(session, now)}


@periodic_outside("aftersales_refund_pull", every_seconds=60)
async def aftersales_refund_pull(db: Database, now: datetime) -> dict[str, Any]:
    """Pull the after-sale records of the Pinduoduo accounts that are due, holding no
    transaction while the platform answers."""
    return await pulls.pull_due(db, now)


# A refund can be pulled before its order (a refund on a just-paid order, the order pull not
# yet due): its record waits as unknown_order and is applied once the order is here. Records
# older than this are left to `ordertally aftersales reapply` (orders never ours stay there).
RECORD_RETRY_DAYS = 7


@periodic("aftersales_record_retry", every_seconds=300)
async def aftersales_record_retry(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Apply again the recent platform records whose order had not arrived yet."""
    result = await platforms.reapply_records(
        session,
        "aftersales_record_retry",
        limit=500,
        statuses=("unknown_order",),
        received_after=now - timedelta(days=RECORD_RETRY_DAYS),
    )
    return {"created": result.created, "still_unknown": result.unknown_order}


@periodic("aftersales_record_purge", every_seconds=3600)
async def aftersales_record_purge(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Empty the sealed bodies of platform records applied longer ago than the retention."""
    return {"purged": await platforms.purge_record_bodies(session, now)}


@periodic("aftersales_gauges", every_seconds=60)
async def aftersales_gauges(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """Publish cases by type and status."""
    counts = await service.counts(session)
    for (case_type, status), n in counts.items():
        CASES.labels(case_type, status).set(n)
    return {"cases": sum(counts.values())}
