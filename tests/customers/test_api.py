"""The customers API: a profile with masked identities, lookup by phone and tag, tags, and
problem errors that change nothing."""

import httpx
import pytest

from ordertally.core.db import Database
from tests.customers.helpers import customer_of, ingested, order, run
from tests.factories import auth

pytestmark = pytest.mark.anyio


async def test_a_customer_reads_masked_with_profile_and_orders(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a buyer with a paid Taobao order (buyer id known) and a mini-program order
    a = await order(db, "13812345678", channel="taobao", external_id="TB-1")
    await ingested(db, a, "taobao", "tb_buyer_77", ["茶叶"])
    await order(db, "13812345678", channel="wechat_mini", status="shipped")
    await run(db)
    cid = await customer_of(db, a.order_no)
    # When customer service reads the customer
    r = await client.get(f"/api/v1/customers/{cid}", headers=auth(keys["cs"]))
    # Then every identity is masked and the figures are there
    assert r.status_code == 200
    doc = r.json()
    assert (doc["id"], doc["merged_from"], doc["name"], doc["phone"]) == (
        cid,
        None,
        "王**",
        "138****5678",
    )
    assert doc["identities"] == [
        {"kind": "phone_bidx", "platform": None, "masked": "138****5678"},
        {"kind": "platform_buyer", "platform": "taobao", "masked": "taobao:tb*******77"},
    ]
    assert "13812345678" not in r.text and "tb_buyer_77" not in r.text
    p = doc["profile"]
    assert (p["orders_90d"], p["spend_90d"], p["average_order_value_90d"], p["currency"]) == (
        2,
        "319.40",
        "159.70",
        "CNY",
    )
    assert (p["channels"], p["favourite_categories"]) == (["taobao", "wechat_mini"], ["茶叶"])
    assert len(doc["orders"]) == 2 and doc["orders"][1]["order_no"] == a.order_no
    # Each order shows where it stands now (the paid one was allocated since; neither move
    # changes a figure, so no customers event refreshed them)
    assert [o["status"] for o in doc["orders"]] == ["shipped", "allocated"]
    # And a warehouse key may not read customers
    r = await client.get(f"/api/v1/customers/{cid}", headers=auth(keys["warehouse"]))
    assert (r.status_code, r.json()["code"]) == (403, "auth.forbidden")


async def test_lookup_by_phone_and_tags(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a = await order(db, "13812345678")
    await order(db, "13900001111")
    await run(db)
    cid = await customer_of(db, a.order_no)
    # Lookup by the phone written another way finds the customer; an unknown phone finds none
    r = await client.get(
        "/api/v1/customers", params={"phone": "+86 138-1234-5678"}, headers=auth(keys["cs"])
    )
    assert r.json() == {"items": [{"id": cid, "name": "王**", "phone": "138****5678"}]}
    r = await client.get(
        "/api/v1/customers", params={"phone": "13700000000"}, headers=auth(keys["cs"])
    )
    assert r.json() == {"items": []}
    # Neither or both parameters, or a bad phone, are problems
    r = await client.get("/api/v1/customers", headers=auth(keys["cs"]))
    assert (r.status_code, r.json()["code"]) == (422, "customer.lookup_required")
    r = await client.get("/api/v1/customers", params={"phone": "abc"}, headers=auth(keys["cs"]))
    assert (r.status_code, r.json()["code"]) == (422, "customer.invalid_phone")
    # Tagging: new → 201, again → 200, then find by tag, remove, remove again → 404
    path = f"/api/v1/customers/{cid}/tags"
    r = await client.post(path, json={"tag": "VIP"}, headers=auth(keys["ops"]))
    assert (r.status_code, r.json()) == (201, {"tags": ["VIP"]})
    r = await client.post(path, json={"tag": "VIP"}, headers=auth(keys["ops"]))
    assert (r.status_code, r.json()) == (200, {"tags": ["VIP"]})
    r = await client.post(path, json={"tag": "批发客户"}, headers=auth(keys["ops"]))
    assert r.json() == {"tags": ["VIP", "批发客户"]}
    r = await client.post(path, json={"tag": "a b"}, headers=auth(keys["ops"]))
    assert r.status_code == 422
    r = await client.post(path, json={"tag": "x"}, headers=auth(keys["cs"]))
    assert r.status_code == 403
    r = await client.get("/api/v1/customers", params={"tag": "批发客户"}, headers=auth(keys["cs"]))
    assert [c["id"] for c in r.json()["items"]] == [cid]
    r = await client.delete(f"{path}/VIP", headers=auth(keys["ops"]))
    assert r.status_code == 204
    r = await client.delete(f"{path}/VIP", headers=auth(keys["ops"]))
    assert (r.status_code, r.json()["code"]) == (404, "customer.tag_not_found")
    r = await client.get(f"/api/v1/customers/{cid}", headers=auth(keys["cs"]))
    assert r.json()["tags"] == ["批发客户"]
    # An unknown customer is a 404 problem
    r = await client.get("/api/v1/customers/999999", headers=auth(keys["cs"]))
    assert (r.status_code, r.json()["code"]) == (404, "customer.not_found")
    r = await client.post(
        "/api/v1/customers/999999/tags", json={"tag": "x"}, headers=auth(keys["ops"])
    )
    assert r.status_code == 404


async def test_a_merged_id_answers_with_the_survivor(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    one = await order(db, "13811112222", channel="taobao", external_id="TB-1")
    await ingested(db, one, "taobao", "B1")
    two = await order(db, "13933334444")
    await run(db)
    c2 = await customer_of(db, two.order_no)
    await client.post(
        f"/api/v1/customers/{c2}/tags", json={"tag": "VIP"}, headers=auth(keys["ops"])
    )
    bridge = await order(db, "13933334444", channel="taobao", external_id="TB-2")
    await ingested(db, bridge, "taobao", "B1")
    await run(db)
    r = await client.get(f"/api/v1/customers/{c2}", headers=auth(keys["cs"]))
    doc = r.json()
    assert (doc["id"], doc["merged_from"], doc["tags"]) == (
        await customer_of(db, one.order_no),
        c2,
        ["VIP"],
    )
    assert doc["profile"]["orders_90d"] == 3
