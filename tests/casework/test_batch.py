"""Batch actions over real HTTP and the real runner: preview (count and sample) changes
nothing, confirm queues, the run writes one audit row per order, a re-run and a second identical
batch change nothing, a cancelled batch stops, and each action's effect is exact."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.casework import batch as batch_service
from ordertally.casework.models import BatchAudit, Coupon, OrderTag
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.notify import service as notify_service
from ordertally.notify.sms_simulator import SmsSimServer
from ordertally.orders.models import OrderEvent, SalesOrder
from tests.factories import auth, make_order
from tests.notify.conftest import configure, sms_sim

pytestmark = pytest.mark.anyio
__all__ = ["sms_sim"]  # a fixture, imported to be used here


async def _count(db: Database, model: Any) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _batch(
    client: httpx.AsyncClient, key: str, action: str, filters: dict[str, Any], **params: Any
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/batches",
        json={"action": action, "target": "orders", "filters": filters, "params": params},
        headers=auth(key),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _run(db: Database, client: httpx.AsyncClient, key: str, batch_id: int) -> dict[str, Any]:
    r = await client.post(f"/api/v1/batches/{batch_id}/confirm", headers=auth(key))
    assert (r.status_code, r.json()["state"]) == (200, "queued"), r.text
    assert await batch_service.run(db, batch_id, chunk=2) == "done"
    return dict((await client.get(f"/api/v1/batches/{batch_id}", headers=auth(key))).json())


async def test_tag_and_sub_status_batches_are_idempotent(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given three paid douyin orders and one wechat order
    delayed = [await make_order(db, "paid", channel="douyin") for _ in range(3)]
    await make_order(db, "paid")
    key = keys["ops"]
    # When ops previews a tag over the douyin orders
    preview = await _batch(client, key, "tag", {"channel": "douyin"}, tag="customs")
    # (sent twice with one Idempotency-Key: the second is the first's answer, replayed)
    replayed = await client.post(
        "/api/v1/batches",
        json={
            "action": "tag",
            "target": "orders",
            "filters": {"channel": "douyin"},
            "params": {"tag": "customs"},
        },
        headers=auth(key, **{"Idempotency-Key": "tag-customs"}),
    )
    again_key = await client.post(
        "/api/v1/batches",
        json={
            "action": "tag",
            "target": "orders",
            "filters": {"channel": "douyin"},
            "params": {"tag": "customs"},
        },
        headers=auth(key, **{"Idempotency-Key": "tag-customs"}),
    )
    assert (again_key.headers["idempotent-replayed"], again_key.json()) == ("true", replayed.json())
    # Then it shows the count and sample and changes nothing yet
    assert (preview["total"], sorted(preview["sample"])) == (
        3,
        sorted(o.order_no for o in delayed),
    )
    assert await _count(db, OrderTag) == 0
    # When it is confirmed and run (in chunks of two), then run again
    done = await _run(db, client, key, preview["id"])
    assert (done["state"], done["processed"], done["changed"]) == ("done", 3, 3)
    assert done["audit"] == {"changed": 3}
    assert await batch_service.run(db, preview["id"]) == "done"
    # And a second identical batch changes nothing (every order audited as unchanged)
    again = await _batch(client, key, "tag", {"channel": "douyin"}, tag="customs")
    second = await _run(db, client, key, again["id"])
    assert (second["changed"], second["audit"]) == (0, {"unchanged": 3})
    assert await _count(db, OrderTag) == 3
    # When the tagged orders get a buyer-visible sub-status, twice
    for expected in (3, 0):
        sub = await _batch(client, key, "sub_status", {"tag": "customs"}, sub_status="海关查验中")
        assert (await _run(db, client, key, sub["id"]))["changed"] == expected
    # Then the orders show it, each with exactly one audit row of the change
    shown = await client.get(f"/api/v1/orders/{delayed[0].order_no}", headers=auth(key))
    assert shown.json()["sub_status"] == "海关查验中"
    page = await client.get("/t/" + shown.json()["tracking_url"].rpartition("/t/")[2])
    assert page.status_code == 200
    assert '<span class="badge">海关查验中</span>' in page.text
    async with db.transaction(write=False) as session:
        events = await session.scalar(
            select(func.count()).where(OrderEvent.event == "set_sub_status")
        )
        versions = (await session.scalars(select(SalesOrder.version))).all()
    assert events == 3
    assert sorted(versions) == [2, 3, 3, 3]
    assert await _count(db, BatchAudit) == 12


async def test_coupon_hold_and_release_batches(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given two paid orders of SKU A
    orders = [
        await make_order(db, "paid", lines=[{"sku": "A", "quantity": 1, "unit_price": "9.90"}])
        for _ in range(2)
    ]
    key = keys["cs"]
    # When cs records a 5 yuan coupon for them, twice over
    for expected in (2, 0):
        b = await _batch(
            client, key, "coupon", {"sku": "A"}, campaign="delay-1204", amount_minor=500
        )
        assert (await _run(db, client, key, b["id"]))["changed"] == expected
    # Then each order has exactly one coupon with its own code
    async with db.transaction(write=False) as session:
        coupons = (await session.scalars(select(Coupon))).all()
    assert sorted((c.order_id, c.amount_minor, c.currency) for c in coupons) == sorted(
        (o.id, 500, "CNY") for o in orders
    )
    assert len({c.code for c in coupons}) == 2
    # When they are held, then released
    held = await _batch(client, key, "hold", {"sku": "A"}, note="等待海关")
    assert (await _run(db, client, key, held["id"]))["changed"] == 2
    async with db.transaction(write=False) as session:
        assert [await exceptions_service.has_hold(session, o.id) for o in orders] == [True, True]
    cases = (await client.get("/api/v1/cases?type=manual_hold", headers=auth(key))).json()
    assert [c["state"] for c in cases["items"]] == ["open", "open"]
    released = await _batch(client, key, "release", {"case_type": "manual_hold"})
    assert released["total"] == 2
    assert (await _run(db, client, key, released["id"]))["changed"] == 2
    async with db.transaction(write=False) as session:
        assert [await exceptions_service.has_hold(session, o.id) for o in orders] == [False, False]
    cases = (await client.get("/api/v1/cases?type=manual_hold", headers=auth(key))).json()
    assert [(c["state"], c["resolution_code"]) for c in cases["items"]] == [
        ("resolved", "released"),
        ("resolved", "released"),
    ]


async def test_a_cancelled_batch_changes_nothing_more_and_bad_batches_are_refused(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a confirmed batch over two orders, cancelled before the worker picks it up
    await make_order(db, "paid")
    await make_order(db, "paid")
    key = keys["ops"]
    b = await _batch(client, key, "tag", {"status": "paid"}, tag="late")
    await client.post(f"/api/v1/batches/{b['id']}/confirm", headers=auth(key))
    r = await client.post(f"/api/v1/batches/{b['id']}/cancel", headers=auth(key))
    assert r.json()["state"] == "cancelled"
    # When the runner reaches it, nothing is done
    assert await batch_service.run(db, b["id"]) == "cancelled"
    assert (await _count(db, OrderTag), await _count(db, BatchAudit)) == (0, 0)
    again = await client.post(f"/api/v1/batches/{b['id']}/confirm", headers=auth(key))
    assert (again.status_code, again.json()["code"]) == (409, "casework.batch_not_confirmable")
    # And a batch missing its parameters, or filtering on an unknown field, is refused
    for body in (
        {"action": "coupon", "target": "orders", "params": {"campaign": "x"}},
        {"action": "tag", "target": "orders", "filters": {"colour": "red"}, "params": {"tag": "t"}},
    ):
        bad = await client.post("/api/v1/batches", json=body, headers=auth(key))
        assert bad.status_code == 422
    refused = await client.post(
        "/api/v1/batches",
        json={"action": "tag", "target": "orders", "params": {"tag": "t"}},
        headers=auth(keys["warehouse"]),
    )
    assert refused.status_code == 403


async def test_a_message_batch_texts_each_buyer_once_through_the_sms_gateway(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    sms_sim: SmsSimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the Aliyun SMS simulator with a delay-notice template
    configure(
        monkeypatch,
        sms_url=sms_sim.url,
        aliyun_sms_template_codes=json.dumps({"BuyerDelayNotice": "SMS_200001"}),
    )
    orders = [await make_order(db, "paid", channel="douyin") for _ in range(2)]
    key = keys["ops"]
    # When ops messages the douyin buyers about a 3-day delay, twice with the same campaign
    for expected in (2, 0):
        b = await _batch(
            client, key, "message", {"channel": "douyin"}, campaign="delay-1204", delay_days=3
        )
        assert (await _run(db, client, key, b["id"]))["changed"] == expected
    result = await notify_service.send_due(db)
    # Then each buyer got exactly one text with the order and the delay
    assert (result.claimed, result.sent) == (2, 2)
    assert sorted(
        (m.phone_numbers, m.template_code, m.template_param["order_no"])
        for m in sms_sim.sim.messages
    ) == sorted(("13812345678", "SMS_200001", o.order_no) for o in orders)
    assert {m.template_param["delay_days"] for m in sms_sim.sim.messages} == {"3"}
