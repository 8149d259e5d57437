"""Every query of the rules domain: rules, their versions, the firing log, purchase plans."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from ordertally.core.db import upsert_insert
from ordertally.rules.models import PurchasePlan, PurchasePlanEvent, Rule, RuleHit, RuleVersion

# --- rules ---------------------------------------------------------------------------------------


async def get(session: AsyncSession, rule_id: int) -> Rule | None:
    """A rule by id, read fresh."""
    return await session.get(Rule, rule_id, populate_existing=True)


async def by_code(session: AsyncSession, code: str) -> Rule | None:
    """A rule by its code."""
    result = await session.scalars(select(Rule).where(Rule.code == code))
    return result.one_or_none()


async def codes(session: AsyncSession, candidates: Sequence[str]) -> set[str]:
    """Which of these codes name a rule."""
    result = await session.scalars(select(Rule.code).where(Rule.code.in_(list(candidates))))
    return set(result.all())


async def list_rules(session: AsyncSession) -> list[Rule]:
    """Every rule, by id."""
    return list((await session.scalars(select(Rule).order_by(Rule.id))).all())


async def enabled(session: AsyncSession, also_codes: Sequence[str] = ()) -> list[Rule]:
    """The enabled rules (and those of `also_codes`, enabled or not), by id."""
    where: ColumnElement[bool] = Rule.enabled.is_(True)
    if also_codes:
        where = or_(where, Rule.code.in_(list(also_codes)))
    result = await session.scalars(select(Rule).where(where).order_by(Rule.id))
    return list(result.all())


async def add(session: AsyncSession, values: dict[str, Any]) -> Rule:
    """Insert a rule."""
    rule = Rule(**values)
    session.add(rule)
    await session.flush()
    return rule


async def add_version(session: AsyncSession, values: dict[str, Any]) -> None:
    """Keep one saved version of a rule."""
    await session.execute(insert(RuleVersion).values(**values))


async def versions(session: AsyncSession, rule_id: int) -> list[RuleVersion]:
    """A rule's saved versions, newest first."""
    result = await session.scalars(
        select(RuleVersion)
        .where(RuleVersion.rule_id == rule_id)
        .order_by(RuleVersion.version.desc())
    )
    return list(result.all())


async def bump(session: AsyncSession, rule_id: int, version: int, values: dict[str, Any]) -> bool:
    """Save a new version over `version` (compare-and-set); False when someone saved first."""
    result = await session.execute(
        update(Rule)
        .where(Rule.id == rule_id, Rule.version == version)
        .values(version=version + 1, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- firings -------------------------------------------------------------------------------------


async def add_hit_if_absent(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Log a firing unless this rule already fired for this dedupe key; its id when new."""
    stmt = (
        upsert_insert(session, RuleHit)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["rule_id", "dedupe_key"])
        .returning(RuleHit.id)
    )
    hit_id = (await session.execute(stmt)).scalar_one_or_none()
    return int(hit_id) if hit_id is not None else None


async def set_outcomes(session: AsyncSession, hit_id: int, outcomes: list[dict[str, Any]]) -> None:
    """Record what a firing's actions did."""
    await session.execute(update(RuleHit).where(RuleHit.id == hit_id).values(outcomes=outcomes))


async def hits(
    session: AsyncSession, rule_id: int, *, before_id: int | None, limit: int
) -> list[RuleHit]:
    """A rule's firings, newest first (keyset by id)."""
    stmt = select(RuleHit).where(RuleHit.rule_id == rule_id)
    if before_id is not None:
        stmt = stmt.where(RuleHit.id < before_id)
    result = await session.scalars(stmt.order_by(RuleHit.id.desc()).limit(limit))
    return list(result.all())


async def hit_counts(session: AsyncSession) -> dict[int, tuple[int, datetime | None]]:
    """Per rule: how many times it fired and when it last did."""
    rows = await session.execute(
        select(RuleHit.rule_id, func.count(), func.max(RuleHit.fired_at)).group_by(RuleHit.rule_id)
    )
    return {int(r): (int(n), last) for r, n, last in rows.all()}


# --- purchase plans ------------------------------------------------------------------------------


async def add_plans(session: AsyncSession, rows: list[dict[str, Any]]) -> list[PurchasePlan]:
    """Insert purchase plans; one already there (same SKU, warehouse, date and reference) is
    left alone. Returns the plans that were new."""
    added: list[PurchasePlan] = []
    for row in rows:
        stmt = (
            upsert_insert(session, PurchasePlan)
            .values(**row)
            .on_conflict_do_nothing(
                index_elements=["sku", "warehouse_code", "expected_date", "reference"]
            )
            .returning(PurchasePlan.id)
        )
        plan_id = (await session.execute(stmt)).scalar_one_or_none()
        if plan_id is not None:
            added.append(PurchasePlan(id=int(plan_id), **row))
    return added


async def plans(
    session: AsyncSession, *, sku: str | None, start: date | None, end: date | None, limit: int
) -> list[PurchasePlan]:
    """Purchase plans, by date then SKU, optionally of one SKU and within [start, end]."""
    stmt = select(PurchasePlan)
    if sku is not None:
        stmt = stmt.where(PurchasePlan.sku == sku)
    if start is not None:
        stmt = stmt.where(PurchasePlan.expected_date >= start)
    if end is not None:
        stmt = stmt.where(PurchasePlan.expected_date <= end)
    stmt = stmt.order_by(PurchasePlan.expected_date, PurchasePlan.sku, PurchasePlan.id)
    return list((await session.scalars(stmt.limit(limit))).all())


def _prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"{escaped}%", escape="\\")


async def plan_page(
    session: AsyncSession,
    *,
    sku_prefix: str | None,
    warehouses: Collection[str] | None,
    start: date | None,
    end: date | None,
    after: tuple[date, int] | None,
    limit: int,
) -> list[PurchasePlan]:
    """Purchase plans by (expected date, id), after the key `after` (keyset pages), of SKUs
    starting with `sku_prefix`, in `warehouses`, within [start, end]."""
    stmt = select(PurchasePlan)
    if sku_prefix:
        stmt = stmt.where(_prefix(PurchasePlan.sku, sku_prefix))
    if warehouses is not None:
        stmt = stmt.where(PurchasePlan.warehouse_code.in_(sorted(warehouses)))
    if start is not None:
        stmt = stmt.where(PurchasePlan.expected_date >= start)
    if end is not None:
        stmt = stmt.where(PurchasePlan.expected_date <= end)
    if after is not None:
        stmt = stmt.where(
            or_(
                PurchasePlan.expected_date > after[0],
                and_(PurchasePlan.expected_date == after[0], PurchasePlan.id > after[1]),
            )
        )
    stmt = stmt.order_by(PurchasePlan.expected_date, PurchasePlan.id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def saved_plan_keys(
    session: AsyncSession, skus: Collection[str]
) -> set[tuple[str, str, date, str]]:
    """(sku, warehouse, expected date, reference) of the saved plans of these SKUs."""
    if not skus:
        return set()
    rows = await session.execute(
        select(
            PurchasePlan.sku,
            PurchasePlan.warehouse_code,
            PurchasePlan.expected_date,
            PurchasePlan.reference,
        ).where(PurchasePlan.sku.in_(sorted(skus)))
    )
    return {(str(s), str(w), d, str(r)) for s, w, d, r in rows.all()}


async def planned_quantities(
    session: AsyncSession, skus: Sequence[str], start: date, end: date
) -> dict[tuple[str, str], int]:
    """Units expected per (SKU, warehouse) between start and end (inclusive)."""
    rows = await session.execute(
        select(PurchasePlan.sku, PurchasePlan.warehouse_code, func.sum(PurchasePlan.quantity))
        .where(
            PurchasePlan.sku.in_(list(skus)),
            PurchasePlan.expected_date >= start,
            PurchasePlan.expected_date <= end,
        )
        .group_by(PurchasePlan.sku, PurchasePlan.warehouse_code)
    )
    return {(str(s), str(w)): int(q) for s, w, q in rows.all()}


async def get_plan(session: AsyncSession, plan_id: int) -> PurchasePlan | None:
    """A purchase plan by id."""
    return await session.get(PurchasePlan, plan_id)


async def delete_plan(session: AsyncSession, plan_id: int) -> PurchasePlan | None:
    """Delete a purchase plan; returns it, or None when there was none."""
    plan = await session.get(PurchasePlan, plan_id)
    if plan is None:
        return None
    await session.delete(plan)
    return plan


async def add_plan_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append rows to the purchase plans' audit trail."""
    if rows:
        await session.execute(insert(PurchasePlanEvent), rows)


async def plan_events(
    session: AsyncSession, *, warehouses: Collection[str] | None, limit: int
) -> list[PurchasePlanEvent]:
    """The latest entries of the purchase plans' audit trail, newest first."""
    stmt = select(PurchasePlanEvent)
    if warehouses is not None:
        stmt = stmt.where(PurchasePlanEvent.warehouse_code.in_(sorted(warehouses)))
    stmt = stmt.order_by(PurchasePlanEvent.at.desc(), PurchasePlanEvent.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
