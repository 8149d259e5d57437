"""Order totals equal what the buyer paid: Shopify's own published order (SDK fixture) sent as
a signed webhook over real HTTP; the stored parts add up to `total_price`, and a published
order whose parts do not add up opens `amount_mismatch` without changing anything."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from ordertally.channels import consumers  # noqa: F401  (registers the consumer)
from ordertally.channels.adapters import shopify
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from tests.factories import auth

pytestmark = pytest.mark.anyio

SECRET = "shpss_amounts_secret"
FIXTURES = Path(__file__).parent / "fixtures"


def published_order() -> dict[str, Any]:
    """Shopify/shopify_python_api test/fixtures/order.json (see fixtures/SOURCES.md)."""
    return json.loads((FIXTURES / "shopify_python_api_order.json").read_text())["order"]


def consistent_order() -> dict[str, Any]:
    """The published order made consistent: its first two lines (as its own `subtotal_price`
    398.00 says), its 6% state tax 11.94 and a 10.00 shipping line: total_price 419.94."""
    doc = copy.deepcopy(published_order())
    doc["id"] = 450789470
    doc["line_items"] = doc["line_items"][:2]
    doc["shipping_lines"] = [{"code": "Standard", "price": "10.00", "title": "Standard"}]
    doc["total_price"] = "419.94"
    return doc


async def _account(live: Any, keys: dict[str, str]) -> httpx.AsyncClient:
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
    return http


async def _send(http: httpx.AsyncClient, doc: dict[str, Any], webhook_id: str) -> None:
    body = json.dumps(doc).encode()
    response = await http.post(
        "/callbacks/channels/shopify/shop_a",
        content=body,
        headers={
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
        },
    )
    assert (response.status_code, response.json()["status"]) == (200, "accepted")


async def _cases(db: Database, type_: str) -> list[ExceptionCase]:
    async with db.transaction(write=False) as session:
        return list(
            (await session.scalars(select(ExceptionCase).where(ExceptionCase.type == type_))).all()
        )


async def test_shopify_total_is_total_price_with_tax_and_shipping(
    db: Database,
    live_server: Any,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a USD rate and a Shopify order with 398.00 of lines, 10.00 shipping, 11.94 tax
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    http = await _account(live_server, keys)
    # When Shopify delivers it, signed, over HTTP and the worker applies it
    await _send(http, consistent_order(), "wh-consistent")
    await drain(db, get_settings())
    # Then the order's total is Shopify's total_price, each part stored and shown
    async with db.transaction(write=False) as session:
        order = await session.scalar(
            select(SalesOrder).where(SalesOrder.external_id == "450789470")
        )
    assert order is not None
    assert (
        order.subtotal_minor,
        order.discount_minor,
        order.shipping_minor,
        order.tax_minor,
        order.fee_minor,
        order.total_minor,
    ) == (39800, 0, 1000, 1194, 0, 41994)
    assert (order.base_currency, order.fx_rate, order.base_total_minor) == (
        "CNY",
        "7.10430000",
        298338,  # 419.94 x 7.1043 = 2983.379742 CNY
    )
    response = await http.get(f"/api/v1/orders/{order.order_no}", headers=auth(keys["admin"]))
    doc = response.json()
    assert {k: doc[k] for k in ("subtotal", "discount", "shipping", "tax", "fee", "total")} == {
        "subtotal": "398.00",
        "discount": "0.00",
        "shipping": "10.00",
        "tax": "11.94",
        "fee": "0.00",
        "total": "419.94",
    }
    assert (doc["base_currency"], doc["base_total"]) == ("CNY", "2983.38")
    assert await _cases(db, "amount_mismatch") == []
    await http.aclose()


async def test_published_order_that_does_not_add_up_opens_amount_mismatch(
    db: Database,
    live_server: Any,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given Shopify's published order as is: three lines of 199.00, tax 11.94, total 409.94
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    http = await _account(live_server, keys)
    # When it is delivered
    await _send(http, published_order(), "wh-published")
    await drain(db, get_settings())
    # Then the order is created with our sum (never adjusted) and a case names both totals
    async with db.transaction(write=False) as session:
        order = await session.scalar(
            select(SalesOrder).where(SalesOrder.external_id == "450789469")
        )
    assert order is not None
    assert (order.subtotal_minor, order.tax_minor, order.total_minor) == (59700, 1194, 60894)
    cases = await _cases(db, "amount_mismatch")
    assert [(c.order_id, c.blocking, c.status) for c in cases] == [(order.id, False, "open")]
    detail = cases[0].detail
    assert (detail["platform_total"], detail["our_total"], detail["currency"]) == (
        "409.94",
        "608.94",
        "USD",
    )
    assert detail["parts"] == {
        "subtotal": "597.00",
        "discount": "0.00",
        "shipping": "0.00",
        "tax": "11.94",
        "fee": "0.00",
    }
    await http.aclose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


async def test_usd_webhook_without_a_rate_is_held_then_applied_once_by_replay(
    db: Database, live_server: Any, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no USD rate at all (neither the setting nor the table)
    monkeypatch.delenv("ORDERTALLY_FX_RATES", raising=False)
    reset_settings()
    held_before = _metric("ordertally_channel_orders_held_total", "shopify", "fx_rate_missing")
    http = await _account(live_server, keys)
    # When a USD order arrives
    await _send(http, consistent_order(), "wh-usd")
    await drain(db, get_settings())
    # Then no order exists; the webhook is kept, counted and held by a case naming the cause
    assert await _orders(db) == 0
    cases = await _cases(db, "order_not_created")
    assert [(c.order_id, c.blocking, c.status) for c in cases] == [(None, True, "open")]
    assert {k: cases[0].detail[k] for k in ("account", "external_id", "cause", "error")} == {
        "account": "shop_a",
        "external_id": "450789470",
        "cause": "fx_rate_missing",
        "error": "fx_rate_missing: USD",
    }
    assert (
        _metric("ordertally_channel_orders_held_total", "shopify", "fx_rate_missing")
        == held_before + 1
    )
    # And a replay before the cause is fixed leaves it held (no second case, no order)
    early = await http.post("/api/v1/channels/held-orders/replay", headers=auth(keys["admin"]))
    assert [r["status"] for r in early.json()["replayed"]] == ["failed"]
    assert len(await _cases(db, "order_not_created")) == 1 and await _orders(db) == 0
    # When the rate is recorded through the API and `ordertally channels replay` runs
    added = await http.post(
        "/api/v1/fx-rates",
        json={"currency": "USD", "rate": "7.1043"},
        headers=auth(keys["admin"]),
    )
    assert added.status_code == 201, added.text
    assert (added.json()["rate"], added.json()["base_currency"]) == ("7.10430000", "CNY")
    ran = _cli("channels", "replay")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Then the order exists once, at the recorded rate, and the case is resolved
    async with db.transaction(write=False) as session:
        orders = list((await session.scalars(select(SalesOrder))).all())
    assert [(o.external_id, o.total_minor, o.fx_rate, o.base_total_minor) for o in orders] == [
        ("450789470", 41994, "7.10430000", 298338)
    ]
    [case] = await _cases(db, "order_not_created")
    assert (case.status, case.resolved_by) == ("resolved", "channels.replay")
    # And replaying again (CLI or API) or redelivering applies nothing more
    again = await http.post("/api/v1/channels/held-orders/replay", headers=auth(keys["admin"]))
    assert again.json() == {"replayed": []}
    await drain(db, get_settings())
    assert await _orders(db) == 1
    await http.aclose()


async def _orders(db: Database) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(SalesOrder)) or 0)


def _metric(name: str, platform: str, cause: str) -> float:
    value = REGISTRY.get_sample_value(name, {"platform": platform, "cause": cause})
    return value or 0.0


async def test_unmappable_and_unknown_currency_webhooks_are_held_with_their_cause(
    db: Database, live_server: Any, keys: dict[str, str]
) -> None:
    # Given a body Shopify's adapter cannot map and an order in a currency that does not exist
    http = await _account(live_server, keys)
    await _send(http, {"id": 1, "currency": "CNY"}, "wh-unmappable")
    await _send(http, dict(consistent_order(), id=450789471, currency="XYZ"), "wh-xyz")
    # When the worker applies them
    await drain(db, get_settings())
    # Then nothing is created and each is held by a case naming its cause
    assert await _orders(db) == 0
    cases = await _cases(db, "order_not_created")
    assert sorted((c.detail["webhook_id"], c.detail["cause"]) for c in cases) == [
        ("wh-unmappable", "unmappable"),
        ("wh-xyz", "unknown_currency"),
    ]
    await http.aclose()
