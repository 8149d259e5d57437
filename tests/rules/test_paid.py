"""Rules on `order.paid` run in the payment transition's transaction: a paid order a rule holds
is never allocated until the hold is released, one it does not match allocates as before, and
the consumer does not fire the rule a second time."""

import pytest

from ordertally.core.db import Database
from ordertally.fulfillment import service as fulfillment_service
from ordertally.orders import holds
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import make_order
from tests.rules.helpers import cases, hits, run, save_rule

pytestmark = pytest.mark.anyio

BIG = [{"sku": "TEA-LJ-250", "quantity": 10, "unit_price": "59.90"}]  # 599.00
SMALL = [{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}]
PAYMENT = Actor(ActorKind.PAYMENT_CALLBACK, "tests")


async def _statuses(db: Database, *order_nos: str) -> list[str]:
    async with db.transaction(write=False) as session:
        return [(await orders_service.get_order(session, n)).status for n in order_nos]


async def _sweep(db: Database) -> int:
    async with db.transaction() as session:
        return await fulfillment_service.allocate_waiting(session, 100)


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
async def test_a_paid_rule_holds_the_order_before_allocation(db: Database, batched: bool) -> None:
    # Given a rule on order.paid that holds orders over 500.00 for review
    await save_rule(
        db,
        "order.total_minor > 50000 && order.status == 'paid'",
        [{"kind": "hold", "pool": "high_value", "reason": "big paid order"}],
        trigger="order.paid",
    )
    big = await make_order(db, lines=BIG)
    small = await make_order(db, lines=SMALL)
    await run(db)  # the creation events: nothing fires on order.created
    assert await hits(db) == []
    # When both are paid in one transaction (one by one, or as the payment apply batches them)
    async with db.transaction() as session:
        if batched:
            moved = await orders_service.transition_many(
                session,
                [big.id, small.id],
                "payment_succeeded",
                {big.id: PAYMENT, small.id: PAYMENT},
            )
            assert moved == {big.id, small.id}
        else:
            for o in (big, small):
                await orders_service.transition(session, o.order_no, "payment_succeeded", PAYMENT)
    # Then the hold is open as soon as the payment commits, before any consumer ran
    assert await cases(db) == [(big.id, "rule.high_value", True)]
    [hit] = await hits(db)
    assert (hit.subject, hit.order_id, hit.dedupe_key) == (big.order_no, big.id, f"paid:{big.id}")
    assert (hit.facts["order"]["status"], hit.facts["order"]["total_minor"]) == ("paid", 59900)
    # When the events are delivered (twice: a replay) and the allocation sweep runs
    await run(db)
    await run(db)
    assert await _sweep(db) == 0
    # Then the held order waits in paid, the other allocated, and the rule fired once
    assert await _statuses(db, big.order_no, small.order_no) == ["paid", "allocated"]
    assert len(await hits(db)) == 1
    # When customer service releases the hold, the sweep allocates it
    async with db.transaction() as session:
        await holds.resolve_case(session, (await _case_id(db, big.id)), "cs-1", "checked")
    assert await _sweep(db) == 1
    assert await _statuses(db, big.order_no) == ["allocated"]
    assert len(await hits(db)) == 1


async def _case_id(db: Database, order_id: int) -> int:
    from sqlalchemy import select

    from ordertally.exceptions.models import ExceptionCase

    async with db.transaction(write=False) as session:
        found = await session.scalar(
            select(ExceptionCase.id).where(
                ExceptionCase.order_id == order_id, ExceptionCase.status == "open"
            )
        )
    assert found is not None
    return int(found)


async def test_a_disabled_paid_rule_lets_every_order_allocate(db: Database) -> None:
    # Given the same rule, disabled
    await save_rule(db, "order.total_minor > 50000", trigger="order.paid", enabled=False)
    big = await make_order(db, lines=BIG)
    # When it is paid and the events are delivered
    async with db.transaction() as session:
        await orders_service.transition(session, big.order_no, "payment_succeeded", PAYMENT)
    await run(db)
    # Then it allocated, with no firing and no case
    assert await _statuses(db, big.order_no) == ["allocated"]
    assert await hits(db) == [] and await cases(db) == []


@pytest.mark.parametrize("path", ["one", "ingest"])
async def test_a_paid_rule_holds_an_order_created_paid(db: Database, path: str) -> None:
    """A platform order arrives already paid (channel sync imports it paid): no payment ever
    moves it to paid, so the `order.paid` rules run in the transaction that creates it."""
    import dataclasses

    from ordertally.orders import creation
    from ordertally.orders.schemas import OrderCreate
    from ordertally.orders.state_machine import Event
    from tests.factories import order_body

    # Given a rule on order.paid that holds orders over 500.00 for review
    await save_rule(
        db,
        "order.total_minor > 50000 && order.status == 'paid'",
        [{"kind": "hold", "pool": "high_value", "reason": "big paid order"}],
        trigger="order.paid",
    )
    sync = Actor(ActorKind.CHANNEL_SYNC, "channel:shop")
    big, small = (
        OrderCreate.model_validate(order_body(lines=lines, channel="taobao", external_id=ext))
        for lines, ext in ((BIG, "TB-BIG"), (SMALL, "TB-SMALL"))
    )
    # When channel sync creates both, paid (one by one, or as the ingest batches them)
    async with db.transaction() as session:
        if path == "one":
            made = [
                (
                    await orders_service.create_order(
                        session, cmd, sync, check_fingerprint=False, initial="import_paid"
                    )
                )[0].order
                for cmd in (big, small)
            ]
            big_no, small_no = (o.order_no for o in made)
            big_id = made[0].id
        else:
            specs = [
                dataclasses.replace(
                    creation.spec_of(cmd, sync, check_fingerprint=False, initial=Event.IMPORT_PAID),
                    hold_on_shortage=True,
                )
                for cmd in (big, small)
            ]
            outcomes = (await creation.create_many(session, specs, defer_unusual=False)).outcomes
            assert all(isinstance(o, creation.Created) for o in outcomes)
            big_id = outcomes[0].order_id  # type: ignore[union-attr]
            big_no, small_no = (o.values["order_no"] for o in outcomes)  # type: ignore[union-attr]
    # Then the hold is open as the creation commits, and the rule saw a paid order
    assert await cases(db) == [(big_id, "rule.high_value", True)]
    [hit] = await hits(db)
    assert (hit.order_id, hit.dedupe_key) == (big_id, f"paid:{big_id}")
    assert (hit.facts["order"]["status"], hit.facts["order"]["total_minor"]) == ("paid", 59900)
    # When the events are delivered (twice: a replay) and the allocation sweep runs
    await run(db)
    await run(db)
    await _sweep(db)
    # Then the held order waits in paid, the other allocated, and the rule fired once
    assert await _statuses(db, big_no, small_no) == ["paid", "allocated"]
    assert len(await hits(db)) == 1
    assert await _sweep(db) == 0
