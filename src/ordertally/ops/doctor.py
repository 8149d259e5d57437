"""`ordertally doctor`: the checks a person would otherwise run by hand."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import repository as aftersales_repository
from ordertally.aftersales import service as aftersales_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import Settings
from ordertally.events import repository as events_repository
from ordertally.exceptions import repository as exceptions_repository
from ordertally.inventory import repository as inventory_repository
from ordertally.ops import migrations
from ordertally.ops import repository as health
from ordertally.orders import repository as orders_repository
from ordertally.orders import service as orders_service
from ordertally.payments import repository as payments_repository
from ordertally.payments import service as payments_service
from ordertally.payments.models import AFTERSALES_REFUND_PREFIX
from ordertally.search import service as search_service


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


async def run_checks(db: Database, settings: Settings) -> list[Check]:
    """Run every check; a failing database stops the rest."""
    checks: list[Check] = []
    try:
        async with db.transaction(write=False) as session:
            await health.ping(session)
    except Exception as exc:
        return [Check("database", False, f"unreachable: {exc}")]
    checks.append(Check("database", True, f"reachable ({db.dialect})"))

    async with db.transaction(write=False) as session:
        current = await migrations.current_revision(session)
        head = migrations.head_revision()
        checks.append(
            Check(
                "migrations",
                current == head,
                "at head" if current == head else f"at {current}, head is {head}: run migrate",
                {"current": current, "head": head},
            )
        )
        if current != head:
            return checks

        backlog, oldest = await events_repository.backlog(session)
        age = (clock.now() - clock.as_utc(oldest)).total_seconds() if oldest else 0.0
        ok = backlog <= settings.doctor_outbox_max_backlog and (
            age <= settings.doctor_outbox_max_age_seconds
        )
        checks.append(
            Check(
                "outbox",
                ok,
                f"{backlog} pending, oldest {age:.0f}s" + ("" if ok else " (is a worker running?)"),
                {"backlog": backlog, "oldest_age_seconds": round(age, 3)},
            )
        )
        dead = await events_repository.count_dead_letters(session)
        checks.append(
            Check(
                "dead_letters",
                dead == 0,
                f"{dead} dead letters" + ("" if dead == 0 else ": inspect and replay"),
                {"count": dead},
            )
        )

        checks.extend(await _inventory_checks(session))

        before = clock.now() - timedelta(seconds=settings.doctor_stuck_grace_seconds)
        stuck = await orders_repository.count_stuck_pending(session, before)
        checks.append(
            Check(
                "stuck_orders",
                stuck == 0,
                f"{stuck} orders pending payment past their deadline",
                {"pending_payment_past_deadline": stuck},
            )
        )
        checks.append(await _unreserved_orders_check(session))
        checks.append(await _fingerprints_check(session, settings))
        checks.append(await _breached_cases_check(session))
        checks.extend(await _payment_checks(session, settings))
        checks.extend(await _search_checks(session, settings))
        checks.extend(await _aftersales_checks(session))
    return checks


async def _aftersales_checks(session: AsyncSession) -> list[Check]:
    """Today's (UTC) after-sales refunds confirmed = the refunds payments recorded from the
    providers under after-sales numbers; units inspected = units returned to the ledger."""
    start = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    ours = await aftersales_repository.confirmed_provider_refunds(session, start, end)
    theirs = await payments_repository.refunds_recorded_between(
        session, AFTERSALES_REFUND_PREFIX, start - timedelta(days=1), end
    )
    missing = sorted(no for no in ours if theirs.get(no) != ours[no])
    inspected = await aftersales_service.inspected_stock_units(session)
    returned = await inventory_repository.movement_total(session, "return", "after-sales %")
    return [
        Check(
            "aftersales_refunds",
            not missing,
            f"{len(ours)} refunds confirmed today, {sum(ours.values())} in all"
            + (f"; {len(missing)} not recorded from the provider" if missing else ""),
            {"confirmed": len(ours), "amount_minor": sum(ours.values()), "unmatched": missing[:10]},
        ),
        Check(
            "aftersales_returned_stock",
            inspected == returned,
            f"{inspected} units inspected, {returned} returned to stock in the ledger",
            {"inspected": inspected, "returned_movements": returned},
        ),
    ]


# How many order numbers a failing check names (the count says how many there are in all).
SAMPLE_ORDERS = 10


async def _unreserved_orders_check(session: AsyncSession) -> Check:
    """Paid or allocated orders that nothing will ever ship: no live reservation for their
    lines and no hold saying why."""
    count, sample = await health.unreserved_orders(session, clock.now(), SAMPLE_ORDERS)
    detail = f"{count} paid or allocated orders with neither reserved stock nor a hold"
    if count:
        detail += f" (e.g. {', '.join(sample)}): reserve their stock or open a hold"
    return Check(
        "unreserved_paid_orders", count == 0, detail, {"count": count, "order_nos": sample}
    )


# Fingerprints older than the duplicate window plus this are left behind by a purge that is not
# running (`purge_order_fingerprints` runs every 10 minutes); the count stops at the cap.
FINGERPRINT_GRACE_SECONDS = 3600
FINGERPRINT_CAP = 10_000


async def _fingerprints_check(session: AsyncSession, settings: Settings) -> Check:
    """The duplicate check's fingerprints are purged: none older than the window and a grace."""
    stale = await orders_service.stale_fingerprints(
        session, clock.now(), settings, FINGERPRINT_GRACE_SECONDS, FINGERPRINT_CAP
    )
    more = "+" if stale >= FINGERPRINT_CAP else ""
    detail = f"{stale}{more} order fingerprints kept past the duplicate window"
    if stale:
        detail += ": is a worker running the purge_order_fingerprints job?"
    return Check("order_fingerprints", stale == 0, detail, {"stale": stale})


async def _breached_cases_check(session: AsyncSession) -> Check:
    """Exception cases still needing work past their SLA due time."""
    count, ids = await exceptions_repository.count_breached(session, clock.now())
    detail = f"{count} exception cases past their SLA"
    if count:
        detail += f" (e.g. #{', #'.join(map(str, ids))}): work or escalate them in the workbench"
    return Check("breached_cases", count == 0, detail, {"count": count, "case_ids": ids})


async def _payment_checks(session: AsyncSession, settings: Settings) -> list[Check]:
    problems = payments_service.configuration_problems(settings)
    enabled = payments_service.enabled_providers(settings)
    backlog, oldest = await payments_service.inbox_backlog(session)
    age = (clock.now() - clock.as_utc(oldest)).total_seconds() if oldest else 0.0
    inbox_ok = age <= settings.doctor_payment_inbox_max_age_seconds
    overdue = await payments_service.count_overdue_queries(
        session, clock.now() - timedelta(seconds=settings.doctor_stuck_grace_seconds)
    )
    return [
        Check(
            "payment_providers",
            not problems,
            "; ".join(problems) or f"enabled: {', '.join(enabled) or 'none'}",
            {"enabled": enabled, "problems": problems},
        ),
        Check(
            "payment_inbox",
            inbox_ok,
            f"{backlog} notifications not yet applied, oldest {age:.0f}s"
            + ("" if inbox_ok else " (is a worker running?)"),
            {"backlog": backlog, "oldest_age_seconds": round(age, 3)},
        ),
        Check(
            "payment_queries",
            overdue == 0,
            f"{overdue} payment attempts whose active query is overdue",
            {"overdue": overdue},
        ),
    ]


# Below this many index rows the planner rightly prefers reading the table to the index.
SEARCH_PLAN_MIN_ROWS = 10_000


async def _search_checks(session: AsyncSession, settings: Settings) -> list[Check]:
    """The search index's lag (order changes queued for the search lane: the dirty backlog)
    and that searches use the index."""
    pending, age = await search_service.pending_lag(session)
    lag_ok = age <= settings.doctor_outbox_max_age_seconds
    stats = await search_service.index_stats(session)
    plans = await search_service.plans(session)
    uses = all(p.uses_index for p in plans)
    parallel = [p.query for p in plans if p.parallel]
    small = stats["rows"] < SEARCH_PLAN_MIN_ROWS
    if parallel:
        plan_message = (
            "searches would start parallel workers (a process each, per query): "
            "set max_parallel_workers_per_gather = 0 for the app's connections"
        )
    elif uses:
        plan_message = "searches use the index"
    elif small:
        plan_message = f"{stats['rows']} index rows: too few for the planner to prefer the index"
    else:
        plan_message = "searches do not use the index: run ANALYZE, or search rebuild"
    return [
        Check(
            "search_index_lag",
            lag_ok,
            f"{pending} order changes queued for the search lane, oldest {age:.0f}s"
            + ("" if lag_ok else " (is a worker running its search lane?)"),
            {"pending": pending, "backlog": pending, "oldest_age_seconds": round(age, 3)},
        ),
        Check(
            "search_plan",
            (uses or small) and not parallel,
            plan_message,
            {
                "uses_index": uses,
                "parallel": parallel,
                "rows": stats["rows"],
                "plans": {p.query: p.text for p in plans},
            },
        ),
    ]


async def _inventory_checks(session: AsyncSession) -> list[Check]:
    reserved = await inventory_repository.reserved_mismatches(session)
    on_hand = await inventory_repository.on_hand_mismatches(session)
    expired = await inventory_repository.oldest_expired_held(session, clock.now())
    negative = await inventory_repository.count_negative_available(session)
    return [
        Check(
            "reserved_matches_reservations",
            not reserved,
            f"{len(reserved)} stock rows whose reserved differs from their live reservations",
            {
                "stock_rows": [
                    {"stock_id": a, "reserved": b, "live": c} for a, b, c in reserved[:20]
                ]
            },
        ),
        Check(
            "on_hand_matches_ledger",
            not on_hand,
            f"{len(on_hand)} (warehouse, SKU) whose on hand differs from the movement ledger",
            {
                "stock": [
                    {"warehouse_id": a, "sku": b, "on_hand": c, "ledger": d}
                    for a, b, c, d in on_hand[:20]
                ]
            },
        ),
        Check(
            "expired_reservations",
            expired is None,
            "no held reservation past its expiry"
            if expired is None
            else f"held reservations expired since {expired.isoformat()}: is the worker running?",
            {"oldest_expired_at": expired.isoformat() if expired else None},
        ),
        Check(
            "available_not_negative",
            negative == 0,
            f"{negative} stock rows with negative available to sell",
            {"rows": negative},
        ),
    ]


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The machine-readable report."""
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
