"""The customer flags that were hard-coded in customers/ are built-in rules, on by default:
saved by the rules consumer the first time it evaluates `order.created`, they raise the same
flag and case as before, logged as firings; a merchant who disables one silences it for good."""

import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.customers.models import CustomerFlag
from ordertally.rules import service
from ordertally.rules.errors import ActionInvalid
from ordertally.rules.models import Rule
from tests.factories import make_order
from tests.rules.helpers import cases, hits, run

pytestmark = pytest.mark.anyio

DISCOUNTED = {"lines": [{"sku": "A", "quantity": 1, "unit_price": "100.00"}], "discount": "90.00"}


async def _rules(db: Database) -> list[tuple[str, bool, str]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(select(Rule).order_by(Rule.id))
        return [(r.code, r.enabled, r.updated_by) for r in rows]


async def _flags(db: Database) -> list[tuple[int, str]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(select(CustomerFlag).order_by(CustomerFlag.id))
        return [(f.order_id, f.kind) for f in rows]


async def test_the_flag_rules_are_saved_on_by_default_and_raise_the_flags(db: Database) -> None:
    # Given a fresh install (no rule saved) and an order 90% off
    assert await _rules(db) == []
    order = await make_order(db, **DISCOUNTED)
    # When the events are delivered (twice: a replay)
    await run(db)
    await run(db)
    # Then the two flag rules were saved, enabled, by the system
    assert await _rules(db) == [
        ("builtin.discount_over_80", True, "ordertally"),
        ("builtin.same_item_burst", True, "ordertally"),
    ]
    # and the discount rule fired once: the buyer's flag and its non-blocking case
    [hit] = await hits(db)
    assert (hit.subject, hit.facts["order"]["discount_minor"]) == (order.order_no, 9000)
    assert hit.outcomes[0]["kind"] == "customer_flag" and hit.outcomes[0]["flagged"] is True
    assert await _flags(db) == [(order.id, "discount_over_limit")]
    assert await cases(db) == [(order.id, "customer.discount_over_limit", False)]


async def test_a_disabled_flag_rule_stays_disabled(db: Database) -> None:
    # Given the flag rules saved, and ops disabling the discount one
    await make_order(db, lines=[{"sku": "A", "quantity": 1, "unit_price": "10.00"}])
    await run(db)
    async with db.transaction() as session:
        [rule] = [
            r for r in await service.list_rules(session) if r.code.endswith("discount_over_80")
        ]
        await service.update_rule(session, rule.id, {"enabled": False}, "ops-1")
    # When an order 90% off arrives
    await make_order(db, **DISCOUNTED)
    await run(db)
    # Then nothing fires, no flag and no case, and the rule is not saved again
    assert await hits(db) == [] and await _flags(db) == [] and await cases(db) == []
    assert [(c, e) for c, e, _ in await _rules(db)] == [
        ("builtin.discount_over_80", False),
        ("builtin.same_item_burst", True),
    ]


def test_a_customer_flag_action_names_a_known_flag() -> None:
    with pytest.raises(ActionInvalid, match="flag must be one of"):
        service.check_rule(
            "order.created", "true", [{"kind": "customer_flag", "flag": "vip_buyer"}]
        )
    service.check_rule(
        "order.created", "true", [{"kind": "customer_flag", "flag": "same_sku_burst"}]
    )
