"""Issue 14: API keys can be scoped to channel accounts, like the warehouse scope. A key made
with `ordertally apikey create --channel shop_a` (a real process) sees and acts on shop_a only:
accounts, status, sync, SKU mappings, held-order replay and order contacts of other accounts
are refused (403, nothing changes); an unscoped key is unaffected. The order list, search and
exports hold its channels' orders only; another channel's order, its trail and its cancel are
403 `order.out_of_scope` (403 like the contact route: ADR 0026 addendum)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.auth import service as auth_service
from ordertally.channels.models import ChannelSkuMapping
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions import service as exceptions_service
from ordertally.exports import service as export_service
from ordertally.inventory.models import StockMovement
from tests.aftersales.helpers import case_status, open_case, walk
from tests.factories import auth, make_order
from tests.search.helpers import index

pytestmark = pytest.mark.anyio

ACCOUNTS = "/api/v1/channels/accounts"
MAPPINGS = "/api/v1/channels/sku-mappings"


def _create_key(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", "apikey", "create", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


async def _mappings(db: Database) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(ChannelSkuMapping)) or 0)


async def test_a_channel_scoped_key_acts_on_its_accounts_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    for code in ("shop_a", "shop_b"):
        created = await client.post(
            ACCOUNTS, json={"code": code, "platform": "pinduoduo", "name": code}, headers=admin
        )
        assert created.status_code == 201, created.text
    # Given an ops key scoped to shop_a, made by the CLI
    made = _create_key("--name", "shop-a-ops", "--role", "ops", "--channel", "shop_a")
    assert made.returncode == 0, made.stderr
    scoped = auth(made.stdout.strip().splitlines()[-1])
    # When it lists accounts, it sees its own only
    listed = await client.get(ACCOUNTS, headers=scoped)
    assert [a["code"] for a in listed.json()["items"]] == ["shop_a"]
    # And reads and changes of the other account are refused
    refused = [
        await client.get(f"{ACCOUNTS}/shop_b", headers=scoped),
        await client.get(f"{ACCOUNTS}/shop_b/status", headers=scoped),
        await client.patch(f"{ACCOUNTS}/shop_b", json={"name": "taken"}, headers=scoped),
        await client.post("/api/v1/channels/shop_b/sync", headers=scoped),
        await client.post(
            ACCOUNTS, json={"code": "shop_c", "platform": "pinduoduo", "name": "c"}, headers=scoped
        ),
        await client.post(
            MAPPINGS,
            json={
                "platform": "pinduoduo",
                "account_code": "shop_b",
                "platform_sku": "P-1",
                "sku": "TEA-LJ-250",
            },
            headers=scoped,
        ),
        # a platform-wide mapping (no account) belongs to no scope
        await client.post(
            MAPPINGS,
            json={"platform": "pinduoduo", "platform_sku": "P-1", "sku": "TEA-LJ-250"},
            headers=scoped,
        ),
        await client.post("/api/v1/channels/held-orders/replay", headers=scoped),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert {r.json()["code"] for r in refused} == {"auth.forbidden"}
    assert (await client.get(f"{ACCOUNTS}/shop_b", headers=admin)).json()["name"] == "shop_b"
    assert await _mappings(db) == 0
    # And its own account works as for an unscoped key
    assert (await client.get(f"{ACCOUNTS}/shop_a", headers=scoped)).status_code == 200
    own = await client.post(
        MAPPINGS,
        json={
            "platform": "pinduoduo",
            "account_code": "shop_a",
            "platform_sku": "P-1",
            "sku": "TEA-LJ-250",
        },
        headers=scoped,
    )
    assert own.status_code == 201, own.text
    other = await client.post(
        MAPPINGS,
        json={
            "platform": "pinduoduo",
            "account_code": "shop_b",
            "platform_sku": "P-2",
            "sku": "TEA-LJ-250",
        },
        headers=admin,
    )
    assert other.status_code == 201
    seen = await client.get(MAPPINGS, headers=scoped)
    assert [m["account_code"] for m in seen.json()["items"]] == ["shop_a"]
    assert (await client.get(f"{MAPPINGS}/{other.json()['id']}", headers=scoped)).status_code == 403
    assert (
        await client.delete(f"{MAPPINGS}/{other.json()['id']}", headers=scoped)
    ).status_code == 403
    assert await _mappings(db) == 2


async def test_a_channel_scoped_key_sees_contacts_of_its_channels_only(
    db: Database, client: httpx.AsyncClient
) -> None:
    # Given orders from two channels and a cs key scoped to shop_a
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    made = _create_key("--name", "shop-a-cs", "--role", "cs", "--channel", "shop_a")
    assert made.returncode == 0, made.stderr
    scoped = auth(made.stdout.strip().splitlines()[-1])

    def contact(order_no: str):  # type: ignore[no-untyped-def]
        return client.get(
            f"/api/v1/orders/{order_no}/contact", params={"reason": "buyer call"}, headers=scoped
        )

    # When it asks for both contacts, then only its channel's order is shown
    assert (await contact(mine.order_no)).status_code == 200
    refused = await contact(theirs.order_no)
    assert (refused.status_code, refused.json()["code"]) == (403, "order.contact_not_allowed")


async def _scoped(db: Database, role: str, *channels: str, warehouses: list[str] | None = None):  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        _, raw = await auth_service.create_api_key(
            session, f"{role}-{'-'.join(channels) or 'wh'}", role, warehouses, list(channels)
        )
    return auth(raw)


async def test_a_channel_scoped_key_lists_reads_and_finds_its_channels_orders_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order of each of two channels (indexed for search) and a cs key scoped to shop_a
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    await index(db)
    scoped = await _scoped(db, "cs", "shop_a")
    # When it lists, reads, and searches orders, and asks for the other order's trail and cancel
    listed = await client.get("/api/v1/orders", headers=scoped)
    asked_other = await client.get("/api/v1/orders", params={"channel": "shop_b"}, headers=scoped)
    own = await client.get(f"/api/v1/orders/{mine.order_no}", headers=scoped)
    refused = [
        await client.get(f"/api/v1/orders/{theirs.order_no}", headers=scoped),
        await client.get(f"/api/v1/orders/{theirs.order_no}/events", headers=scoped),
        await client.post(f"/api/v1/orders/{theirs.order_no}/cancel", headers=scoped),
    ]
    found_other = await client.get("/api/v1/search", params={"q": theirs.order_no}, headers=scoped)
    found_all = await client.get("/api/v1/search", headers=scoped)
    unscoped = await client.get("/api/v1/orders", headers=auth(keys["cs"]))
    # Then it sees its own channel's order only, everywhere
    assert [o["order_no"] for o in listed.json()["items"]] == [mine.order_no]
    assert asked_other.json()["items"] == []
    assert own.status_code == 200 and own.json()["channel"] == "shop_a"
    assert [o["order_no"] for o in found_all.json()["items"]] == [mine.order_no]
    assert found_other.json()["items"] == []
    assert len(unscoped.json()["items"]) == 2
    # And the other channel's order is refused like its contact (403), and stays open
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "order.out_of_scope")] * 3
    detail = await client.get(f"/api/v1/orders/{theirs.order_no}", headers=auth(keys["cs"]))
    assert detail.json()["status"] == "pending_payment"


async def test_a_channel_scoped_key_exports_its_channels_rows_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order of each channel, an admin's export of everything, and a key scoped to shop_a
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    scoped = await _scoped(db, "ops", "shop_a")
    admin = auth(keys["admin"])
    everything = await client.post("/api/v1/exports", json={"template": "orders"}, headers=admin)
    assert everything.status_code == 202, everything.text
    # When the scoped key asks for an export with no channel, the other channel, and a template
    # that cannot be limited to a channel
    own = await client.post("/api/v1/exports", json={"template": "orders"}, headers=scoped)
    other = await client.post(
        "/api/v1/exports",
        json={"template": "orders", "filters": {"channel": "shop_b"}},
        headers=scoped,
    )
    unlimited = await client.post(
        "/api/v1/exports", json={"template": "reconciliations"}, headers=scoped
    )
    assert await export_service.run_queued(db) == 2
    # Then its own export is limited to shop_a and holds only shop_a's order
    assert own.status_code == 202, own.text
    assert own.json()["filters"] == {"channel": "shop_a"}
    file = await client.get(f"/api/v1/exports/{own.json()['export_no']}/file", headers=scoped)
    assert file.status_code == 200
    assert mine.order_no.encode() in file.content and theirs.order_no.encode() not in file.content
    # And the other requests are refused and queue nothing
    assert [(r.status_code, r.json()["code"]) for r in (other, unlimited)] == [
        (403, "exports.out_of_scope")
    ] * 2
    # And the admin's export of every channel is neither listed nor readable for it
    listed = await client.get("/api/v1/exports", headers=scoped)
    assert [e["export_no"] for e in listed.json()["items"]] == [own.json()["export_no"]]
    number = everything.json()["export_no"]
    for path in ("", "/manifest", "/file"):
        r = await client.get(f"/api/v1/exports/{number}{path}", headers=scoped)
        assert (r.status_code, r.json()["code"]) == (403, "exports.out_of_scope")
    assert len((await client.get("/api/v1/exports", headers=admin)).json()["items"]) == 2


async def test_a_warehouse_scoped_key_moves_and_exports_no_other_warehouses_data(
    db: Database, client: httpx.AsyncClient
) -> None:
    # Given an ops key scoped to WH-TEST
    scoped = await _scoped(db, "ops", warehouses=["WH-TEST"])
    async with db.transaction(write=False) as session:
        before = int(await session.scalar(select(func.count()).select_from(StockMovement)) or 0)
    # When it books stock into another warehouse, and asks for an export with contacts in clear
    other = await client.post(
        "/api/v1/stock/movements",
        json={
            "warehouse": "WH-B",
            "sku": "TEA-LJ-250",
            "kind": "receipt",
            "quantity": 3,
            "reason": "in",
        },
        headers=scoped,
    )
    pii = await client.post(
        "/api/v1/exports",
        json={"template": "orders", "unmask_pii": True, "pii_reason": "audit"},
        headers=scoped,
    )
    own = await client.post(
        "/api/v1/stock/movements",
        json={
            "warehouse": "WH-TEST",
            "sku": "TEA-LJ-250",
            "kind": "receipt",
            "quantity": 3,
            "reason": "in",
        },
        headers=scoped,
    )
    # Then the other warehouse and the clear export are refused, its own receipt is booked
    assert (other.status_code, other.json()["code"]) == (403, "auth.forbidden")
    assert (pii.status_code, pii.json()["code"]) == (403, "exports.pii_not_allowed")
    assert own.status_code == 201, own.text
    async with db.transaction(write=False) as session:
        after = int(await session.scalar(select(func.count()).select_from(StockMovement)) or 0)
    assert after == before + 1


async def test_a_channel_scoped_key_works_its_channels_after_sales_and_parcels_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a delivered order of each channel, a refund-only case on each, and a cs key
    # scoped to shop_a
    cases = {}
    orders = {}
    for channel in ("shop_a", "shop_b"):
        order = await make_order(db, "paid", channel=channel)
        await walk(db, order.order_no, "delivered")
        orders[channel] = order.order_no
        cases[channel] = await open_case(
            db,
            order_no=order.order_no,
            type="refund_only",
            reason_code="quality",
            refund_goods="1.00",
        )
    scoped = await _scoped(db, "cs", "shop_a")
    # When it lists cases, reads both, approves the other's, and opens one on the other order
    listed = await client.get("/api/v1/aftersales", headers=scoped)
    own = await client.get(f"/api/v1/aftersales/{cases['shop_a']}", headers=scoped)
    other = await client.get(f"/api/v1/aftersales/{cases['shop_b']}", headers=scoped)
    approve_other = await client.post(
        f"/api/v1/aftersales/{cases['shop_b']}/approve", json={}, headers=scoped
    )
    open_other = await client.post(
        "/api/v1/aftersales",
        json={
            "order_no": orders["shop_b"],
            "type": "refund_only",
            "reason_code": "quality",
            "refund_goods": "1.00",
        },
        headers=scoped,
    )
    parcels_other = await client.get(
        "/api/v1/shipments", params={"order_no": orders["shop_b"]}, headers=scoped
    )
    parcels_own = await client.get(
        "/api/v1/shipments", params={"order_no": orders["shop_a"]}, headers=scoped
    )
    # Then it sees and works its own channel's only; the other case stays requested
    assert [c["case_no"] for c in listed.json()["items"]] == [cases["shop_a"]]
    assert own.status_code == 200 and parcels_own.status_code == 200
    assert [(r.status_code, r.json()["code"]) for r in (other, approve_other)] == [
        (403, "auth.forbidden")
    ] * 2
    assert (open_other.status_code, open_other.json()["code"]) == (403, "order.out_of_scope")
    assert (parcels_other.status_code, parcels_other.json()["code"]) == (
        403,
        "order.out_of_scope",
    )
    everyone = await client.get("/api/v1/aftersales", headers=auth(keys["cs"]))
    assert len(everyone.json()["items"]) == 2
    assert await case_status(db, cases["shop_b"]) == "requested"


async def test_a_channel_scoped_key_works_its_channels_exception_cases_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an open case on an order of each channel, and an ops key scoped to shop_a
    case_ids = {}
    for channel in ("shop_a", "shop_b"):
        order = await make_order(db, "paid", channel=channel)
        async with db.transaction() as session:
            case_ids[channel] = await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="payment",
                type="double_payment",
                blocking=False,
                detail={},
            )
    scoped = await _scoped(db, "ops", "shop_a")
    other = case_ids["shop_b"]
    # When it lists cases, reads and works the other channel's, and runs a batch
    listed = await client.get("/api/v1/cases", headers=scoped)
    refused = [
        await client.get(f"/api/v1/cases/{other}", headers=scoped),
        await client.post(
            f"/api/v1/cases/{other}/resolve",
            json={"code": "refunded", "resolution": "退回重复款"},
            headers=scoped,
        ),
        await client.post(f"/api/v1/cases/{other}/assign", json={"assignee": "x"}, headers=scoped),
        await client.post(
            "/api/v1/batches",
            json={"action": "tag", "target": "orders", "filters": {}, "params": {"tag": "t"}},
            headers=scoped,
        ),
    ]
    lift = await client.post(
        f"/api/v1/exceptions/{other}/resolve", json={"resolution": "done"}, headers=scoped
    )
    own = await client.get(f"/api/v1/cases/{case_ids['shop_a']}", headers=scoped)
    # Then it sees and works its own channel's case only; the other stays open
    assert [c["id"] for c in listed.json()["items"]] == [case_ids["shop_a"]]
    # (and its counts are its accounts' cases', not the whole workbench's)
    assert sum(listed.json()["facets"]["state"].values()) == 1
    assert own.status_code == 200
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "auth.forbidden")] * 4
    assert (lift.status_code, lift.json()["code"]) == (403, "order.out_of_scope")
    after = await client.get(f"/api/v1/cases/{other}", headers=auth(keys["ops"]))
    assert after.json()["state"] not in ("resolved", "closed")
    assert after.json()["assignee"] in (None, "")


async def test_a_channel_scoped_key_sees_a_customers_orders_of_its_channels_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given one buyer (same phone) with an order on each channel, profiled by the worker
    mine = await make_order(db, "paid", channel="shop_a")
    theirs = await make_order(db, "paid", channel="shop_b")
    await drain(db, get_settings())
    scoped = await _scoped(db, "cs", "shop_a")
    found = await client.get(
        "/api/v1/customers", params={"phone": "13812345678"}, headers=auth(keys["cs"])
    )
    assert len(found.json()["items"]) == 1, found.text
    customer_id = found.json()["items"][0]["id"]
    # When the scoped key and an unscoped one read the customer
    seen = await client.get(f"/api/v1/customers/{customer_id}", headers=scoped)
    everyone = await client.get(f"/api/v1/customers/{customer_id}", headers=auth(keys["cs"]))
    # Then the scoped key sees the buyer's orders of its channel only
    assert [o["order_no"] for o in seen.json()["orders"]] == [mine.order_no]
    assert sorted(o["order_no"] for o in everyone.json()["orders"]) == sorted(
        [mine.order_no, theirs.order_no]
    )
    # And no profile: its figures add up the other account's orders too
    assert everyone.json()["profile"]["orders_90d"] == 2
    assert seen.json()["profile"] is None
    # Given a second buyer who ordered on the other channel only (and is tagged)
    other = await make_order(
        db, "paid", channel="shop_b", customer={"name": "李四", "phone": "13900001111"}
    )
    await drain(db, get_settings())
    unscoped_find = await client.get(
        "/api/v1/customers", params={"phone": "13900001111"}, headers=auth(keys["cs"])
    )
    other_id = unscoped_find.json()["items"][0]["id"]
    assert other.order_no in {
        o["order_no"]
        for o in (
            await client.get(f"/api/v1/customers/{other_id}", headers=auth(keys["cs"]))
        ).json()["orders"]
    }
    tagged = await client.post(
        f"/api/v1/customers/{other_id}/tags", json={"tag": "vip"}, headers=auth(keys["ops"])
    )
    assert tagged.status_code == 201, tagged.text
    scoped_ops = await _scoped(db, "ops", "shop_a")
    # When the scoped keys look that buyer up, read them and tag them
    by_phone = await client.get(
        "/api/v1/customers", params={"phone": "13900001111"}, headers=scoped
    )
    by_tag = await client.get("/api/v1/customers", params={"tag": "vip"}, headers=scoped)
    read = await client.get(f"/api/v1/customers/{other_id}", headers=scoped)
    tag = await client.post(
        f"/api/v1/customers/{other_id}/tags", json={"tag": "x"}, headers=scoped_ops
    )
    untag = await client.delete(f"/api/v1/customers/{other_id}/tags/vip", headers=scoped_ops)
    # Then the buyer does not exist for them, and their tags are unchanged
    assert by_phone.json()["items"] == [] and by_tag.json()["items"] == []
    assert [(r.status_code, r.json()["code"]) for r in (read, tag, untag)] == [
        (403, "customer.out_of_scope")
    ] * 3
    after = await client.get(f"/api/v1/customers/{other_id}", headers=auth(keys["cs"]))
    assert after.json()["tags"] == ["vip"]


async def test_a_channel_scoped_key_sees_and_decides_its_channels_payments_only(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order of each of two channels, each with a 补单 request by an unscoped finance
    # user, and a finance key scoped to shop_a
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    evidence = {
        "reference": "ICBC-20261205-0001",
        "amount": "159.70",
        "paid_at": (clock.now() - timedelta(hours=2)).isoformat(),
        "reason": "buyer paid by bank transfer",
    }
    requested = {}
    for order in (mine, theirs):
        r = await client.post(
            f"/api/v1/orders/{order.order_no}/manual-payment",
            json=evidence,
            headers=auth(keys["finance"]),
        )
        assert r.status_code == 201, r.text
        requested[order.channel] = r.json()["id"]
    scoped = await _scoped(db, "finance", "shop_a")
    # When it reads both orders' payments, asks for 补单 on the other, lists and decides 补单,
    # opens a payment on the other order and uploads a trade bill
    own = await client.get(f"/api/v1/orders/{mine.order_no}/payments", headers=scoped)
    listed = await client.get("/api/v1/manual-payments", headers=scoped)
    refused = [
        await client.get(f"/api/v1/orders/{theirs.order_no}/payments", headers=scoped),
        await client.post(
            f"/api/v1/orders/{theirs.order_no}/manual-payment", json=evidence, headers=scoped
        ),
        await client.post(
            f"/api/v1/orders/{theirs.order_no}/payments",
            json={"provider": "wechatpay"},
            headers=await _scoped(db, "ops", "shop_a"),
        ),
        await client.post(
            f"/api/v1/manual-payments/{requested['shop_b']}/reject",
            json={"note": "not ours"},
            headers=scoped,
        ),
        await client.post(f"/api/v1/manual-payments/{requested['shop_b']}/approve", headers=scoped),
    ]
    bill = await client.post(
        "/api/v1/payments/reconciliations",
        params={"provider": "wechatpay"},
        content=b"",
        headers=scoped,
    )
    # Then it sees its own channel's only, and the other order's payments are refused (403)
    assert own.status_code == 200 and own.json()["order_no"] == mine.order_no
    assert [m["id"] for m in listed.json()] == [requested["shop_a"]]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "order.out_of_scope")] * 5
    assert bill.status_code == 403
    # And nothing changed: one request per order, the other still pending
    every = await client.get(
        "/api/v1/manual-payments", params={"state": "all"}, headers=auth(keys["finance"])
    )
    assert sorted((m["order_no"], m["state"]) for m in every.json()) == sorted(
        [(mine.order_no, "pending_approval"), (theirs.order_no, "pending_approval")]
    )
