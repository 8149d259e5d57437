"""Rules fire on the events they name: every firing is logged with the facts it saw, its
actions run once (a replayed event fires nothing twice), a held order does not allocate, a
disabled rule stays silent, and a dry run matches what the rule then does when enabled."""

import httpx
import pytest
from sqlalchemy import select

from ordertally.core.db import Database
from ordertally.customers.models import CustomerTag
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import auth, make_order
from tests.rules.helpers import cases, hits, run, save_rule

pytestmark = pytest.mark.anyio

BIG = [{"sku": "TEA-LJ-250", "quantity": 10, "unit_price": "59.90"}]  # 599.00
SMALL = [{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}]


async def _status(db: Database, order_no: str) -> str:
    async with db.transaction(write=False) as session:
        return (await orders_service.get_order(session, order_no)).status


async def test_a_rule_fires_once_with_its_facts_and_holds_the_order(db: Database) -> None:
    # Given an enabled rule: orders over 500.00 are held for review and their buyer tagged
    await save_rule(
        db,
        "order.total_minor > 50000 && order.channel == 'wechat_mini'",
        [
            {"kind": "hold", "reason": "big order", "pool": "amount_confirm"},
            {"kind": "tag", "tag": "big"},
        ],
    )
    big = await make_order(db, lines=BIG)
    small = await make_order(db, lines=SMALL)
    # When the events are delivered
    await run(db)
    # Then only the big order fired, logged with the facts the condition named
    [hit] = await hits(db)
    assert (hit.subject, hit.order_id, hit.rule_version) == (big.order_no, big.id, 1)
    assert sorted(hit.facts) == ["order"]
    assert (hit.facts["order"]["total_minor"], hit.facts["order"]["channel"]) == (
        59900,
        "wechat_mini",
    )
    assert [o["kind"] for o in hit.outcomes] == ["hold", "tag"]
    assert hit.outcomes[1]["tagged"] is True
    # and a blocking case holds it (the small order has none)
    assert await cases(db) == [(big.id, "rule.amount_confirm", True)]
    async with db.transaction(write=False) as session:
        tags = (await session.scalars(select(CustomerTag.tag))).all()
    assert tags == ["big"]
    # When both are paid and the events delivered again (and once more: a replay)
    async with db.transaction() as session:
        for o in (big, small):
            await orders_service.transition(
                session, o.order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "t")
            )
    await run(db)
    await run(db)
    # Then the held order waits in paid while the other allocated, and nothing fired twice
    assert await _status(db, big.order_no) == "paid"
    assert await _status(db, small.order_no) == "allocated"
    assert len(await hits(db)) == 1
    assert len(await cases(db)) == 1


async def test_a_disabled_rule_never_fires(db: Database) -> None:
    await save_rule(db, "true", enabled=False)
    await make_order(db, lines=BIG)
    await run(db)
    assert await hits(db) == []
    assert await cases(db) == []


async def test_the_dry_run_matches_what_the_rule_then_does(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given orders whose events are not delivered yet: big, small, big with a discount
    placed: list[SalesOrder] = [
        await make_order(db, lines=BIG),
        await make_order(db, lines=SMALL),
        await make_order(db, lines=BIG, discount="100.00"),
        await make_order(db, lines=SMALL, channel="taobao", external_id="TB-9"),
    ]
    condition = (
        "order.total_minor > 40000 && order.discount_minor == 0 || order.channel == 'taobao'"
    )
    # When ops dry-run the draft over the last 7 days
    r = await client.post(
        "/api/v1/rules/dry-run",
        json={"trigger": "order.created", "condition": condition, "days": 7},
        headers=auth(keys["ops"]),
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    would = {s["subject"] for s in doc["sample"]}
    assert (doc["evaluated"], doc["matched"]) == (4, 2)
    assert would == {placed[0].order_no, placed[3].order_no}
    # and the dry run wrote nothing
    assert await hits(db) == [] and await cases(db) == []
    # When the same rule is switched on and the events are delivered
    r = await client.post(
        "/api/v1/rules",
        json={
            "code": "ops.big-or-taobao",
            "name": "大单或淘宝",
            "trigger": "order.created",
            "condition": condition,
            "actions": [{"kind": "flag", "flag": "look"}],
            "enabled": True,
        },
        headers=auth(keys["ops"]),
    )
    assert r.status_code == 201, r.text
    await run(db)
    # Then it fired on exactly the orders the dry run named
    assert {h.subject for h in await hits(db)} == would
    assert sorted(c for c in await cases(db)) == sorted(
        (o.id, "rule.look", False) for o in placed if o.order_no in would
    )


async def test_a_rule_sets_the_sub_status_the_buyer_sees(db: Database) -> None:
    # Given a rule that tells the buyers of big orders their parcel is being inspected
    await save_rule(
        db, "order.total_minor > 50000", [{"kind": "set_sub_status", "value": "海关查验中"}]
    )
    big = await make_order(db, lines=BIG)
    small = await make_order(db, lines=SMALL)
    # When the events are delivered (twice: a replay changes nothing)
    await run(db)
    await run(db)
    # Then only the big order carries the sub-status, set once in the rule's name
    async with db.transaction(write=False) as session:
        orders = {
            o.order_no: o.sub_status
            for o in await session.scalars(select(SalesOrder).order_by(SalesOrder.id))
        }
    assert orders == {big.order_no: "海关查验中", small.order_no: None}
    [hit] = await hits(db)
    assert hit.outcomes == [{"kind": "set_sub_status", "set": True, "value": "海关查验中"}]
