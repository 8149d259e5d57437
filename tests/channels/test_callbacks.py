"""Shopify webhooks over real HTTP: the simulator signs and sends, the live app verifies,
stores and acknowledges, the worker applies. Forged, replayed and retried deliveries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.channels import consumers  # noqa: F401  (registers the consumer)
from ordertally.channels.adapters import shopify
from ordertally.channels.models import ChannelWebhook
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.customers.models import CustomerOrder
from ordertally.events.dispatcher import drain
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from ordertally.simkit.server import serve
from tests.factories import auth

pytestmark = pytest.mark.anyio

SECRET = "shpss_test_secret"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_channel_sim_app(time_scale=1000.0)) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, trust_env=False, timeout=30) as http:
        (await http.post("/sim/reset"))
        yield http


async def control(sim: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> Any:
    """A control call to the simulator; its JSON answer."""
    response = await sim.post(path, json=body if body is not None else {})
    response.raise_for_status()
    return response.json()


async def _setup(live: Any, keys: dict[str, str], sim: httpx.AsyncClient) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=live.url, trust_env=False, timeout=30)
    response = await http.post(
        "/api/v1/channels/accounts",
        json={
            "code": "shop_a",
            "platform": "shopify",
            "name": "Shopify 店",
            "credentials": {"webhook_secret": SECRET},
        },
        headers=auth(keys["admin"]),
    )
    assert response.status_code == 201, response.text
    assert response.json()["has_credentials"] is True
    assert SECRET not in response.text
    await control(
        sim,
        "/sim/shopify/target",
        {"url": f"{live.url}/callbacks/channels/shopify/shop_a", "secret": SECRET},
    )
    return http


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_signed_webhooks_make_one_order_each(
    db: Database, live_server: Any, keys: dict[str, str], sim: httpx.AsyncClient
) -> None:
    http = await _setup(live_server, keys, sim)
    first = await control(sim, "/sim/shopify/orders", {"copies": 2})
    second = await control(
        sim, "/sim/shopify/orders", {"phone": "+8613900000002", "customer_id": 2}
    )
    deliveries = (await control(sim, "/sim/shopify/settle"))["deliveries"]
    assert [d["status"] for d in deliveries] == [200, 200, 200]
    assert await _count(db, ChannelWebhook) == 2  # the duplicate id was absorbed
    await drain(db, get_settings())
    assert await _count(db, SalesOrder) == 2
    async with db.transaction(write=False) as session:
        order = await session.scalar(
            select(SalesOrder).where(SalesOrder.external_id == first["order_id"])
        )
        # Imported paid, then allocated by the allocation consumer in the same drain (not
        # left for the minutely sweep)
        assert order is not None and order.channel == "shop_a" and order.status == "allocated"
        # Each simulated order carries the buyer it was given (the drill's Shopify buyers
        # differ; the default is the one buyer of the platform's example).
        rows = await session.execute(
            select(SalesOrder.external_id, SalesOrder.customer_phone_last4)
        )
        phones = {external_id: last4 for external_id, last4 in rows}
        assert phones == {first["order_id"]: "5678", second["order_id"]: "0002"}
        buyers = await session.scalar(select(func.count(func.distinct(CustomerOrder.customer_id))))
        assert buyers == 2
    # A later update (cancelled on Shopify after payment) is applied as a case, not a duplicate.
    await control(
        sim,
        "/sim/shopify/send",
        {
            "order_id": first["order_id"],
            "topic": "orders/cancelled",
            "changes": {"cancelled_at": "2026-11-20T10:00:00+08:00"},
        },
    )
    await control(sim, "/sim/shopify/settle")
    await drain(db, get_settings())
    assert await _count(db, SalesOrder) == 2
    response = await http.get(
        "/api/v1/channels/accounts/shop_a/status", headers=auth(keys["admin"])
    )
    assert response.status_code == 200 and response.json()["orders_linked"] == 2
    await http.aclose()


async def test_forged_unknown_and_replayed(
    db: Database, live_server: Any, keys: dict[str, str], sim: httpx.AsyncClient
) -> None:
    http = await _setup(live_server, keys, sim)
    body = b'{"id": 1, "currency": "CNY", "created_at": "2026-11-20T10:00:00+08:00"}'
    headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "wh-1"}
    forged = await http.post(
        "/callbacks/channels/shopify/shop_a",
        content=body,
        headers={**headers, "X-Shopify-Hmac-Sha256": shopify.sign("wrong", body)},
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "channel.webhook_signature_invalid"
    missing = await http.post("/callbacks/channels/shopify/shop_a", content=body, headers=headers)
    assert missing.status_code == 401
    unknown = await http.post(
        "/callbacks/channels/shopify/nope",
        content=body,
        headers={**headers, "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body)},
    )
    assert unknown.status_code == 404
    assert await _count(db, ChannelWebhook) == 0
    signed = {**headers, "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body)}
    first = await http.post("/callbacks/channels/shopify/shop_a", content=body, headers=signed)
    replay = await http.post("/callbacks/channels/shopify/shop_a", content=body, headers=signed)
    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert await _count(db, ChannelWebhook) == 1
    # The body lacks lines: stored, acknowledged, then marked failed by the worker (kept).
    await drain(db, get_settings())
    async with db.transaction(write=False) as session:
        receipt = await session.scalar(select(ChannelWebhook))
        assert receipt is not None and receipt.status == "failed"
    await http.aclose()


async def test_shopify_retries_until_acknowledged(
    db: Database, live_server: Any, keys: dict[str, str], sim: httpx.AsyncClient
) -> None:
    http = await _setup(live_server, keys, sim)
    await control(sim, "/sim/behaviour", {"shopify_fail_next": 2})
    await control(sim, "/sim/shopify/orders", {})
    deliveries = (await control(sim, "/sim/shopify/settle"))["deliveries"]
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]
    assert deliveries[-1]["status"] == 200
    await drain(db, get_settings())
    assert await _count(db, SalesOrder) == 1
    await http.aclose()


async def test_a_webhook_of_an_unknown_shape_is_held_not_retried_forever(
    db: Database, live_server: Any, keys: dict[str, str], sim: httpx.AsyncClient
) -> None:
    # Given signed webhooks whose bodies the adapter cannot read: a line that is a string
    # (AttributeError inside the adapter) and a total too large for a decimal (Overflow)
    http = await _setup(live_server, keys, sim)
    head = '"currency": "CNY", "created_at": "2026-11-20T10:00:00+08:00", '
    head += '"updated_at": "2026-11-20T10:00:00+08:00"'
    bodies = [
        ('{"id": 1, ' + head + ', "line_items": ["a"]}').encode(),
        ('{"id": 2, ' + head + ', "total_price": "1e999999999", "line_items": []}').encode(),
    ]
    for n, body in enumerate(bodies):
        headers = {
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": f"wh-shape-{n}",
            "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
        }
        answer = await http.post(
            "/callbacks/channels/shopify/shop_a", content=body, headers=headers
        )
        assert answer.status_code == 200
    # When the worker applies them
    await drain(db, get_settings())
    # Then both are kept as failed, each held by an order_not_created case (cause unmappable)
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(ChannelWebhook.status, ExceptionCase.type, ExceptionCase.detail)
                .join(ExceptionCase, ExceptionCase.id == ChannelWebhook.held_case_id)
                .order_by(ChannelWebhook.id)
            )
        ).all()
    assert [(status, kind, detail["cause"]) for status, kind, detail in rows] == [
        ("failed", "order_not_created", "unmappable"),
        ("failed", "order_not_created", "unmappable"),
    ]
    assert await _count(db, SalesOrder) == 0
    await http.aclose()
