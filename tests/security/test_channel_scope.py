"""Issue 14: API keys can be scoped to channel accounts, like the warehouse scope. A key made
with `ordertally apikey create --channel shop_a` (a real process) sees and acts on shop_a only:
accounts, status, sync, SKU mappings, held-order replay and order contacts of other accounts
are refused (403, nothing changes); an unscoped key is unaffected."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.channels.models import ChannelSkuMapping
from ordertally.core.db import Database
from tests.factories import auth, make_order

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
