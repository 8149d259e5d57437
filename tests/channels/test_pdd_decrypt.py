"""Issue 15: Pinduoduo sends the receiver's name, phone and address as ciphertext while an
order awaits shipping. With a decrypt service configured, a pull asks it for every ciphertext
(pdd.open.decrypt.batch at the router, or the merchant's relay) with no database transaction
open, stores the answer only inside the encrypted columns, keeps the platform's masks for
display and search, and creates an order it could not decrypt with a blocking
`address_not_decrypted` hold instead of losing it. The simulator answers in the shape of the POP
SDK's PddOpenDecryptBatchResponse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.simkit.server import serve
from tests.channels.helpers import make_account
from tests.factories import auth

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
ORDER_SN = "261120-000000000000007"
# What the simulator sealed for every order it adds (PddSim.add).
PLAIN = {
    "receiver_name": "王小明",
    "receiver_phone": "13812341234",
    "receiver_address": "文三路100号",
    "address": "浙江省杭州市西湖区文三路100号",
}


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


async def _account(db: Database, url: str, **config: Any) -> None:
    await make_account(
        db,
        "pdd_a",
        "pinduoduo",
        config={"base_url": url, "client_id": "sim-pdd-client", **config},
        credentials={"client_secret": "sim-pdd-secret", "access_token": "t"},
        start_at=(NOW - timedelta(minutes=20)).isoformat(),
        overlap_seconds=0,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )


async def _order_and_cases(db: Database) -> tuple[SalesOrder, list[ExceptionCase]]:
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
        assert order is not None
        cases = list(
            await session.scalars(select(ExceptionCase).where(ExceptionCase.order_id == order.id))
        )
    return order, cases


def _checked_out(db: Database) -> int:
    """Connections of this process's engines in use right now (0: no transaction open)."""
    pools = {id(e.pool): e.pool for e in (db.write_engine, db.read_engine)}
    return sum(pool.checkedout() for pool in pools.values())  # type: ignore[attr-defined]


async def test_a_pull_decrypts_outside_any_transaction_and_stores_the_answer_sealed(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an account whose decrypt service is Pinduoduo's own (pdd.open.decrypt.batch)
    await _account(db, url, decrypt="pop")
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=10))
    sent = state.pdd.orders[ORDER_SN]
    in_use: list[int] = []
    state.pdd.on_decrypt = lambda: in_use.append(_checked_out(db))
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    # Then the decrypt service was called once, for the four ciphertexts, with no connection
    # (so no transaction) held while it answered
    assert state.pdd.decrypt_calls == 1 and in_use == [0]
    call = next(r for r in state.pdd.requests if r["type"] == pinduoduo.DECRYPT_API)
    asked = orjson.loads(call["data_list"])
    assert sorted(a["encrypted_data"] for a in asked) == sorted(
        sent[k] for k in pinduoduo.ENCRYPTED_FIELDS
    )
    assert {a["data_tag"] for a in asked} == {ORDER_SN}
    assert (outcome.result.created, outcome.decrypted, outcome.undecrypted) == (1, 4, 0)
    order, cases = await _order_and_cases(db)
    # And the masked columns keep the platform's masks for display and search
    assert (order.customer_phone_masked, order.ship_phone_masked, order.ship_name_masked) == (
        "138****1234",
        "138****1234",
        "王**",
    )
    columns = " ".join(str(v) for v in vars(order).values())
    for value in PLAIN.values():
        assert value not in columns
    # And the plaintext is in the encrypted columns only: the phone in E.164 with the blind
    # index of a real phone (so a search by the full number finds it)
    cipher = get_cipher()
    assert cipher.decrypt(order.customer_name_enc, PII_NAME) == "王小明"
    assert cipher.decrypt(order.customer_phone_enc, PII_PHONE) == "+8613812341234"
    assert order.customer_phone_bidx == cipher.blind_index("+8613812341234", "phone")
    assert order.customer_phone_last4 == "1234"
    address = orjson.loads(cipher.decrypt(order.shipping_address_enc, PII_ADDRESS))
    assert (address["name"], address["phone"], address["line1"]) == (
        "王小明",
        "+8613812341234",
        "文三路100号",
    )
    # And the ciphertext is still kept for the platform's other APIs; no hold was needed
    assert {k: address[f"platform_ciphertext_{k}"] for k in pinduoduo.ENCRYPTED_FIELDS} == {
        k: sent[k] for k in pinduoduo.ENCRYPTED_FIELDS
    }
    assert cases == []


async def test_a_refused_decrypt_creates_the_order_held_with_its_ciphertext(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given a shop whose decrypt quota is spent (the service answers an error_response)
    await _account(db, url, decrypt="pop")
    state.pdd.decrypt_denied = True
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=10))
    sent = state.pdd.orders[ORDER_SN]
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    # Then the order is not lost: it is created, held by a blocking address_not_decrypted case
    assert outcome.complete and (outcome.result.created, outcome.result.held) == (1, 1)
    assert (outcome.decrypted, outcome.undecrypted) == (0, 1)
    order, cases = await _order_and_cases(db)
    assert order.status == "paid"
    assert [(c.type, c.status, c.blocking) for c in cases] == [
        ("address_not_decrypted", "open", True)
    ]
    assert cases[0].detail["error"] == "pinduoduo error 20031: 用户没有授权访问此接口"
    assert cases[0].detail["fields"] == sorted(pinduoduo.ENCRYPTED_FIELDS)
    # And it keeps the masks for display and the ciphertext for a later decryption
    address = orjson.loads(get_cipher().decrypt(order.shipping_address_enc, PII_ADDRESS))
    assert (address["name"], address["phone"], address["line1"]) == (
        "王**",
        "138****1234",
        "文三路***号",
    )
    assert address["platform_ciphertext_receiver_phone"] == sent["receiver_phone"]


async def test_one_ciphertext_the_service_cannot_read_holds_only_its_order(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given two orders, the second with a ciphertext the service does not know
    await _account(db, url, decrypt="pop")
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=12))
    state.pdd.add("261120-000000000000008", NOW - timedelta(minutes=10))
    state.pdd.orders["261120-000000000000008"]["receiver_phone"] = "$bm90LWtub3du$AgAAAA==$0$$"
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    # Then both are created; only the second is held
    assert outcome.result.created == 2 and (outcome.decrypted, outcome.undecrypted) == (4, 1)
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(SalesOrder.external_id, ExceptionCase.type)
            .join(ExceptionCase, ExceptionCase.order_id == SalesOrder.id, isouter=True)
            .order_by(SalesOrder.external_id)
        )
        held = [tuple(r) for r in rows.all()]
    assert held == [(ORDER_SN, None), ("261120-000000000000008", "address_not_decrypted")]


async def test_the_merchants_relay_is_called_when_configured(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given an account whose decrypt service is the merchant's relay inside Pinduoduo's cloud
    await _account(db, url, decrypt="hook", decrypt_url=f"{url}/decrypt-relay")
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=10))
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    # Then the relay answered the decrypt call and the order holds the plaintext
    assert (state.pdd.relay_calls, state.pdd.decrypt_calls) == (1, 1)
    assert outcome.decrypted == 4
    order, cases = await _order_and_cases(db)
    assert get_cipher().decrypt(order.customer_phone_enc, PII_PHONE) == "+8613812341234"
    assert cases == []


async def test_no_decrypt_service_by_default(db: Database, sim: tuple[str, ChannelSim]) -> None:
    url, state = sim
    # Given an account with no decrypt service configured (Pinduoduo answers the decrypt API
    # only inside its own cloud)
    await _account(db, url)
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=10))
    # When it syncs, nothing is asked and nothing is held: masks and ciphertext as sent
    outcome = await sync.sync_account(db, "pdd_a")
    assert state.pdd.decrypt_calls == 0 and outcome.result.held == 0
    order, cases = await _order_and_cases(db)
    assert get_cipher().decrypt(order.customer_phone_enc, PII_PHONE) == "138****1234"
    assert cases == []


async def test_a_held_recipient_is_decrypted_later_and_its_hold_resolved(
    db: Database, sim: tuple[str, ChannelSim], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    url, state = sim
    # Given an order created held because the shop's decrypt quota was spent
    await _account(db, url, decrypt="pop")
    state.pdd.decrypt_denied = True
    state.pdd.add(ORDER_SN, NOW - timedelta(minutes=10))
    await sync.sync_account(db, "pdd_a")
    before, cases = await _order_and_cases(db)
    assert [(c.type, c.status) for c in cases] == [("address_not_decrypted", "open")]
    # When the quota is back and the account's held recipients are decrypted over HTTP
    state.pdd.decrypt_denied = False
    in_use: list[int] = []
    state.pdd.on_decrypt = lambda: in_use.append(_checked_out(db))
    response = await client.post("/api/v1/channels/pdd_a/decrypt", headers=auth(keys["admin"]))
    assert response.status_code == 200, response.text
    # Then the order has its recipient (asked with no transaction open) and its hold resolved
    assert response.json()["orders"] == [
        {"order_no": before.order_no, "status": "decrypted", "error": None}
    ]
    assert in_use == [0]
    after, cases = await _order_and_cases(db)
    assert [(c.type, c.status) for c in cases] == [("address_not_decrypted", "resolved")]
    cipher = get_cipher()
    assert cipher.decrypt(after.customer_phone_enc, PII_PHONE) == "+8613812341234"
    assert after.customer_phone_bidx == cipher.blind_index("+8613812341234", "phone")
    address = orjson.loads(cipher.decrypt(after.shipping_address_enc, PII_ADDRESS))
    assert (address["name"], address["line1"]) == ("王小明", "文三路100号")
    # And what is shown did not change; the change is in the order's audit trail
    assert (after.ship_name_masked, after.customer_phone_masked) == (
        before.ship_name_masked,
        before.customer_phone_masked,
    )
    async with db.transaction(write=False) as session:
        events = list(
            await session.scalars(select(OrderEvent.event).where(OrderEvent.order_id == after.id))
        )
    assert events.count("set_recipient") == 1
    # And asking again finds nothing held
    again = await client.post("/api/v1/channels/pdd_a/decrypt", headers=auth(keys["admin"]))
    assert again.json() == {"orders": []}


async def test_orders_added_over_the_control_endpoint_are_pulled_each_with_its_buyer(
    db: Database, sim: tuple[str, ChannelSim]
) -> None:
    url, state = sim
    # Given two orders added over the simulator's control endpoint (as the drill adds them),
    # each with a buyer of its own, and a bad one refused
    await _account(db, url, decrypt="pop")
    async with httpx.AsyncClient(base_url=url) as control:
        for n, phone in ((8, "13900000008"), (9, "13900000009")):
            added = await control.post(
                "/sim/pinduoduo/orders",
                json={
                    "order_sn": f"261120-00000000000000{n}",
                    "updated_at": (NOW - timedelta(minutes=10)).isoformat(),
                    "phone": phone,
                    "quantity": 2,
                },
            )
            assert added.json()["order_sn"] == f"261120-00000000000000{n}"
        refused = await control.post(
            "/sim/pinduoduo/orders", json={"order_sn": "x", "phone": "139****0001"}
        )
    assert "error" in refused.json() and len(state.pdd.orders) == 2
    assert state.pdd.orders["261120-000000000000008"]["receiver_phone_mask"] == "139****0008"
    # When the account syncs
    outcome = await sync.sync_account(db, "pdd_a")
    # Then both orders are created, each with its own decrypted phone
    assert (outcome.result.created, outcome.decrypted) == (2, 8)
    async with db.transaction(write=False) as session:
        orders = list(await session.scalars(select(SalesOrder).order_by(SalesOrder.external_id)))
    cipher = get_cipher()
    assert [cipher.decrypt(o.customer_phone_enc, PII_PHONE) for o in orders] == [
        "+8613900000008",
        "+8613900000009",
    ]
    assert [o.ship_phone_masked for o in orders] == ["139****0008", "139****0009"]
