"""Opening a payment through the API against the simulator over real HTTP: the statements the
opening runs (issue 21's drill: payment opening was a third of the API's CPU), and that a retry
reuses the open attempt while another provider opens the next one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ordertally.core.db import Database
from ordertally.core.settings import reset_settings
from ordertally.payments.simulator import keys as sim_keys
from tests.factories import auth, order_body
from tests.payments.test_compensation import simulator  # noqa: F401  (fixture)
from tests.statements import Statements

pytestmark = pytest.mark.anyio


@pytest.fixture
def providers(
    simulator: tuple[str, sim_keys.SimKeys],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """Both providers configured with the simulator's keys and API bases."""
    _, keys = simulator
    for name, value in keys.settings_env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield
    reset_settings()


async def test_opening_reads_the_order_once_and_the_attempts_in_one_statement(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str], providers: None
) -> None:
    # Given an order waiting for payment
    order = await client.post("/api/v1/orders", json=order_body(), headers=auth(keys["ops"]))
    assert order.status_code == 201, order.text
    url = f"/api/v1/orders/{order.json()['order_no']}/payments"
    # When a payment is opened at WeChat Pay
    with Statements(db) as opening:
        first = await client.post(
            url,
            json={"provider": "wechatpay"},
            headers=auth(keys["ops"], **{"Idempotency-Key": "p1"}),
        )
    # Then the attempt is open with the provider's QR code, in few statements: the order read
    # once, the attempts read once, the attempt inserted, the provider's answer stored with the
    # row returned by the same UPDATE
    assert first.status_code == 201, first.text
    doc = first.json()
    assert (doc["out_trade_no"], doc["state"]) == (f"{order.json()['order_no']}P01", "pending")
    assert doc["provider_params"]["code_url"].startswith("weixin://")
    assert len(opening.on("sales_order")) == 1
    payment_statements = opening.on("payment")
    assert [s.split()[0] for s in payment_statements] == ["SELECT", "INSERT", "UPDATE"]
    assert "RETURNING" in payment_statements[2]

    # When the same request comes again without a key, then the open attempt is returned
    with Statements(db) as again:
        retry = await client.post(url, json={"provider": "wechatpay"}, headers=auth(keys["ops"]))
    assert retry.status_code == 200, retry.text
    assert retry.json()["out_trade_no"] == doc["out_trade_no"]
    assert [s.split()[0] for s in again.on("payment")] == ["SELECT", "UPDATE"]

    # When the buyer turns to Alipay, then a second attempt is numbered after the first
    other = await client.post(url, json={"provider": "alipay"}, headers=auth(keys["ops"]))
    assert other.status_code == 201, other.text
    assert other.json()["out_trade_no"] == f"{order.json()['order_no']}P02"
    assert other.json()["provider_params"]["qr_code"]
