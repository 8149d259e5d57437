"""Callbacks over real HTTP against a running server, with messages built by the simulator:
valid ones stored, acknowledged and applied once; duplicates absorbed; forged, stale, replayed
and misaddressed ones refused and counted."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events import dispatcher
from ordertally.orders.models import OrderEvent, SalesOrder
from ordertally.payments import consumers  # noqa: F401  (registers the apply consumer)
from ordertally.payments.metrics import CALLBACKS
from ordertally.payments.models import Payment, PaymentNotification
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator import messages
from tests.conftest import LiveServer
from tests.factories import make_order
from tests.payments.helpers import cases, count, make_attempt, order_state

pytestmark = pytest.mark.anyio

OUTCOMES = (
    "accepted",
    "duplicate",
    "bad_signature",
    "unknown_serial",
    "probe",
    "stale",
    "replay",
    "mismatch",
    "malformed",
    "not_configured",
)


@pytest.fixture
def keys(sim: sim_keys.SimKeys) -> sim_keys.SimKeys:
    """Both providers configured with the simulator's test keys (tests/payments/conftest.py)."""
    return sim


def metric(provider: str) -> dict[str, float]:
    return {o: CALLBACKS.labels(provider, o)._value.get() for o in OUTCOMES}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(after[k] - before[k]) for k in after if after[k] != before[k]}


@dataclass
class Call:
    provider: str
    kind: str
    headers: dict[str, str]
    body: bytes


def wechat(keys: sim_keys.SimKeys, kind: str, headers: dict[str, str], body: bytes) -> Call:
    return Call("wechatpay", kind, headers, body)


def alipay(kind: str, form: dict[str, str]) -> Call:
    body = httpx.QueryParams(form).__str__().encode()
    return Call("alipay", kind, {"Content-Type": "application/x-www-form-urlencoded"}, body)


async def _send(server: LiveServer, calls: list[Call], parallel: int) -> list[httpx.Response]:
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

        async def one(call: Call) -> httpx.Response:
            async with gate:
                return await client.post(
                    f"/callbacks/{call.provider}", content=call.body, headers=call.headers
                )

        return list(await asyncio.gather(*(one(c) for c in calls)))


async def _attempts(db: Database, n: int, provider: str) -> list[Payment]:
    return [await make_attempt(db, await make_order(db), provider) for _ in range(n)]


def _tamper(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["summary"] = "支付成功!"
    return orjson.dumps(doc)


async def test_the_callback_proof_in_small(
    db: Database, live_server: LiveServer, keys: sim_keys.SimKeys
) -> None:
    # Given 100 attempts to be paid (half WeChat, half Alipay) and 5 to be paid wrongly
    wx = await _attempts(db, 50, "wechatpay")
    ali = await _attempts(db, 50, "alipay")
    wrong = await _attempts(db, 5, "wechatpay")
    calls: list[Call] = []
    originals: list[tuple[Payment, dict[str, Any], str]] = []
    for p in wx:
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
        nid = f"N-{p.out_trade_no}"
        h, b = messages.wechat_notification(keys, txn, notification_id=nid)
        calls.append(wechat(keys, "valid", h, b))
        originals.append((p, txn, nid))
    alipay_forms = []
    for p in ali:
        form = messages.alipay_notification(keys, p.out_trade_no, messages.yuan(p.amount_minor))
        calls.append(alipay("valid", form))
        alipay_forms.append(form)
    # 60 duplicates: WeChat resends (same notification id, signed afresh), Alipay resends as-is
    for _, txn, nid in originals[:30]:
        h, b = messages.wechat_notification(keys, txn, notification_id=nid)
        calls.append(wechat(keys, "duplicate", h, b))
    calls += [alipay("duplicate", form) for form in alipay_forms[:30]]
    # 40 forged: bad signature, unknown serial, tampered body, signature probes
    for p in wx[:10]:
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
        h, b = messages.wechat_notification(keys, txn, sign_key=messages.forger_key())
        calls.append(wechat(keys, "forged", h, b))
        h, b = messages.wechat_notification(keys, txn, serial="DEADBEEF" * 5)
        calls.append(wechat(keys, "forged", h, b))
        h, b = messages.wechat_notification(keys, txn)
        calls.append(wechat(keys, "forged", h, _tamper(b)))
        calls.append(wechat(keys, "forged", messages.wechat_probe_headers(keys, b), b))
    # 20 misaddressed or mis-paid: amount, mchid, appid (WeChat), seller (Alipay)
    for p in wrong:
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor - 1)
        calls.append(wechat(keys, "wrong_amount", *messages.wechat_notification(keys, txn)))
    for p in wx[10:15]:
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor, mchid="1900000999")
        calls.append(wechat(keys, "mismatch", *messages.wechat_notification(keys, txn)))
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor, appid="wx0000")
        calls.append(wechat(keys, "mismatch", *messages.wechat_notification(keys, txn)))
    for p in ali[:5]:
        form = messages.alipay_notification(
            keys, p.out_trade_no, messages.yuan(p.amount_minor), seller_id="2088999999999999"
        )
        calls.append(alipay("mismatch", form))
    # 20 stale: signed 10 minutes ago
    stale_at = int(clock.now().timestamp()) - messages.STALE_SECONDS
    for p in wx[15:35]:
        txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
        calls.append(
            wechat(keys, "stale", *messages.wechat_notification(keys, txn, timestamp=stale_at))
        )
    random.Random(7).shuffle(calls)
    # Duplicates must arrive after the first copy has been stored for "duplicate" to be exact
    first = [c for c in calls if c.kind != "duplicate"]
    later = [c for c in calls if c.kind == "duplicate"]
    before = {p: metric(p) for p in ("wechatpay", "alipay")}

    # When they are sent over HTTP, up to 20 at a time
    responses = await _send(live_server, first, 20) + await _send(live_server, later, 20)

    # Then every valid one (and each duplicate) was acknowledged the way its platform expects
    by_kind: dict[str, Counter[tuple[str, int, bytes]]] = {}
    for call, response in zip([*first, *later], responses, strict=True):
        by_kind.setdefault(call.kind, Counter())[
            (call.provider, response.status_code, response.content[:7])
        ] += 1
    assert by_kind["valid"] == {("wechatpay", 204, b""): 50, ("alipay", 200, b"success"): 50}
    assert by_kind["duplicate"] == {("wechatpay", 204, b""): 30, ("alipay", 200, b"success"): 30}
    assert by_kind["wrong_amount"] == {("wechatpay", 204, b""): 5}
    assert by_kind["forged"] == {("wechatpay", 401, b'{"code"'): 40}
    assert by_kind["stale"] == {("wechatpay", 401, b'{"code"'): 20}
    assert by_kind["mismatch"] == {("wechatpay", 400, b'{"code"'): 10, ("alipay", 400, b"fail"): 5}
    # And counted by outcome
    assert delta(before["wechatpay"], metric("wechatpay")) == {
        "accepted": 55,
        "duplicate": 30,
        "bad_signature": 20,
        "unknown_serial": 10,
        "probe": 10,
        "stale": 20,
        "mismatch": 10,
    }
    assert delta(before["alipay"], metric("alipay")) == {
        "accepted": 50,
        "duplicate": 30,
        "mismatch": 5,
    }
    # And the inbox holds the accepted ones plus the signed-but-misaddressed ones
    assert (
        await count(db, PaymentNotification, PaymentNotification.verification == "verified") == 105
    )
    assert (
        await count(db, PaymentNotification, PaymentNotification.verification == "rejected") == 15
    )

    # When the worker applies the inbox
    await dispatcher.drain(db, get_settings())

    # Then exactly the 100 paid orders are paid, once each, by the payment callback
    async with db.transaction(write=False) as session:
        statuses = Counter((await session.scalars(select(SalesOrder.status))).all())
        paid_events = (
            await session.scalars(select(OrderEvent).where(OrderEvent.event == "payment_succeeded"))
        ).all()
    assert statuses == {"paid": 100, "pending_payment": 5}
    assert len(paid_events) == 100
    assert {e.actor_kind for e in paid_events} == {"payment_callback"}
    assert len({e.order_id for e in paid_events}) == 100
    assert await count(db, PaymentNotification, PaymentNotification.outcome == "paid") == 100
    assert len(await cases(db, "amount_mismatch")) == 5
    assert [await order_state(db, p.order_no) for p in wrong] == [("pending_payment", 1)] * 5


async def test_a_replayed_notification_is_refused(
    db: Database, live_server: LiveServer, keys: sim_keys.SimKeys
) -> None:
    [p] = await _attempts(db, 1, "wechatpay")
    txn = messages.wechat_transaction(keys, p.out_trade_no, p.amount_minor)
    headers, body = messages.wechat_notification(keys, txn)
    before = metric("wechatpay")
    first, again = [
        (await _send(live_server, [wechat(keys, "x", headers, body)], 1))[0] for _ in range(2)
    ]
    assert (first.status_code, again.status_code) == (204, 401)
    assert again.json() == {"code": "FAIL", "message": "nonce already used"}
    assert delta(before, metric("wechatpay")) == {"accepted": 1, "replay": 1}
    assert await count(db, PaymentNotification) == 1


async def test_a_provider_without_configuration_answers_404(
    db: Database, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, sim_key_dir: Path
) -> None:
    # Given only part of the WeChat settings (never half-on) and none of Alipay's
    loaded = sim_keys.SimKeys.load(sim_key_dir)
    monkeypatch.setenv("ORDERTALLY_WECHATPAY_MCHID", loaded.mchid)
    monkeypatch.setenv("ORDERTALLY_WECHATPAY_APIV3_KEY", loaded.apiv3_key)
    reset_settings()
    [p] = await _attempts(db, 1, "wechatpay")
    txn = messages.wechat_transaction(loaded, p.out_trade_no, p.amount_minor)
    form = messages.alipay_notification(loaded, p.out_trade_no, "1.00")
    wx, ali = await _send(
        live_server,
        [wechat(loaded, "x", *messages.wechat_notification(loaded, txn)), alipay("x", form)],
        1,
    )
    assert (wx.status_code, ali.status_code, ali.content) == (404, 404, b"fail")
    assert await count(db, PaymentNotification) == 0


async def test_a_rotated_platform_key_is_picked_up(
    db: Database, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a key set whose platform key rotates after ordertally loaded it
    old = sim_keys.generate(tmp_path, "http://127.0.0.1:9")
    for name, value in old.settings_env().items():
        monkeypatch.setenv(name, value)
    reset_settings()
    attempts = await _attempts(db, 2, "wechatpay")
    first = messages.wechat_transaction(old, attempts[0].out_trade_no, attempts[0].amount_minor)
    assert (
        await _send(live_server, [wechat(old, "x", *messages.wechat_notification(old, first))], 1)
    )[0].status_code == 204
    new = sim_keys.rotate_platform_key(tmp_path)
    assert new.platform_serial != old.platform_serial
    # When the platform signs with the new key: accepted (the directory is read again)
    second = messages.wechat_transaction(new, attempts[1].out_trade_no, attempts[1].amount_minor)
    [response] = await _send(
        live_server, [wechat(new, "x", *messages.wechat_notification(new, second))], 1
    )
    assert response.status_code == 204
    # And the retired key still verifies during the overlap
    retired = new.retired_platform_keys[old.platform_serial]
    h, b = messages.wechat_notification(
        new, second, serial=old.platform_serial, sign_key=retired, notification_id="N-late"
    )
    [late] = await _send(live_server, [wechat(new, "x", h, b)], 1)
    assert late.status_code == 204


async def test_refund_notifications_over_http(
    db: Database, live_server: LiveServer, keys: sim_keys.SimKeys
) -> None:
    # Given a WeChat-paid order and an Alipay-paid order
    [wx] = await _attempts(db, 1, "wechatpay")
    [ali] = await _attempts(db, 1, "alipay")
    txn = messages.wechat_transaction(keys, wx.out_trade_no, wx.amount_minor)
    paid_form = messages.alipay_notification(
        keys, ali.out_trade_no, messages.yuan(ali.amount_minor)
    )
    await _send(
        live_server,
        [wechat(keys, "x", *messages.wechat_notification(keys, txn)), alipay("x", paid_form)],
        2,
    )
    await dispatcher.drain(db, get_settings())
    # When WeChat refunds 10.00 then the rest, and Alipay refunds everything at once
    part = messages.wechat_refund(
        keys, wx.out_trade_no, txn["transaction_id"], wx.amount_minor, 1000, out_refund_no="R-1"
    )
    rest = messages.wechat_refund(
        keys,
        wx.out_trade_no,
        txn["transaction_id"],
        wx.amount_minor,
        wx.amount_minor - 1000,
        out_refund_no="R-2",
    )
    full = messages.alipay_refund_notification(
        keys,
        ali.out_trade_no,
        messages.yuan(ali.amount_minor),
        messages.yuan(ali.amount_minor),
        out_biz_no="B-1",
        trade_no=paid_form["trade_no"],
        gmt_payment=clock.now(),
        fully_refunded=True,
    )
    await _send(
        live_server,
        [wechat(keys, "x", *messages.wechat_notification(keys, part, event_type="REFUND.SUCCESS"))],
        1,
    )
    await dispatcher.drain(db, get_settings())
    assert await order_state(db, wx.order_no) == ("paid", 2)
    responses = await _send(
        live_server,
        [
            wechat(
                keys, "x", *messages.wechat_notification(keys, rest, event_type="REFUND.SUCCESS")
            ),
            alipay("x", full),
        ],
        2,
    )
    assert [r.status_code for r in responses] == [204, 200]
    await dispatcher.drain(db, get_settings())
    # Then both orders are refunded, each exactly for what was paid
    assert await order_state(db, wx.order_no) == ("refunded", 3)
    assert await order_state(db, ali.order_no) == ("refunded", 3)
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(Payment).order_by(Payment.id))).all()
    assert [(p.refunded_minor, p.paid_amount_minor) for p in rows] == [
        (wx.amount_minor, wx.amount_minor),
        (ali.amount_minor, ali.amount_minor),
    ]
