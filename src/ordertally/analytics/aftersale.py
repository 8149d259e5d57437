"""After-sales analytics use cases: fold after-sales events into case timelines and their
stage and KPI rows, rebuild them from the event log, and read the after-sales stage table and
KPIs (after-sales rate and refunds by SKU, channel, responsibility, type or day; ADR 0040).

After-sales sits above analytics in the layering, so analytics never imports it: the
after-sales domain registers the read that gives a case's facts (`register_case_source`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.analytics import aftersale_rows as rows_
from ordertally.analytics import repository, service
from ordertally.analytics.errors import ChannelOutOfScope, InvalidAnalyticsRequest
from ordertally.analytics.event_templates import (
    AFTERSALE_DIMENSIONS,
    AFTERSALE_STAGES,
    KPI_DIMENSIONS,
)
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.events import service as events_service
from ordertally.events.registry import Envelope

CaseSource = Callable[[AsyncSession, list[str]], Awaitable[list[dict[str, Any]]]]
_SOURCE: list[CaseSource] = []


def register_case_source(source: CaseSource) -> None:
    """Set the read that gives after-sales cases' facts by case number (the after-sales
    domain's wiring calls it)."""
    _SOURCE[:] = [source]


async def apply_events(session: AsyncSession, events: list[Envelope]) -> None:
    """Fold a batch of after-sales events: each names a case that changed, whose facts are
    read again from the after-sales domain, so a replayed, late or out-of-order event leaves
    the case where its audit trail says it is. The batch's case timelines are locked in case
    number order, and the stage and KPI rows move by each case's new contribution less its
    old one (taken in key order: the lock order of the shared rows)."""
    case_nos = sorted({str(e.payload["case_no"]) for e in events})
    if not case_nos or not _SOURCE:
        return
    locked = await repository.lock_aftersale_timelines(session, case_nos)
    before = {r["case_no"]: r for r in locked}
    facts = await _SOURCE[0](session, case_nos)
    after = {f["case_no"]: rows_.timeline_row(f, service.local_day) for f in facts}
    changed = sorted(no for no, row in after.items() if _differs(before.get(no), row))
    if not changed:
        return
    await store(session, [before[no] for no in changed], [after[no] for no in changed])


def _differs(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return old is None or any(old.get(k) != v for k, v in new.items())


async def store(
    session: AsyncSession, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    """Write changed case timelines and move their stage and KPI rows by the difference."""
    await repository.write_aftersale_timelines(session, after)
    stage = rows_.add_deltas(
        (rows_.stage_contribution(r) for r in before), (rows_.stage_contribution(r) for r in after)
    )
    await repository.add_stage_deltas(session, stage)
    kpi = rows_.add_deltas(
        (rows_.kpi_contribution(r) for r in before), (rows_.kpi_contribution(r) for r in after)
    )
    await repository.add_kpi_deltas(session, kpi)


async def rebuild_in(session: AsyncSession, batch: int = 2000) -> int:
    """Empty the after-sales read models and replay the after-sales events of the event log
    through the consumer's fold; returns the events replayed."""
    await repository.clear_aftersale_models(session, rows_.AS_STAGE_NAMES)
    replayed, after = 0, 0
    while page := await events_service.replay_log(
        session, list(rows_.AFTERSALE_EVENTS), after, batch
    ):
        await apply_events(session, [event for _, event in page])
        after = page[-1][0]
        replayed += len(page)
    return replayed


async def rebuild(db: Database) -> int:
    """`rebuild_in` in one transaction."""
    async with db.transaction() as session:
        return await rebuild_in(session)


Channels = tuple[str, ...] | None


def narrow(channels: Channels, channel: str | None) -> Channels:
    """The channels a read covers: the caller's scope (None: every channel), narrowed to one
    channel when asked; a channel outside the caller's scope is 403 `analytics.out_of_scope`."""
    if channel is None:
        return channels
    if channels is not None and channel not in channels:
        raise ChannelOutOfScope(f"channel {channel} is outside your channels", channel=channel)
    return (channel,)


def _check(by: str, allowed: tuple[str, ...], date_from: date, date_to: date) -> None:
    if by not in allowed:
        raise InvalidAnalyticsRequest(f"by must be one of {', '.join(allowed)}", field="by")
    if date_from > date_to:
        raise InvalidAnalyticsRequest("date_from is after date_to", field="date_from")


async def stage_table(
    session: AsyncSession,
    date_from: date,
    date_to: date,
    by: str = "all",
    channels: Channels = None,
) -> list[dict[str, Any]]:
    """The after-sales stage table: per stage and value (channel, type, responsibility or
    day), cases through the stage, avg/p50/p90 hours and the share over its SLA, for cases
    requested on these local days (p50/p90 within histogram.RELATIVE_ERROR)."""
    _check(by, AFTERSALE_DIMENSIONS, date_from, date_to)
    stats = await service.aggregated(
        session, list(rows_.AS_STAGE_NAMES), by, date_from, date_to, channels
    )
    out: list[dict[str, Any]] = []
    for name, _, _, sla in AFTERSALE_STAGES:
        for s in sorted(stats[name], key=lambda s: s["key"]):
            out.append(
                {
                    "stage": name,
                    by: s["key"],
                    "cases": s["orders"],
                    **service.stage_figures(s, sla.total_seconds()),
                }
            )
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def kpis(
    session: AsyncSession,
    date_from: date,
    date_to: date,
    by: str = "all",
    channels: Channels = None,
) -> list[dict[str, Any]]:
    """After-sales KPIs per value of `by`: cases and units requested on these local days,
    orders and units shipped on them, the after-sales rates (cases / orders shipped, units /
    units shipped: by SKU over that SKU's shipments; by type or responsibility over every
    shipment) and the refunds confirmed for those cases, exact per currency."""
    _check(by, KPI_DIMENSIONS, date_from, date_to)
    since, until = date_from.isoformat(), date_to.isoformat()
    found = await repository.aftersale_kpi_rows(session, by, since, until, channels)
    shipped = await repository.shipped_rows(session, by, since, until, channels)
    per_key: dict[str, dict[str, Any]] = {}
    for key, currency, cases, units, refund in found:
        entry = per_key.setdefault(key, {"cases": 0, "units": 0, "refunds": []})
        entry["cases"] += cases
        entry["units"] += units
        if refund:
            entry["refunds"].append(
                {
                    "currency": currency,
                    "amount": format_minor(refund, currency),
                    "amount_minor": refund,
                }
            )
    if by in ("all", "channel", "day"):  # a channel or day that shipped and had no case: 0 %
        for key in shipped:
            per_key.setdefault(key, {"cases": 0, "units": 0, "refunds": []})
    out = []
    for key in sorted(per_key):
        entry = per_key[key]
        base = shipped.get(key if by in ("channel", "day", "sku") else "all", (0, 0))
        out.append(
            {
                by: key,
                "cases": entry["cases"],
                "units": entry["units"],
                "shipped_orders": base[0],
                "shipped_units": base[1],
                "case_rate": _rate(entry["cases"], base[0]),
                "unit_rate": _rate(entry["units"], base[1]),
                "refunds": entry["refunds"],
            }
        )
    return out
