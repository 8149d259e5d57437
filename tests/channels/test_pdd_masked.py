"""Pinduoduo's current schema: while an order awaits shipment its receiver fields are
ciphertext and the display values are `*_mask`. Masked values are shown and searched; the
ciphertext is kept as ciphertext (in the encrypted address document, never in a name or phone
column) for the platform's decrypt API, which the simulator plays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from ordertally.channels import sync
from ordertally.channels.adapters import pinduoduo
from ordertally.channels.simulators.app import create_channel_sim_app
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database
from ordertally.orders.contact import PII_ADDRESS
from ordertally.orders.models import SalesOrder
from ordertally.simkit.server import serve
from tests.channels.helpers import make_account

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


def _encrypted_sample() -> dict[str, Any]:
    doc = json.loads((FIXTURES / "pdd_increment_encrypted.json").read_text())
    return dict(doc["order_sn_increment_get_response"]["order_sn_list"][0])


def test_masked_values_are_shown_and_ciphertext_kept_aside() -> None:
    # Given an order awaiting shipment in the current schema
    doc = _encrypted_sample()
    # When it is mapped
    order = pinduoduo.to_canonical(doc)
    # Then the display values are the *_mask fields, never the ciphertext
    assert (order.buyer_name, order.buyer_phone) == ("王*明", "1*********5")
    assert (order.address.name, order.address.phone, order.address.line1) == (
        "王*明",
        "1*********5",
        "文三路**号",
    )
    # And the four ciphertexts are kept as they came
    assert order.encrypted == {k: doc[k] for k in pinduoduo.ENCRYPTED_FIELDS}
    # And the total is the buyer's pay_amount: 119.80 - 10.00 + 4.00
    assert (order.total_minor, order.platform_total_minor) == (11380, 11380)


@pytest.fixture(scope="module")
def sim_server() -> Iterator[tuple[str, ChannelSim]]:
    app = create_channel_sim_app()
    with serve(app) as url:
        yield url, app.state.sim


@pytest.fixture
def sim(sim_server: tuple[str, ChannelSim]) -> Iterator[tuple[str, ChannelSim]]:
    url, state = sim_server
    state.reset()
    with clock.frozen(NOW):
        yield url, state
    state.reset()


async def test_pulled_order_stores_masks_and_ciphertext_and_decrypts_on_request(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given a Pinduoduo account and an order awaiting shipment on the simulator
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client"},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        start_at=(NOW - timedelta(minutes=20)).isoformat(),
        overlap_seconds=0,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )
    state.pdd.add("261120-000000000000001", NOW - timedelta(minutes=10))
    sent = state.pdd.orders["261120-000000000000001"]
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    assert outcome.result.created == 1 and outcome.result.errors == []
    # Then the order's columns hold the masked values only
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
    assert order is not None
    assert (order.customer_phone_masked, order.ship_phone_masked, order.ship_name_masked) == (
        "138****1234",
        "138****1234",
        "王**",
    )
    assert order.customer_phone_last4 == "1234"
    columns = " ".join(str(v) for v in vars(order).values())
    for key in pinduoduo.ENCRYPTED_FIELDS:
        assert sent[key] not in columns
    # And the encrypted address document keeps the platform's ciphertext for its decrypt API
    address = orjson.loads(get_cipher().decrypt(order.shipping_address_enc, PII_ADDRESS))
    assert {k: address[f"platform_ciphertext_{k}"] for k in pinduoduo.ENCRYPTED_FIELDS} == {
        k: sent[k] for k in pinduoduo.ENCRYPTED_FIELDS
    }
    assert (address["name"], address["phone"], address["line1"]) == (
        "王**",
        "138****1234",
        "文三路***号",
    )
    # And the decrypt hook answers the plaintext for a stored ciphertext
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        client = pinduoduo.PinduoduoClient(http, url, "sim-pdd-client", "sim-pdd-secret", "t")
        response = await client.decrypt_batch(
            [("261120-000000000000001", address["platform_ciphertext_receiver_phone"])]
        )
    decrypted = response.json()["open_decrypt_batch_response"]["data_decrypt_list"]
    assert [d["decrypted_data"] for d in decrypted] == ["13812341234"]
