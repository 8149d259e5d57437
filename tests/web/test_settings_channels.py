"""The settings and channels screens over HTTP (both databases): API keys revoked from the
page, FX rates recorded, notification targets listed without their URLs; a Shopify webhook
held for a missing rate (Shopify's published order fixture, see tests/channels/fixtures) is
replayed from the page once the rate exists; SKU mappings; each section by role."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from ordertally.auth import service as auth_service
from ordertally.channels import consumers  # noqa: F401  (registers the consumer)
from ordertally.channels import service as channels_service
from ordertally.channels.adapters import shopify
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from tests.channels.helpers import make_account
from tests.channels.test_amounts import consistent_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of

pytestmark = pytest.mark.anyio
SECRET = "shpss_screens_secret"


async def test_an_admin_revokes_a_key_and_finance_records_a_rate(
    signed_in: SignedInClient, db: Database, keys: dict[str, str]
) -> None:
    # Given the role keys, an admin, finance and cs
    admin = await signed_in("admin")
    finance = await signed_in("finance")
    cs = await signed_in("cs")
    page = await admin.get("/ui/settings")
    listed = re.findall(r'<tr data-key="(\d+)">', page.text)
    assert len(listed) == len(keys) and 'id="targets"' in page.text
    assert "未配置通知目标" in page.text
    async with db.transaction(write=False) as session:
        docs = {d["name"]: d for d in await auth_service.list_api_keys(session)}
    victim = docs["ops-tester"]["id"]
    # When the admin revokes one key
    done = await admin.post(
        f"/ui/settings/keys/{victim}/revoke", data={"csrf_token": csrf_of(page.text)}
    )
    # Then that key alone is revoked
    assert done.status_code == 303
    async with db.transaction(write=False) as session:
        revoked = {d["name"] for d in await auth_service.list_api_keys(session) if d["revoked_at"]}
    assert revoked == {"ops-tester"}
    assert f'data-revoked="{victim}"' in (await admin.get("/ui/settings")).text
    # When finance (who sees the rates only) records a rate, and a bad one
    mine = await finance.get("/ui/settings")
    assert 'id="fx"' in mine.text and 'id="keys"' not in mine.text
    assert 'id="targets"' not in mine.text
    token = csrf_of(mine.text)
    bad = await finance.post(
        "/ui/settings/fx", data={"csrf_token": token, "currency": "CNY", "rate": "1"}
    )
    good = await finance.post(
        "/ui/settings/fx", data={"csrf_token": token, "currency": "usd", "rate": "7.1043"}
    )
    # Then the bad one is refused on the page and the good one is listed
    assert bad.status_code == 422 and "flash error" in bad.text
    assert good.status_code == 303
    rates = await finance.get("/ui/settings")
    row = re.search(r'<tr data-rate="USD">(.*?)</tr>', rates.text, re.S)
    assert row and "7.10430000" in row.group(1) and "user:finance-2" in row.group(1)
    # And cs may neither open the screen nor revoke
    assert (await cs.get("/ui/settings")).status_code == 403
    refused = await cs.post(
        f"/ui/settings/keys/{docs['cs-tester']['id']}/revoke",
        data={"csrf_token": csrf_of((await cs.get("/ui/")).text)},
    )
    assert refused.status_code == 403
    # And finance may not revoke either
    assert (
        await finance.post(
            f"/ui/settings/keys/{docs['cs-tester']['id']}/revoke", data={"csrf_token": token}
        )
    ).status_code == 403


async def test_a_test_send_to_an_unknown_target_is_refused_on_the_page(
    signed_in: SignedInClient,
) -> None:
    # Given ops on the settings screen, no target configured
    ops = await signed_in("ops")
    page = await ops.get("/ui/settings")
    assert 'id="targets"' in page.text and 'id="fx"' not in page.text
    # When a test is sent to a target that does not exist
    response = await ops.post(
        "/ui/settings/notify/test", data={"csrf_token": csrf_of(page.text), "target": "ops:nope"}
    )
    # Then the page says so
    assert response.status_code == 404 and "flash error" in response.text


async def test_a_held_webhook_is_replayed_from_the_channels_screen(
    signed_in: SignedInClient,
    web: httpx.AsyncClient,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no USD rate, a Shopify account and its USD order webhook, held
    monkeypatch.delenv("ORDERTALLY_FX_RATES", raising=False)
    reset_settings()
    await make_account(db, credentials={"webhook_secret": SECRET})
    body = json.dumps(consistent_order()).encode()
    sent = await web.post(
        "/callbacks/channels/shopify/shop_a",
        content=body,
        headers={
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": "wh-screens-1",
            "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
        },
    )
    assert sent.status_code == 200, sent.text
    await drain(db, get_settings())
    admin = await signed_in("admin")
    cs = await signed_in("cs")
    page = await admin.get("/ui/channels")
    assert page.status_code == 200
    assert re.findall(r'<tr data-account="([^"]+)">', page.text) == ["shop_a"]
    held = re.findall(r'<tr data-held="(\d+)">', page.text)
    assert len(held) == 1 and "fx_rate_missing" in page.text
    # When the admin replays before the cause is fixed
    token = csrf_of(page.text)
    early = await admin.post("/ui/channels/held/replay", data={"csrf_token": token})
    # Then it stays held
    assert re.findall(r'<tr data-replay="\d+">.*?<code>([^<]+)</code>', early.text) == ["仍被挂起"]
    assert len(re.findall(r'<tr data-held="(\d+)">', early.text)) == 1
    # When the rate is recorded on the settings screen and the webhook replayed
    settings_page = await admin.get("/ui/settings")
    rate = await admin.post(
        "/ui/settings/fx",
        data={"csrf_token": csrf_of(settings_page.text), "currency": "USD", "rate": "7.1043"},
    )
    assert rate.status_code == 303
    done = await admin.post("/ui/channels/held/replay", data={"csrf_token": token})
    # Then it is applied and nothing is held any more
    assert re.findall(r'<tr data-replay="\d+">.*?<code>([^<]+)</code>', done.text) == ["已应用"]
    assert 'data-empty="held"' in done.text
    # And cs sees the screen without its actions, and may not replay
    seen = await cs.get("/ui/channels")
    assert seen.status_code == 200 and 'data-action="add-mapping"' not in seen.text
    refused = await cs.post("/ui/channels/held/replay", data={"csrf_token": csrf_of(seen.text)})
    assert refused.status_code == 403


async def test_sku_mappings_are_added_from_the_screen(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an account and ops on the channels screen
    await make_account(db)
    ops = await signed_in("ops")
    page = await ops.get("/ui/channels")
    token = csrf_of(page.text)
    # When ops maps a platform SKU, and sends one with a bad SKU code
    added = await ops.post(
        "/ui/channels/mappings",
        data={
            "csrf_token": token,
            "platform": "shopify",
            "account_code": "shop_a",
            "platform_sku": "IPOD2008PINK",
            "sku": "TEA-LJ-250",
        },
    )
    bad = await ops.post(
        "/ui/channels/mappings",
        data={"csrf_token": token, "platform": "shopify", "platform_sku": "X", "sku": "不行"},
    )
    # Then the first is listed and the second refused, changing nothing
    assert added.status_code == 201
    assert re.findall(r'<tr data-mapping="\d+"><td>[^<]*</td><td>shop_a</td>', added.text)
    assert bad.status_code == 422 and "sku" in bad.text
    async with db.transaction(write=False) as session:
        found = await channels_service.list_mappings(session, None, None, 10, 0)
    assert [(m.account_code, m.platform_sku, m.sku) for m in found] == [
        ("shop_a", "IPOD2008PINK", "TEA-LJ-250")
    ]
