"""The simulator over real HTTP on 127.0.0.1: its APIs driven by the platforms' own SDKs
(wechatpayv3, python-alipay-sdk), and its notifications received by a small server that checks
them with those SDKs, answers as scripted and records when each attempt arrived."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from alipay import AliPay
from fastapi import FastAPI, Request, Response
from wechatpayv3 import WeChatPay, WeChatPayType

from ordertally.core import clock
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator import messages
from ordertally.payments.simulator.app import create_sim_app
from ordertally.payments.simulator.keys import SimKeys
from ordertally.simkit.server import serve

SCALE = 1000.0  # WeChat Pay's 15 s retry becomes 15 ms
# The platforms' documented schedules (seconds between attempts), written out, not imported.
WECHAT_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800)
WECHAT_SCHEDULE += (21600, 21600)
ALIPAY_SCHEDULE = (240, 600, 600, 3600, 7200, 21600, 54000)


def wechatpay_sdk(keys: SimKeys, base: str, notify_url: str = "") -> Any:
    client = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=keys.merchant_private_pem(),
        cert_serial_no=keys.merchant_serial,
        appid=keys.appid,
        apiv3_key=keys.apiv3_key,
        notify_url=notify_url,
        public_key=keys.platform_public_pem(),
        public_key_id=keys.platform_serial,
    )
    client._core._gate_way = base
    client._core._update_certificates = lambda: None
    return client


def alipay_sdk(keys: SimKeys, base: str, app_private_pem: str | None = None) -> AliPay:
    client = AliPay(
        appid=keys.alipay_app_id,
        app_notify_url=None,
        app_private_key_string=app_private_pem or keys.app_private_pem(),
        alipay_public_key_string=keys.alipay_public_pem(),
        sign_type="RSA2",
    )
    client._gateway = f"{base}/gateway.do"
    return client


@dataclass
class Arrival:
    at: float
    provider: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    fresh: bool
    document: dict[str, Any] | None


@dataclass
class Receiver:
    """A stand-in for ordertally's callback endpoints: it verifies with the SDKs, answers from
    a script (then the platform's success) and records every arrival."""

    keys: SimKeys
    script: list[tuple[int, str]] = field(default_factory=list)
    answer_bad: tuple[int, str] = (401, '{"code":"FAIL","message":"签名错误"}')
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    hanging: int = 0

    def reset(self, script: list[tuple[int, str]] | None = None) -> None:
        with self.lock:
            self.script = list(script or [])
            self.arrivals.clear()

    @functools.cached_property
    def wechatpay(self) -> Any:
        return wechatpay_sdk(self.keys, "http://127.0.0.1:9")

    @functools.cached_property
    def alipay(self) -> AliPay:
        return alipay_sdk(self.keys, "http://127.0.0.1:9")

    def _check(self, provider: str, headers: dict[str, str], body: bytes) -> Arrival:
        at = time.monotonic()
        if provider == "wechatpay":
            doc = self.wechatpay.callback(headers, body)
            skew = abs(time.time() - int(headers.get("wechatpay-timestamp", "0")))
            return Arrival(at, provider, headers, body, doc is not None, skew < 300, doc)
        fields = dict(parse_qsl(body.decode()))
        data = dict(fields)
        ok = bool(self.alipay.verify(data, data.pop("sign", "")))
        sent = datetime.strptime(fields.get("notify_time", ""), "%Y-%m-%d %H:%M:%S")
        now = clock.now().astimezone(messages.BEIJING).replace(tzinfo=None)
        fresh = abs((now - sent).total_seconds()) < 300
        return Arrival(at, provider, headers, body, ok, fresh, fields)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hang/{provider}")
        async def hang(provider: str) -> Response:
            with self.lock:
                self.hanging += 1
            await asyncio.sleep(2)
            return Response(status_code=500)

        @app.post("/callbacks/{provider}")
        async def callback(provider: str, request: Request) -> Response:
            arrival = self._check(provider, dict(request.headers), await request.body())
            with self.lock:
                self.arrivals.append(arrival)
                if not (arrival.verified and arrival.fresh):
                    status, text = self.answer_bad
                elif self.script:
                    status, text = self.script.pop(0)
                else:
                    status, text = (204, "") if provider == "wechatpay" else (200, "success")
            return Response(content=text, status_code=status)

        return app

    def wait(self, n: int, within: float = 10.0) -> list[Arrival]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.arrivals) >= n:
                    return list(self.arrivals)
            time.sleep(0.005)
        with self.lock:
            raise AssertionError(f"{len(self.arrivals)} arrivals, expected {n}")

    def settle(self, quiet: float) -> list[Arrival]:
        """The arrivals once nothing more came for `quiet` seconds."""
        time.sleep(quiet)
        with self.lock:
            return list(self.arrivals)


@dataclass
class Sim:
    url: str
    keys: SimKeys
    http: httpx.Client
    receiver: Receiver

    def control(self, path: str, **body: Any) -> Any:
        response = self.http.post(f"/sim/{path}", json=body)
        assert response.status_code < 300, response.text
        return response.json()

    def open(self, provider: str, out_trade_no: str, amount: int) -> dict[str, Any]:
        return self.control(
            "payments",
            provider=provider,
            out_trade_no=out_trade_no,
            amount=amount,
            notify_url=f"{self.receiver.url}/callbacks/{provider}",
        )

    def deliveries(self, out_trade_no: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.http.get(
            "/sim/deliveries", params={"out_trade_no": out_trade_no}
        ).json()
        return rows

    def payment(self, provider: str, out_trade_no: str) -> dict[str, Any]:
        rows = self.http.get(
            "/sim/payments", params={"provider": provider, "out_trade_no": out_trade_no}
        ).json()
        assert len(rows) == 1
        return dict(rows[0])

    def idle(self, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while self.http.get("/sim/status").json()["pending_deliveries"]:
            assert time.monotonic() < deadline, "deliveries still under way"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SimKeys:
    return sim_keys.generate(tmp_path_factory.mktemp("paysim"), "http://127.0.0.1:8900")


@pytest.fixture(scope="module")
def receiver(keys: SimKeys) -> Iterator[Receiver]:
    rec = Receiver(keys)
    with serve(rec.app()) as url:
        rec.url = url
        yield rec


@pytest.fixture(scope="module")
def sim_server(keys: SimKeys) -> Iterator[str]:
    with serve(create_sim_app(keys, time_scale=SCALE)) as url:
        yield url


@pytest.fixture
def sim(sim_server: str, keys: SimKeys, receiver: Receiver) -> Iterator[Sim]:
    with httpx.Client(base_url=sim_server, trust_env=False, timeout=10) as http:
        http.post("/sim/reset").raise_for_status()
        # A request the reset cut short may still be landing at the receiver: let it land.
        receiver.reset()
        while receiver.settle(quiet=0.05):
            receiver.reset()
        yield Sim(sim_server, keys, http, receiver)
        http.post("/sim/reset").raise_for_status()


def _gaps(arrivals: list[Arrival]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(arrivals)]


def _assert_schedule(gaps: list[float], expected: tuple[int, ...], scale: float = SCALE) -> None:
    for gap, seconds in zip(gaps, expected, strict=True):
        wanted = seconds / scale
        assert wanted * 0.9 <= gap <= wanted + 0.1, (gaps, expected)


# --- the platforms' APIs, driven by their SDKs -------------------------------------------------


def test_wechat_api_native_query_close_refund_with_wechatpayv3(sim: Sim) -> None:
    # Given the SDK pointed at the simulator (it verifies every answer's signature itself)
    sdk = wechatpay_sdk(sim.keys, sim.url, f"{sim.receiver.url}/callbacks/wechatpay")
    # When a Native order is opened
    status, text = sdk.pay(
        description="测试订单", out_trade_no="OT2611230001P01", amount={"total": 1234}
    )
    assert status == 200
    assert json.loads(text)["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    # Then it is unpaid until the buyer pays
    status, text = sdk.query(out_trade_no="OT2611230001P01")
    assert (status, json.loads(text)["trade_state"]) == (200, "NOTPAY")
    assert "transaction_id" not in json.loads(text)
    paid = sim.control("pay", provider="wechatpay", out_trade_no="OT2611230001P01")
    status, text = sdk.query(out_trade_no="OT2611230001P01")
    doc = json.loads(text)
    assert doc["trade_state"] == "SUCCESS"
    assert doc["transaction_id"] == paid["trade_no"]
    assert doc["amount"]["total"] == doc["amount"]["payer_total"] == 1234
    assert (doc["appid"], doc["mchid"]) == (sim.keys.appid, sim.keys.mchid)
    # And a paid order cannot be closed; an unpaid one can
    assert sdk.close(out_trade_no="OT2611230001P01")[0] == 400
    sdk.pay(description="x", out_trade_no="OT2611230002P01", amount={"total": 500})
    assert sdk.close(out_trade_no="OT2611230002P01")[0] == 204
    assert json.loads(sdk.query(out_trade_no="OT2611230002P01")[1])["trade_state"] == "CLOSED"
    # And a refund turns the trade into REFUND
    sim.control("refund", provider="wechatpay", out_trade_no="OT2611230001P01", amount=234)
    assert json.loads(sdk.query(out_trade_no="OT2611230001P01")[1])["trade_state"] == "REFUND"
    # And an unknown trade is 404 ORDER_NOT_EXIST
    status, text = sdk.query(out_trade_no="OT2611239999P01")
    assert (status, json.loads(text)["code"]) == (404, "ORDER_NOT_EXIST")


def test_wechat_api_refuses_bad_merchant_signatures(sim: Sim) -> None:
    body = messages.compact_json(
        {
            "appid": sim.keys.appid,
            "mchid": sim.keys.mchid,
            "description": "demo",
            "out_trade_no": "OT2611230003P01",
            "notify_url": f"{sim.receiver.url}/callbacks/wechatpay",
            "amount": {"total": 100, "currency": "CNY"},
        }
    )
    path = "/v3/pay/transactions/native"

    def post(authorization: str, content: str = body) -> httpx.Response:
        return sim.http.post(
            path,
            content=content.encode(),
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )

    tampered = body.replace('"total":100', '"total":1')
    refused = [
        post(messages.wechat_authorization(sim.keys, "POST", path, body), tampered),
        post(
            messages.wechat_authorization(
                sim.keys, "POST", path, body, sign_key=messages.forger_key()
            )
        ),
        post(messages.wechat_authorization(sim.keys, "GET", path, body)),
        post(""),
    ]
    for response in refused:
        assert response.status_code == 401
        assert response.json()["code"] == "SIGN_ERROR"
        # even refusals are signed by the platform
        assert messages.verify_wechat_headers(
            sim.keys.platform_public, response.headers, response.content
        )
    assert sim.http.get("/sim/payments").json() == []
    good = post(messages.wechat_authorization(sim.keys, "POST", path, body))
    assert good.status_code == 200
    assert messages.verify_wechat_headers(sim.keys.platform_public, good.headers, good.content)
    assert len(sim.http.get("/sim/payments").json()) == 1


def test_alipay_gateway_precreate_query_close_refund_with_the_sdk(sim: Sim) -> None:
    sdk = alipay_sdk(sim.keys, sim.url)
    notify_url = f"{sim.receiver.url}/callbacks/alipay"
    created = sdk.api_alipay_trade_precreate(
        subject="测试", out_trade_no="OT2611230004P01", total_amount="12.34", notify_url=notify_url
    )
    assert created["code"] == "10000" and created["qr_code"].startswith("https://qr.alipay.com/")
    assert sdk.api_alipay_trade_query(out_trade_no="OT2611230004P01")["trade_status"] == (
        "WAIT_BUYER_PAY"
    )
    sim.control("pay", provider="alipay", out_trade_no="OT2611230004P01")
    paid = sdk.api_alipay_trade_query(out_trade_no="OT2611230004P01")
    assert (paid["trade_status"], paid["total_amount"], paid["buyer_pay_amount"]) == (
        "TRADE_SUCCESS",
        "12.34",
        "12.34",
    )
    assert len(paid["send_pay_date"]) == len("2026-11-23 10:00:00")
    missing = sdk.api_alipay_trade_query(out_trade_no="OT2611239999P01")
    assert (missing["code"], missing["msg"], missing["sub_code"]) == (
        "40004",
        "Business Failed",
        "ACQ.TRADE_NOT_EXIST",
    )
    # A partial refund keeps TRADE_SUCCESS, the rest of it closes the trade
    sim.control("refund", provider="alipay", out_trade_no="OT2611230004P01", amount=234)
    assert sdk.api_alipay_trade_query(out_trade_no="OT2611230004P01")["trade_status"] == (
        "TRADE_SUCCESS"
    )
    sim.control("refund", provider="alipay", out_trade_no="OT2611230004P01", amount=1000)
    assert sdk.api_alipay_trade_query(out_trade_no="OT2611230004P01")["trade_status"] == (
        "TRADE_CLOSED"
    )
    # Closing an unpaid trade
    sdk.api_alipay_trade_precreate(subject="x", out_trade_no="OT2611230005P01", total_amount="1.00")
    assert sdk.server_api("alipay.trade.close", {"out_trade_no": "OT2611230005P01"})["code"] == (
        "10000"
    )
    assert sdk.api_alipay_trade_query(out_trade_no="OT2611230005P01")["trade_status"] == (
        "TRADE_CLOSED"
    )
    # A request signed with another app key is refused and creates nothing
    wrong = alipay_sdk(
        sim.keys, sim.url, sim_keys.private_pem(messages.forger_key()).decode()
    ).api_alipay_trade_precreate(subject="x", out_trade_no="OT2611230006P01", total_amount="1.00")
    assert (wrong["code"], wrong["sub_code"]) == ("40002", "isv.invalid-signature")
    assert sim.http.get("/sim/payments", params={"out_trade_no": "OT2611230006P01"}).json() == []


def test_a_trade_unpaid_at_its_time_expire_is_closed_and_cannot_be_paid(sim: Sim) -> None:
    # Given trades opened by both SDKs with time_expire in each platform's own format: WeChat
    # Pay's RFC 3339 with the +08:00 offset (its documented example 2018-06-08T10:34:56+08:00),
    # Alipay's yyyy-MM-dd HH:mm:ss in Beijing time (the format independent SDKs document)
    beijing = clock.now().astimezone(messages.BEIJING)
    past, future = beijing - timedelta(seconds=5), beijing + timedelta(hours=1)
    wechat = wechatpay_sdk(sim.keys, sim.url, f"{sim.receiver.url}/callbacks/wechatpay")
    for no, at in (("OT2612050001P01", past), ("OT2612050002P01", future)):
        status, _ = wechat.pay(
            description="限时订单",
            out_trade_no=no,
            amount={"total": 100},
            time_expire=at.isoformat(timespec="seconds"),
        )
        assert status == 200
    alipay = alipay_sdk(sim.keys, sim.url)
    for no, at in (("OT2612050003P01", past), ("OT2612050004P01", future)):
        created = alipay.api_alipay_trade_precreate(
            subject="限时订单",
            out_trade_no=no,
            total_amount="1.00",
            time_expire=at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        assert created["code"] == "10000"
    # Then the trade past its expiry is closed, at the platform's query and for the buyer
    assert json.loads(wechat.query(out_trade_no="OT2612050001P01")[1])["trade_state"] == "CLOSED"
    assert alipay.api_alipay_trade_query(out_trade_no="OT2612050003P01")["trade_status"] == (
        "TRADE_CLOSED"
    )
    for provider, no in (("wechatpay", "OT2612050001P01"), ("alipay", "OT2612050003P01")):
        refused = sim.http.post("/sim/pay", json={"provider": provider, "out_trade_no": no})
        assert refused.status_code == 409, refused.text
    # And the one still within its time pays as usual
    sim.control("pay", provider="wechatpay", out_trade_no="OT2612050002P01")
    sim.control("pay", provider="alipay", out_trade_no="OT2612050004P01")
    assert json.loads(wechat.query(out_trade_no="OT2612050002P01")[1])["trade_state"] == "SUCCESS"
    assert alipay.api_alipay_trade_query(out_trade_no="OT2612050004P01")["trade_status"] == (
        "TRADE_SUCCESS"
    )
    # And a malformed time_expire is refused, creating nothing
    status, text = wechat.pay(
        description="x",
        out_trade_no="OT2612050005P01",
        amount={"total": 100},
        time_expire="2026-12-05 10:00:00",
    )
    assert (status, json.loads(text)["code"]) == (400, "PARAM_ERROR")
    bad = alipay.api_alipay_trade_precreate(
        subject="x", out_trade_no="OT2612050006P01", total_amount="1.00", time_expire="soon"
    )
    assert (bad["code"], bad["sub_code"]) == ("40002", "isv.invalid-parameter")
    for no in ("OT2612050005P01", "OT2612050006P01"):
        assert sim.http.get("/sim/payments", params={"out_trade_no": no}).json() == []


# --- notifications ------------------------------------------------------------------------------


def test_wechat_notification_follows_the_retry_schedule_and_stops_on_success(sim: Sim) -> None:
    # Given ordertally failing four times, then answering 204
    sim.receiver.reset([(500, '{"code":"FAIL","message":"失败"}')] * 3 + [(503, "")])
    sim.open("wechatpay", "OT2611230010P01", 8800)
    # When the buyer pays
    paid = sim.control("pay", provider="wechatpay", out_trade_no="OT2611230010P01")
    # Then five attempts arrive at 0, 15, 30, 60, 240 (ms, scaled) and no more after success
    sim.receiver.wait(5)
    arrivals = sim.receiver.settle(quiet=1.0)
    assert len(arrivals) == 5
    _assert_schedule(_gaps(arrivals), WECHAT_SCHEDULE[:4])
    # And every attempt is the same notification, accepted by wechatpayv3, freshly signed
    assert all(a.verified and a.fresh for a in arrivals)
    documents = [a.document or {} for a in arrivals]
    assert {d["id"] for d in documents} == {documents[0]["id"]}
    resource = documents[0]["resource"]
    assert (resource["out_trade_no"], resource["transaction_id"]) == (
        "OT2611230010P01",
        paid["trade_no"],
    )
    assert resource["amount"]["total"] == 8800
    assert len({a.headers["wechatpay-nonce"] for a in arrivals}) == 5
    # And the simulator recorded each attempt with ordertally's answer
    attempts = sim.deliveries("OT2611230010P01")
    assert [(d["attempt"], d["status"], d["success"]) for d in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 500, False),
        (4, 503, False),
        (5, 204, True),
    ]
    assert sim.payment("wechatpay", "OT2611230010P01")["notifications"] == [
        {"kind": "payment", "state": "delivered", "attempts": 5}
    ]


def test_wechat_retry_gaps_at_a_coarser_scale(keys: SimKeys, receiver: Receiver) -> None:
    # Given a simulator at 1/100 of real time and ordertally failing three times
    receiver.reset([(500, "")] * 3)
    with (
        serve(create_sim_app(keys, time_scale=100)) as url,
        httpx.Client(base_url=url, trust_env=False) as http,
    ):
        trade = {"provider": "wechatpay", "out_trade_no": "OT2611230014P01"}
        notify_url = f"{receiver.url}/callbacks/wechatpay"
        http.post("/sim/payments", json={**trade, "amount": 1, "notify_url": notify_url})
        http.post("/sim/pay", json=trade).raise_for_status()
        arrivals = receiver.wait(4)
    # Then the attempts are 150 ms, 150 ms and 300 ms apart (15 s, 15 s, 30 s scaled)
    _assert_schedule(_gaps(arrivals), WECHAT_SCHEDULE[:3], scale=100)


def test_alipay_wants_exactly_success(sim: Sim) -> None:
    # Given ordertally answering "SUCCESS", then "fail", then exactly "success"
    sim.receiver.reset([(200, "SUCCESS"), (200, "fail")])
    sim.open("alipay", "OT2611230011P01", 1999)
    sim.control("pay", provider="alipay", out_trade_no="OT2611230011P01")
    sim.receiver.wait(3)
    arrivals = sim.receiver.settle(quiet=1.0)
    # Then three attempts at 0, 240, 840 ms (scaled 4 min, 10 min) and none after "success"
    assert len(arrivals) == 3
    _assert_schedule(_gaps(arrivals), ALIPAY_SCHEDULE[:2])
    assert all(a.verified for a in arrivals)
    documents = [a.document or {} for a in arrivals]
    assert {d["notify_id"] for d in documents} == {documents[0]["notify_id"]}
    assert documents[0]["total_amount"] == "19.99"
    assert documents[0]["trade_status"] == "TRADE_SUCCESS"
    assert documents[0]["out_trade_no"] == "OT2611230011P01"
    assert arrivals[0].headers["content-type"].startswith("application/x-www-form-urlencoded")


def test_notifications_give_up_after_the_whole_schedule(keys: SimKeys, receiver: Receiver) -> None:
    # Given a simulator whose day is 0.9 s, and ordertally down (503 forever)
    receiver.reset([(503, "")] * 100)
    with (
        serve(create_sim_app(keys, time_scale=100_000)) as url,
        httpx.Client(base_url=url, trust_env=False) as http,
    ):
        for provider, no in (("wechatpay", "OT2611230012P01"), ("alipay", "OT2611230013P01")):
            http.post(
                "/sim/payments",
                json={
                    "provider": provider,
                    "out_trade_no": no,
                    "amount": 100,
                    "notify_url": f"{receiver.url}/callbacks/{provider}",
                },
            ).raise_for_status()
            http.post(
                "/sim/pay", json={"provider": provider, "out_trade_no": no}
            ).raise_for_status()
        deadline = time.monotonic() + 15
        while http.get("/sim/status").json()["pending_deliveries"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Then WeChat Pay tried 16 times (the first + 15 retries), Alipay 8, then gave up
        assert (len(WECHAT_SCHEDULE), sum(WECHAT_SCHEDULE)) == (15, 24 * 3600 + 4 * 60)
        by_provider = {
            p: [a for a in receiver.arrivals if a.provider == p] for p in ("wechatpay", "alipay")
        }
        assert len(by_provider["wechatpay"]) == 16
        assert len(by_provider["alipay"]) == 8
        states = [p["notifications"][0]["state"] for p in http.get("/sim/payments").json()]
        assert states == ["gave_up", "gave_up"]


def test_dropped_notification_is_still_paid_for_the_query(sim: Sim) -> None:
    # Given the simulator dropping every notification
    sim.control("behaviour", drop_rate=1.0)
    sim.open("wechatpay", "OT2611230020P01", 100)
    sim.open("alipay", "OT2611230021P01", 100)
    sim.control("pay", provider="wechatpay", out_trade_no="OT2611230020P01")
    sim.control("pay", provider="alipay", out_trade_no="OT2611230021P01")
    # Then nothing arrives
    assert sim.receiver.settle(quiet=0.5) == []
    # But both platforms answer "paid" when asked
    wechat = wechatpay_sdk(sim.keys, sim.url)
    assert json.loads(wechat.query(out_trade_no="OT2611230020P01")[1])["trade_state"] == "SUCCESS"
    alipay = alipay_sdk(sim.keys, sim.url)
    assert alipay.api_alipay_trade_query(out_trade_no="OT2611230021P01")["trade_status"] == (
        "TRADE_SUCCESS"
    )
    dropped = sim.deliveries("OT2611230020P01")
    assert [(d["variant"], d["status"]) for d in dropped] == [("dropped", None)]


def test_duplicates_arrive_twice_and_stop_together(sim: Sim) -> None:
    sim.control("behaviour", duplicate_rate=1.0)
    sim.open("wechatpay", "OT2611230030P01", 100)
    sim.control("pay", provider="wechatpay", out_trade_no="OT2611230030P01")
    sim.receiver.wait(2)
    arrivals = sim.receiver.settle(quiet=0.3)
    assert len(arrivals) == 2
    assert arrivals[0].body == arrivals[1].body
    assert all(a.verified for a in arrivals)
    variants = sorted(d["variant"] for d in sim.deliveries("OT2611230030P01"))
    assert variants == ["duplicate", "genuine"]


def test_forged_and_stale_copies_are_refused_by_the_sdks_and_not_retried(sim: Sim) -> None:
    # Given a forger and a replayer next to every genuine notification
    sim.control("behaviour", forge_rate=1.0, stale_rate=1.0)
    sim.open("wechatpay", "OT2611230040P01", 100)
    sim.open("alipay", "OT2611230041P01", 100)
    sim.control("pay", provider="wechatpay", out_trade_no="OT2611230040P01")
    sim.control("pay", provider="alipay", out_trade_no="OT2611230041P01")
    sim.receiver.wait(6)
    sim.idle()
    arrivals = sim.receiver.settle(quiet=0.3)
    assert len(arrivals) == 6
    for no in ("OT2611230040P01", "OT2611230041P01"):
        by_variant = {d["variant"]: d for d in sim.deliveries(no)}
        assert sorted(by_variant) == ["forged", "genuine", "stale"]
        assert by_variant["forged"]["status"] == 401
        assert by_variant["genuine"]["success"] is True
    # The forged copies fail the SDKs' signature checks; the stale ones verify but are old
    wechat = [a for a in arrivals if a.provider == "wechatpay"]
    assert sorted((a.verified, a.fresh) for a in wechat) == [
        (False, True),
        (True, False),
        (True, True),
    ]
    alipay = [a for a in arrivals if a.provider == "alipay"]
    assert sorted((a.verified, a.fresh) for a in alipay) == [
        (False, True),
        (True, False),
        (True, True),
    ]


def test_reorder_delivers_the_newest_first(sim: Sim) -> None:
    sim.control("behaviour", reorder=True, reorder_window_seconds=0.3)
    for no in ("OT2611230050P01", "OT2611230051P01", "OT2611230052P01"):
        sim.open("wechatpay", no, 100)
        sim.control("pay", provider="wechatpay", out_trade_no=no)
    arrivals = sim.receiver.wait(3)
    order = [(a.document or {})["resource"]["out_trade_no"] for a in arrivals]
    assert order == ["OT2611230052P01", "OT2611230051P01", "OT2611230050P01"]


def test_delay_holds_the_first_attempt(sim: Sim) -> None:
    sim.control("behaviour", delay_seconds=0.4)
    sim.open("alipay", "OT2611230060P01", 100)
    paid_at = time.monotonic()
    sim.control("pay", provider="alipay", out_trade_no="OT2611230060P01")
    arrival = sim.receiver.wait(1)[0]
    assert arrival.at - paid_at >= 0.4


def test_refund_notifications(sim: Sim) -> None:
    sim.open("wechatpay", "OT2611230070P01", 1000)
    sim.open("alipay", "OT2611230071P01", 1000)
    sim.control("pay", provider="wechatpay", out_trade_no="OT2611230070P01")
    sim.control("pay", provider="alipay", out_trade_no="OT2611230071P01")
    sim.receiver.wait(2)
    sim.control(
        "refund",
        provider="wechatpay",
        out_trade_no="OT2611230070P01",
        amount=300,
        out_refund_no="RF1",
    )
    sim.control("refund", provider="alipay", out_trade_no="OT2611230071P01", amount=1000)
    arrivals = sim.receiver.wait(4)[2:]
    wechat = next(a for a in arrivals if a.provider == "wechatpay")
    assert wechat.verified and wechat.document is not None
    assert wechat.document["event_type"] == "REFUND.SUCCESS"
    assert wechat.document["resource"]["out_refund_no"] == "RF1"
    assert wechat.document["resource"]["amount"]["refund"] == 300
    alipay = next(a for a in arrivals if a.provider == "alipay")
    assert alipay.verified and alipay.document is not None
    assert (alipay.document["trade_status"], alipay.document["refund_fee"]) == (
        "TRADE_CLOSED",
        "10.00",
    )
    # Refunding more than what is left is refused
    over = sim.http.post(
        "/sim/refund", json={"provider": "alipay", "out_trade_no": "OT2611230071P01", "amount": 1}
    )
    assert over.status_code == 409


def test_control_api_answers_while_ordertally_hangs(sim: Sim) -> None:
    # Given 60 notifications stuck on an ordertally that takes 2 s to answer each
    for i in range(60):
        no = f"OT26112301{i:04d}P01"
        sim.control(
            "payments",
            provider="wechatpay",
            out_trade_no=no,
            amount=100,
            notify_url=f"{sim.receiver.url}/hang/wechatpay",
        )
        sim.control("pay", provider="wechatpay", out_trade_no=no)
    deadline = time.monotonic() + 5
    while sim.receiver.hanging < 50:  # the simulator's concurrency cap
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Then the simulator's own API still answers at once
    started = time.monotonic()
    status = sim.http.get("/sim/status").json()
    query = sim.http.get("/sim/payments", params={"out_trade_no": "OT261123010059P01"}).json()
    assert time.monotonic() - started < 0.5
    assert status["states"] == {"wechatpay:SUCCESS": 60}
    assert status["pending_deliveries"] == 60
    assert query[0]["state"] == "SUCCESS"
