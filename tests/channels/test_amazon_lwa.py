"""Amazon SP-API as it is, against the simulator over real HTTP: the refresh token goes to
Login with Amazon (never as an access token), the access token is cached and exchanged again
when SP-API refuses it; a Pending order (no OrderTotal, items without ItemPrice, as the SP-API
model's own sandbox example) is ingested in the marketplace's currency."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ordertally.channels import sync
from ordertally.channels.adapters import amazon
from ordertally.channels.errors import MissingCredentials
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.orders.models import SalesOrder
from ordertally.simkit.server import serve
from tests.channels.helpers import make_account

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def sim_server() -> Iterator[tuple[str, ChannelSim]]:
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@pytest.fixture
def sim(sim_server: tuple[str, ChannelSim]) -> Iterator[tuple[str, ChannelSim]]:
    url, state = sim_server
    state.reset()
    amazon._TOKENS.clear()
    with clock.frozen(NOW):
        yield url, state
    state.reset()


async def _lwa_account(db: Database, url: str, state: ChannelSim, **credentials: str) -> None:
    await make_account(
        db,
        "amz_a",
        "amazon",
        config={
            "base_url": url,
            "marketplace_id": "ATVPDKIKX0DER",
            "client_id": state.amazon.lwa_client_id,
            "lwa_url": f"{url}/auth/o2/token",
        },
        credentials={
            "refresh_token": state.amazon.refresh_token,
            "client_secret": state.amazon.lwa_client_secret,
            **credentials,
        },
        start_at=(NOW - timedelta(hours=1)).isoformat(),
        overlap_seconds=0,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )


async def _external_ids(db: Database) -> list[str]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(select(SalesOrder.external_id))
        return sorted(str(r) for r in rows.all())


async def test_lwa_token_cached_then_refreshed_when_expired(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an account with LWA credentials and two orders on Amazon
    await _lwa_account(db, url, state)
    state.amazon.add("111-0000001-0000001", NOW - timedelta(minutes=40))
    state.amazon.add("111-0000002-0000001", NOW - timedelta(minutes=39))
    # When it syncs: one LWA exchange serves every SP-API call
    first = await sync.sync_account(db, "amz_a")
    assert first.result.created == 2 and state.amazon.lwa_requests == 1
    # And twenty minutes later, after Amazon expired the cached access token, a new order
    clock.advance(timedelta(minutes=20))
    state.amazon.expire_tokens()
    state.amazon.add("111-0000003-0000001", NOW + timedelta(minutes=5))
    second = await sync.sync_account(db, "amz_a")
    # Then the 403 made one more LWA exchange and the pull went on
    assert second.complete and second.result.created == 1
    assert state.amazon.lwa_requests == 2
    assert await _external_ids(db) == [
        "111-0000001-0000001",
        "111-0000002-0000001",
        "111-0000003-0000001",
    ]


async def test_refresh_token_is_never_sent_as_an_access_token(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an account with only a refresh token (no LWA client credentials)
    await make_account(
        db,
        "amz_a",
        "amazon",
        config={"base_url": url, "marketplace_id": "ATVPDKIKX0DER"},
        credentials={"refresh_token": state.amazon.refresh_token},
        start_at=(NOW - timedelta(hours=1)).isoformat(),
    )
    state.amazon.add("111-0000001-0000001", NOW - timedelta(minutes=40))
    # When it syncs, Then it is refused before any SP-API call, and nothing is written
    with pytest.raises(MissingCredentials):
        await sync.sync_account(db, "amz_a")
    assert state.amazon.requests == [] and await _external_ids(db) == []


async def test_wrong_lwa_secret_is_a_credentials_error(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    await _lwa_account(db, url, state, client_secret="wrong")
    state.amazon.add("111-0000001-0000001", NOW - timedelta(minutes=40))
    with pytest.raises(MissingCredentials) as refused:
        await sync.sync_account(db, "amz_a")
    assert "invalid_client" in refused.value.detail
    assert state.amazon.requests == [] and await _external_ids(db) == []


async def test_pending_order_without_order_total_is_ingested(
    db: Database, sim: tuple[str, ChannelSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = sim
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    await _lwa_account(db, url, state)
    # Given the SP-API model's Pending sandbox order (no OrderTotal) whose item, as documented
    # for Pending orders, has no ItemPrice
    order: dict[str, Any] = json.loads((FIXTURES / "amazon_get_orders.json").read_text())[
        "payload"
    ]["Orders"][0]
    order = copy.deepcopy(order)
    order["PurchaseDate"] = order["LastUpdateDate"] = "2026-11-20T16:20:00Z"
    assert "OrderTotal" not in order and order["OrderStatus"] == "Pending"
    items = json.loads((FIXTURES / "amazon_get_order_items.json").read_text())["payload"][
        "OrderItems"
    ]
    item = {
        k: v
        for k, v in items[0].items()
        if k not in ("ItemPrice", "ShippingPrice", "PromotionDiscount")
    }
    state.amazon.put(order, [item])
    # When the account syncs
    outcome = await sync.sync_account(db, "amz_a")
    # Then the order exists, in the marketplace's currency, awaiting payment
    assert outcome.result.errors == [] and outcome.result.created == 1
    async with db.transaction(write=False) as session:
        stored = await session.scalar(select(SalesOrder))
    assert stored is not None
    assert (stored.external_id, stored.currency, stored.status, stored.total_minor) == (
        "902-3159896-1390916",
        "USD",
        "pending_payment",
        0,
    )


def test_missing_address_takes_the_marketplace_country() -> None:
    order = json.loads((FIXTURES / "amazon_get_orders.json").read_text())["payload"]["Orders"][0]
    order = {k: v for k, v in order.items() if k != "ShippingAddress"}
    assert amazon.to_canonical(order, []).address.country == "US"
    order["MarketplaceId"] = "A1PA6795UKMFR9"
    assert amazon.to_canonical(order, []).address.country == "DE"


async def _stored(db: Database) -> SalesOrder:
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
    assert order is not None
    return order


async def test_pii_comes_with_a_restricted_data_token_where_the_role_is_granted(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an application with the PII role
    await _lwa_account(db, url, state)
    state.amazon.add("111-0000001-0000001", NOW - timedelta(minutes=40))
    # When the account syncs
    outcome = await sync.sync_account(db, "amz_a")
    # Then getOrders was called with an RDT and the buyer's name and phone are stored (masked)
    assert (outcome.pii, outcome.as_dict()["pii"], len(state.amazon.rdts)) == (
        "restricted",
        "restricted",
        1,
    )
    order = await _stored(db)
    assert (order.ship_name_masked, order.customer_phone_masked, order.ship_city) == (
        "张*",
        "138****5678",
        "上海市",
    )


async def test_without_the_pii_role_the_order_comes_without_pii_and_says_so(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an application without the PII role
    state.amazon.pii_role = False
    await _lwa_account(db, url, state)
    state.amazon.add("111-0000001-0000001", NOW - timedelta(minutes=40))
    # When the account syncs
    outcome = await sync.sync_account(db, "amz_a")
    # Then the order is created from what SP-API gives, and the outcome shows PII missing
    assert (outcome.pii, outcome.result.created, state.amazon.rdts) == ("missing", 1, {})
    order = await _stored(db)
    assert (order.customer_phone_masked, order.ship_city, order.ship_province) == (
        "",
        "上海市",
        "上海市",
    )
