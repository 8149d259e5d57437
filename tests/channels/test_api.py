"""Channel accounts and SKU mappings over the API: secrets never returned, problems on errors."""

from __future__ import annotations

import httpx
import pytest

from ordertally.channels.ingest import ingest_orders
from ordertally.core.db import Database
from tests.channels.helpers import canonical
from tests.factories import auth

pytestmark = pytest.mark.anyio


async def test_accounts_crud_hides_secrets(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    admin = auth(keys["admin"])
    body = {
        "code": "amz_us",
        "platform": "amazon",
        "name": "Amazon US",
        "config": {"base_url": "http://127.0.0.1:9", "marketplace_id": "ATVPDKIKX0DER"},
        "credentials": {"refresh_token": "Atzr|secret-refresh", "client_secret": "cs-secret"},
    }
    created = await client.post("/api/v1/channels/accounts", json=body, headers=admin)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["has_credentials"] and doc["credential_names"] == ["client_secret", "refresh_token"]
    assert "secret-refresh" not in created.text and "cs-secret" not in created.text
    again = await client.post("/api/v1/channels/accounts", json=body, headers=admin)
    assert again.status_code == 409 and again.json()["code"] == "channel.account_exists"
    bad = await client.post(
        "/api/v1/channels/accounts", json={**body, "code": "x", "platform": "ebay"}, headers=admin
    )
    assert bad.status_code == 422
    patched = await client.patch(
        "/api/v1/channels/accounts/amz_us",
        json={"credentials": {"access_token": "tok"}, "page_size": 50},
        headers=admin,
    )
    assert patched.status_code == 200
    assert patched.json()["credential_names"] == ["access_token", "client_secret", "refresh_token"]
    assert patched.json()["page_size"] == 50
    listed = await client.get("/api/v1/channels/accounts", headers=admin)
    assert [a["code"] for a in listed.json()["items"]] == ["amz_us"]
    assert "tok" not in listed.text.replace("token", "")
    missing = await client.get("/api/v1/channels/accounts/nope", headers=admin)
    assert missing.status_code == 404 and missing.json()["code"] == "channel.account_not_found"
    status = await client.get("/api/v1/channels/accounts/amz_us/status", headers=admin)
    assert status.status_code == 200 and status.json()["error_count"] == 0
    # Nothing listens on port 9: the pull fails, is recorded, and answered as a problem.
    pulled = await client.post("/api/v1/channels/amz_us/sync", headers=admin)
    assert pulled.status_code in (422, 502), pulled.text
    anonymous = await client.get("/api/v1/channels/accounts")
    assert anonymous.status_code == 401


async def test_sku_mapping_turns_platform_sku_into_ours(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    await client.post(
        "/api/v1/channels/accounts",
        json={"code": "pdd_a", "platform": "pinduoduo", "name": "拼多多店"},
        headers=admin,
    )
    created = await client.post(
        "/api/v1/channels/sku-mappings",
        json={"platform": "pinduoduo", "platform_sku": "PDD-LJ-1", "sku": "TEA-LJ-250"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    duplicate = await client.post(
        "/api/v1/channels/sku-mappings",
        json={"platform": "pinduoduo", "platform_sku": "PDD-LJ-1", "sku": "CUP-CER-01"},
        headers=admin,
    )
    assert duplicate.status_code == 409
    result = await ingest_orders(
        db, "pdd_a", [canonical("M1", sku="PDD-LJ-1", platform="pinduoduo")], via="file"
    )
    assert result.created == 1 and result.held == 0
    order = await client.get(f"/api/v1/orders/{result.order_nos['M1']}", headers=admin)
    assert order.json()["lines"][0]["sku"] == "TEA-LJ-250"
    mapping_id = created.json()["id"]
    assert (
        await client.delete(f"/api/v1/channels/sku-mappings/{mapping_id}", headers=admin)
    ).status_code == 204
    assert (await client.get("/api/v1/channels/sku-mappings", headers=admin)).json()["items"] == []
