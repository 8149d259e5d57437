"""Order review (审单): "pass_all" (the default) changes nothing; the auto-review strategy passes
what it can at payment, holds the rest with reasons, passes time-only holds once time has
passed, and cs (then finance, when a rule asked) pass the others; each stage only by its roles."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

import ordertally.fulfillment.consumers
import ordertally.rules.consumers  # noqa: F401
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions.models import ExceptionCase
from ordertally.fulfillment import allocation
from ordertally.orders import review
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from ordertally.rules import service as rules_service
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
TEA = [{"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"}]
CUP = [{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}]


def _auto(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    monkeypatch.setenv("ORDERTALLY_ORDERS_REVIEW_STRATEGY", "auto")
    for name, value in settings.items():
        monkeypatch.setenv(f"ORDERTALLY_ORDERS_REVIEW_{name.upper()}", value)
    reset_settings()


async def _paid(db: Database, lines: list[dict[str, str]]) -> str:
    order = await make_order(db, lines=lines)
    await drain(db, get_settings())  # rules on order.created have run before the payment
    async with db.transaction() as session:
        await orders_service.transition(
            session, order.order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "t")
        )
    await drain(db, get_settings())
    return order.order_no


async def _status(db: Database, order_no: str) -> str:
    async with db.transaction(write=False) as session:
        return (await orders_service.get_order(session, order_no)).status


async def _sweep(db: Database) -> int:
    async with db.transaction() as session:
        return await allocation.allocate_waiting(session, 100)


async def _review_cases(db: Database) -> list[tuple[str, list[str]]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(ExceptionCase)
            .where(ExceptionCase.status == "open", ExceptionCase.category == "review")
            .order_by(ExceptionCase.id)
        )
        return [(c.type, c.detail["reasons"]) for c in rows]


async def test_pass_all_is_the_default_and_changes_nothing(db: Database) -> None:
    order_no = await _paid(db, TEA)
    assert await _status(db, order_no) == "allocated"
    assert await _review_cases(db) == []


async def test_auto_review_holds_with_reasons_and_passes_when_time_has_passed(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _auto(monkeypatch, min_paid_minutes="10", excluded_skus='["CUP-CER-01"]')
    with clock.frozen(T0):
        # Given two paid orders, one with an excluded SKU
        tea = await _paid(db, TEA)
        cup = await _paid(db, CUP)
        # Then both wait in review (paid too recently; the cup also excluded) and neither
        # allocated
        assert await _review_cases(db) == [
            ("order_review", ["paid_too_recently"]),
            ("order_review", ["paid_too_recently", "excluded_sku"]),
        ]
        assert (await _status(db, tea), await _status(db, cup)) == ("paid", "paid")
        # When 11 minutes pass and the recheck job runs
        clock.advance(timedelta(minutes=11))
        async with db.transaction() as session:
            assert await review.recheck(session) == 1
        # Then the tea order passes and allocates on the sweep; the cup order still waits
        assert await _sweep(db) == 1
        assert (await _status(db, tea), await _status(db, cup)) == ("allocated", "paid")
        # When cs read their queue (the warehouse may not)
        r = await client.get("/api/v1/review/queue", headers=auth(keys["warehouse"]))
        assert r.status_code == 403
        r = await client.get("/api/v1/review/queue?stage=cs", headers=auth(keys["cs"]))
        [item] = r.json()["items"]
        assert (item["order_no"], item["reasons"]) == (cup, ["paid_too_recently", "excluded_sku"])
        # and pass it
        r = await client.post(f"/api/v1/orders/{cup}/review/pass", headers=auth(keys["cs"]))
        assert r.json() == {"order_no": cup, "stage": "passed"}
        # Then it allocates on the sweep, and passing again is refused
        assert await _sweep(db) == 1
        assert await _status(db, cup) == "allocated"
        r = await client.post(f"/api/v1/orders/{cup}/review/pass", headers=auth(keys["cs"]))
        assert (r.status_code, r.json()["code"]) == (409, "conflict")


async def test_a_rule_sends_the_order_to_finance_after_cs(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _auto(monkeypatch)
    async with db.transaction() as session:
        await rules_service.create_rule(
            session,
            code="finance.big",
            name="大额订单财审",
            trigger="order.created",
            condition="order.total_minor > 5000",
            rule_actions=[{"kind": "hold", "pool": "finance_review", "reason": "big"}],
            enabled=True,
            by="tests",
        )
    # Given a paid order the rule holds for finance, and a small one it leaves alone
    big = await _paid(db, TEA)
    small = await _paid(db, CUP)
    assert await _status(db, small) == "allocated"
    assert await _review_cases(db) == [("order_review", ["rule_asks_review"])]
    # When finance tries first / Then refused: cs passes first
    r = await client.post(f"/api/v1/orders/{big}/review/pass", headers=auth(keys["finance"]))
    assert (r.status_code, r.json()["code"]) == (403, "auth.forbidden")
    r = await client.post(f"/api/v1/orders/{big}/review/pass", headers=auth(keys["cs"]))
    assert r.json()["stage"] == "finance"
    r = await client.get("/api/v1/review/queue?stage=finance", headers=auth(keys["finance"]))
    assert [i["order_no"] for i in r.json()["items"]] == [big]
    # When cs try the finance stage / Then refused; finance passes it
    r = await client.post(f"/api/v1/orders/{big}/review/pass", headers=auth(keys["cs"]))
    assert r.status_code == 403
    assert await _sweep(db) == 0
    r = await client.post(f"/api/v1/orders/{big}/review/pass", headers=auth(keys["finance"]))
    assert r.json()["stage"] == "passed"
    # Then nothing holds it any more and it allocates
    assert await _sweep(db) == 1
    assert await _status(db, big) == "allocated"


async def test_a_platform_order_that_arrives_paid_is_reviewed_too(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ordertally.orders.schemas import OrderCreate
    from tests.factories import order_body

    _auto(monkeypatch, excluded_skus='["TEA-LJ-250"]')
    # When channel sync creates an order the buyer already paid on the platform
    cmd = OrderCreate.model_validate(order_body(lines=TEA, channel="taobao", external_id="TB-77"))
    async with db.transaction() as session:
        snap, created = await orders_service.create_order(
            session,
            cmd,
            Actor(ActorKind.CHANNEL_SYNC, "t"),
            check_fingerprint=False,
            initial="import_paid",
        )
    await drain(db, get_settings())
    # Then it waits in review with its reason and does not allocate
    assert created and snap.order.status == "paid"
    assert await _review_cases(db) == [("order_review", ["excluded_sku"])]
    assert await _status(db, snap.order.order_no) == "paid"
