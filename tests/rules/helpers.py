"""Shared steps of the rules tests: save rules, drain events, read firings and cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

import ordertally.customers.consumers
import ordertally.fulfillment.consumers
import ordertally.rules.consumers  # noqa: F401  (the rule-evaluating consumer)
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions.models import ExceptionCase
from ordertally.rules import service
from ordertally.rules.models import Rule, RuleHit


async def save_rule(
    db: Database,
    condition: str,
    rule_actions: list[dict[str, Any]] | None = None,
    *,
    code: str = "test.rule",
    trigger: str = "order.created",
    enabled: bool = True,
) -> Rule:
    """Save a rule through the service (compiled and checked)."""
    async with db.transaction() as session:
        return await service.create_rule(
            session,
            code=code,
            name=f"测试规则 {code}",
            trigger=trigger,
            condition=condition,
            rule_actions=rule_actions or [{"kind": "hold", "reason": "test"}],
            enabled=enabled,
            by="tests",
        )


async def run(db: Database) -> int:
    """Deliver every pending event to the consumers."""
    return await drain(db, get_settings())


async def hits(db: Database) -> list[RuleHit]:
    """Every firing, oldest first."""
    async with db.transaction(write=False) as session:
        return list((await session.scalars(select(RuleHit).order_by(RuleHit.id))).all())


async def cases(db: Database) -> list[tuple[int | None, str, bool]]:
    """(order id, type, blocking) of every open case, by id."""
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(ExceptionCase).where(ExceptionCase.status == "open").order_by(ExceptionCase.id)
        )
        return [(c.order_id, c.type, c.blocking) for c in rows]
