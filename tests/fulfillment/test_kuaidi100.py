"""The Kuaidi100 adapter against the carrier simulator over real HTTP on 127.0.0.1: waybills,
subscriptions, queries, push signs, Beijing time and the state table, outages and refusals."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from ordertally.core import clock
from ordertally.fulfillment.carriers.base import (
    CarrierRejected,
    CarrierUnavailable,
    Party,
    PushRejected,
    Subscription,
    TrackingStatus,
    WaybillRequest,
)
from ordertally.fulfillment.carriers.kuaidi100 import (
    Kuaidi100Adapter,
    compact_json,
    kuaidi100_from_settings,
    parse_beijing_time,
    push_sign,
)
from ordertally.fulfillment.simulator.server import CarrierSimServer
from tests.fulfillment.carrier_receiver import Receiver, serve_receiver

pytestmark = pytest.mark.anyio

SALT = "salt-for-tests"
SENDER = Party("仓库A", "13800000001", "广东省", "深圳市", "南山区", "科技南十二路2号")
RECIPIENT = Party("张三", "13900000002", "上海", "上海市", "浦东新区", "世纪大道100号")


@pytest.fixture
def sim() -> Iterator[CarrierSimServer]:
    with CarrierSimServer() as server:
        yield server


@pytest.fixture
async def adapter(sim: CarrierSimServer) -> AsyncIterator[Kuaidi100Adapter]:
    engine = sim.engine
    kd = Kuaidi100Adapter(
        api_base=sim.url,
        customer=engine.customer,
        key=engine.key,
        salt=SALT,
        secret=engine.secret,
        timeout_seconds=2.0,
    )
    yield kd
    await kd.aclose()


@pytest.fixture
def receiver(adapter: Kuaidi100Adapter) -> Iterator[Receiver]:
    with serve_receiver(adapter) as r:
        yield r


def request(reference: str, company: str = "shunfeng") -> WaybillRequest:
    return WaybillRequest(
        reference=reference,
        company=company,
        sender=SENDER,
        recipient=RECIPIENT,
        items=(("SKU-1", 2), ("SKU-2", 1)),
        weight_grams=1250,
    )


def signed(doc: dict[str, Any], salt: str = SALT) -> dict[str, str]:
    param = compact_json(doc)
    return {"param": param, "sign": push_sign(param, salt)}


def push_doc(state: str, data: list[dict[str, Any]], status: str = "polling") -> dict[str, Any]:
    last = {"message": "ok", "state": state, "ischeck": "0", "com": "zhongtong", "nu": "7123"}
    return {"status": status, "message": "", "lastResult": {**last, "data": data}}


# --- electronic waybill ------------------------------------------------------------------------


async def test_waybill_numbers_follow_company_formats_and_repeat_per_reference(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer
) -> None:
    first = await adapter.create_waybill(request("S1"))
    again = await adapter.create_waybill(request("S1"))
    other = await adapter.create_waybill(request("S2"))
    zto = await adapter.create_waybill(request("S3", "zhongtong"))

    assert re.fullmatch(r"SF\d{12}", first.waybill_no)
    assert first.company == "shunfeng"
    assert again == first
    assert other.waybill_no != first.waybill_no
    assert re.fullmatch(r"7\d{14}", zto.waybill_no)
    assert first.label  # the carrier's task id
    assert len(await sim.waybills()) == 3


async def test_waybill_request_is_signed_and_carries_the_parties(sim: CarrierSimServer) -> None:
    """The raw form, as the label API reads it."""
    kd = Kuaidi100Adapter(
        api_base=sim.url, customer="c", key=sim.engine.key, salt=SALT, secret=sim.engine.secret
    )
    param = kd.waybill_param(request("S9"))
    assert param["recMan"] == {
        "name": "张三",
        "mobile": "13900000002",
        "printAddr": "上海上海市浦东新区世纪大道100号",
    }
    assert param["sendMan"]["printAddr"] == "广东省深圳市南山区科技南十二路2号"
    assert (param["orderId"], param["kuaidicom"], param["count"]) == ("S9", "shunfeng", 3)
    assert param["weight"] == "1.25"
    await kd.aclose()


async def test_waybill_with_a_wrong_secret_is_rejected(sim: CarrierSimServer) -> None:
    kd = Kuaidi100Adapter(api_base=sim.url, customer="c", key=sim.engine.key, salt="s", secret="x")
    with pytest.raises(CarrierRejected) as caught:
        await kd.create_waybill(request("S1"))
    await kd.aclose()
    assert caught.value.code == "403"
    assert await sim.waybills() == []


async def test_waybill_for_an_unknown_company_is_rejected(adapter: Kuaidi100Adapter) -> None:
    with pytest.raises(CarrierRejected) as caught:
        await adapter.create_waybill(request("S1", "nosuchexpress"))
    assert caught.value.code == "400"


# --- subscription ------------------------------------------------------------------------------


async def test_subscribe_then_subscribe_again_is_not_an_error(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer
) -> None:
    waybill = await adapter.create_waybill(request("S1"))
    sub = Subscription("shunfeng", waybill.waybill_no, "http://127.0.0.1:9/cb", phone="13900000002")

    await adapter.subscribe(sub)
    await adapter.subscribe(sub)  # 501 already subscribed

    engine_waybill = sim.engine.find("shunfeng", waybill.waybill_no)
    assert engine_waybill is not None and engine_waybill.subscription is not None
    assert engine_waybill.subscription.salt == SALT
    assert engine_waybill.subscription.callback_url == "http://127.0.0.1:9/cb"
    assert engine_waybill.subscription.phone == "13900000002"
    assert engine_waybill.subscription.resultv2 == "1"


async def test_subscribe_with_a_wrong_key_or_company_is_rejected(sim: CarrierSimServer) -> None:
    bad_key = Kuaidi100Adapter(api_base=sim.url, customer="c", key="wrong", salt=SALT)
    good = Kuaidi100Adapter(api_base=sim.url, customer="c", key=sim.engine.key, salt=SALT)
    with pytest.raises(CarrierRejected) as wrong_key:
        await bad_key.subscribe(Subscription("shunfeng", "SF1", "http://127.0.0.1:9/cb"))
    with pytest.raises(CarrierRejected) as wrong_company:
        await good.subscribe(Subscription("nosuchexpress", "X1", "http://127.0.0.1:9/cb"))
    with pytest.raises(CarrierRejected) as no_callback:
        await good.subscribe(Subscription("shunfeng", "SF1", ""))
    await bad_key.aclose()
    await good.aclose()
    codes = (wrong_key.value.code, wrong_company.value.code, no_callback.value.code)
    assert codes == ("600", "701", "700")
    assert await sim.waybills() == []


# --- query -------------------------------------------------------------------------------------


async def test_query_answers_nothing_before_the_first_step_then_the_steps(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    waybill = await adapter.create_waybill(request("S1", "zhongtong"))
    await adapter.subscribe(Subscription("zhongtong", waybill.waybill_no, receiver.url))

    empty = await adapter.query("zhongtong", waybill.waybill_no)
    assert (empty.events, empty.state) == ((), None)

    await sim.advance(steps=2)
    update = await adapter.query("zhongtong", waybill.waybill_no)

    assert (update.company, update.waybill_no) == ("zhongtong", waybill.waybill_no)
    assert [e.state_code for e in update.events] == ["0", "1"]  # newest first, as sent
    assert update.state is TrackingStatus.IN_TRANSIT and update.state_code == "0"
    assert update.events[1].description.startswith("【深圳市】中通快递 已揽收")
    assert update.events[1].location == "广东省,深圳市"
    assert update.finished is False


async def test_query_with_a_wrong_key_is_rejected_not_retried(sim: CarrierSimServer) -> None:
    kd = Kuaidi100Adapter(api_base=sim.url, customer=sim.engine.customer, key="x", salt=SALT)
    with pytest.raises(CarrierRejected) as caught:
        await kd.query("shunfeng", "SF1")
    await kd.aclose()
    assert caught.value.code == "503"  # Kuaidi100: 验证签名失败


# --- pushes ------------------------------------------------------------------------------------


async def test_genuine_push_is_accepted_and_forged_push_refused(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    waybill = await adapter.create_waybill(request("S1"))
    await adapter.subscribe(Subscription("shunfeng", waybill.waybill_no, receiver.url))
    await sim.set_mode(forge_rate=1.0)

    deliveries = await sim.advance()

    assert [(d.variant, d.ok) for d in deliveries] == [("genuine", True), ("forged", False)]
    assert receiver.rejected == ["bad_sign"]
    assert len(receiver.updates) == 1
    update = receiver.updates[0]
    assert update.state is TrackingStatus.IN_TRANSIT and update.state_code == "1"
    assert json.loads(deliveries[1].answer) == {
        "result": False,
        "returnCode": "500",
        "message": "push sign does not match",
    }


def test_push_sign_check_is_exact() -> None:
    kd = Kuaidi100Adapter(api_base="http://127.0.0.1:9", customer="c", key="k", salt=SALT)
    form = signed(push_doc("0", []))
    assert kd.parse_push(form).state is TrackingStatus.IN_TRANSIT
    assert kd.parse_push({**form, "sign": form["sign"].lower()}).waybill_no == "7123"

    cases = {
        "other salt": signed(push_doc("3", []), salt="not-ours"),
        "tampered": {**form, "param": form["param"].replace('"0"', '"3"')},
        "no sign": {"param": form["param"]},
        "not json": {"param": "{", "sign": push_sign("{", SALT)},
        "no lastResult": signed({"status": "polling"}),
        "bad time": signed(push_doc("0", [{"context": "x", "time": "yesterday"}])),
    }
    for name, bad in cases.items():
        with pytest.raises(PushRejected):
            kd.parse_push(bad)
            pytest.fail(name)


def test_beijing_times_become_utc_across_midnight() -> None:
    kd = Kuaidi100Adapter(api_base="http://127.0.0.1:9", customer="c", key="k", salt=SALT)
    data = [
        {"context": "签收", "time": "2026-01-01 00:30:00", "ftime": "2026-01-01 00:30:00"},
        {"context": "派件", "time": "2025-12-31 23:59:59", "ftime": "2025-12-31 23:59:59"},
        {"context": "在途", "time": "", "ftime": "2025-12-31 08:00:00"},
    ]
    update = kd.parse_push(signed(push_doc("3", data, status="shutdown")))

    assert [e.occurred_at for e in update.events] == [
        datetime(2025, 12, 31, 16, 30, tzinfo=UTC),
        datetime(2025, 12, 31, 15, 59, 59, tzinfo=UTC),
        datetime(2025, 12, 31, 0, 0, tzinfo=UTC),
    ]
    assert all(e.occurred_at.tzinfo is UTC for e in update.events)
    assert update.finished is True
    assert parse_beijing_time("2026-03-01 07:59:59") == datetime(
        2026, 2, 28, 23, 59, 59, tzinfo=UTC
    )


async def test_simulator_times_cross_beijing_midnight(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    """The simulator writes Beijing wall clock; the adapter reads back the exact UTC instants."""
    waybill = await adapter.create_waybill(request("S1"))
    await adapter.subscribe(Subscription("shunfeng", waybill.waybill_no, receiver.url))
    before = datetime(2026, 3, 1, 15, 59, 30, tzinfo=UTC)  # 23:59:30 in Beijing
    after = datetime(2026, 3, 1, 16, 0, 30, tzinfo=UTC)  # 00:00:30 the next day
    with clock.frozen(before):
        await sim.advance()
    with clock.frozen(after):
        await sim.advance()

    param = json.loads(receiver.raw[-1]["param"])
    assert [d["time"] for d in param["lastResult"]["data"]] == [
        "2026-03-02 00:00:30",
        "2026-03-01 23:59:30",
    ]
    assert [e.occurred_at for e in receiver.updates[-1].events] == [after, before]


STATE_TABLE = [
    ("0", TrackingStatus.IN_TRANSIT),  # 在途
    ("1", TrackingStatus.IN_TRANSIT),  # 揽收
    ("2", TrackingStatus.EXCEPTION),  # 疑难
    ("3", TrackingStatus.DELIVERED),  # 签收
    ("4", TrackingStatus.EXCEPTION),  # 退签
    ("5", TrackingStatus.OUT_FOR_DELIVERY),  # 派件
    ("6", TrackingStatus.EXCEPTION),  # 退回
    ("7", TrackingStatus.IN_TRANSIT),  # 转投
    ("8", TrackingStatus.IN_TRANSIT),  # 清关
    ("10", TrackingStatus.IN_TRANSIT),  # 待清关
    ("11", TrackingStatus.IN_TRANSIT),  # 清关中
    ("12", TrackingStatus.IN_TRANSIT),  # 已清关
    ("13", TrackingStatus.EXCEPTION),  # 清关异常
    ("14", TrackingStatus.EXCEPTION),  # 拒签
]


@pytest.mark.parametrize(("code", "status"), STATE_TABLE)
def test_state_codes_map_to_our_statuses(code: str, status: TrackingStatus) -> None:
    kd = Kuaidi100Adapter(api_base="http://127.0.0.1:9", customer="c", key="k", salt=SALT)
    item = {"context": "x", "time": "2026-01-01 10:00:00", "statusCode": code}
    update = kd.parse_push(signed(push_doc(code, [item])))
    assert (update.state, update.state_code) == (status, code)
    assert (update.events[0].status, update.events[0].state_code) == (status, code)


def test_each_event_state_comes_from_its_own_fields_else_the_rule() -> None:
    kd = Kuaidi100Adapter(api_base="http://127.0.0.1:9", customer="c", key="k", salt=SALT)
    at = "2026-01-01 10:00:00"
    data = [
        {"context": "newest, no code", "time": at},
        {"context": "sub-state 301 本人签收", "time": at, "statusCode": "301"},
        {"context": "sub-state 1002 干线", "time": at, "statusCode": "1002"},
        {"context": "named", "time": at, "status": "派件"},
        {"context": "older, no code", "time": at},
    ]
    update = kd.parse_push(signed(push_doc("14", data)))
    assert [e.state_code for e in update.events] == ["14", "3", "0", "5", "0"]
    assert update.events[0].status is TrackingStatus.EXCEPTION


def test_answers_to_the_carrier() -> None:
    kd = Kuaidi100Adapter(api_base="http://127.0.0.1:9", customer="c", key="k", salt=SALT)
    assert kd.accept_body() == (
        200,
        "application/json",
        '{"result":true,"returnCode":"200","message":"成功"}',
    )
    status, media, body = kd.reject_body("签名错误")
    assert (status, media) == (200, "application/json")
    assert json.loads(body) == {"result": False, "returnCode": "500", "message": "签名错误"}


# --- outages -----------------------------------------------------------------------------------


async def test_simulator_answering_503_is_unavailable_then_recovers(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer
) -> None:
    await sim.set_down(requests=3)
    sub = Subscription("shunfeng", "SF000000000001", "http://127.0.0.1:9/cb")
    for attempt in (
        adapter.create_waybill(request("S1")),
        adapter.subscribe(sub),
        adapter.query("shunfeng", "SF000000000001"),
    ):
        with pytest.raises(CarrierUnavailable):
            await attempt
    assert await sim.waybills() == []

    waybill = await adapter.create_waybill(request("S1"))
    assert waybill.waybill_no.startswith("SF")


async def test_simulator_refusing_connections_is_unavailable(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer
) -> None:
    first = await adapter.create_waybill(request("S1"))
    sim.refuse_connections()
    try:
        with pytest.raises(CarrierUnavailable):
            await adapter.create_waybill(request("S2"))
    finally:
        sim.accept_connections()
    # Nothing was lost on the carrier side; the retry gets its number.
    assert (await adapter.create_waybill(request("S1"))) == first
    second = await adapter.create_waybill(request("S2"))
    assert second.waybill_no != first.waybill_no


async def test_timeout_is_unavailable() -> None:
    """A carrier that accepts the connection but never answers."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    kd = Kuaidi100Adapter(
        api_base="http://127.0.0.1:9",
        customer="c",
        key="k",
        salt=SALT,
        secret="s",
        transport=httpx.MockTransport(hang),
    )
    with pytest.raises(CarrierUnavailable):
        await kd.query("shunfeng", "SF1")
    await kd.aclose()


# --- settings ----------------------------------------------------------------------------------


def test_adapter_from_settings_only_when_configured() -> None:
    base = {
        "kuaidi100_api_base": "",
        "kuaidi100_customer": "C",
        "kuaidi100_key": "K",
        "kuaidi100_salt": "S",
        "kuaidi100_secret": "",
        "kuaidi100_timeout_seconds": 3.0,
        "kuaidi100_min_query_interval_seconds": 1800,
    }
    assert kuaidi100_from_settings(SimpleNamespace(**base)) is None
    kd = kuaidi100_from_settings(SimpleNamespace(**{**base, "kuaidi100_api_base": "http://x/"}))
    assert kd is not None
    assert (kd.api_base, kd.key, kd.salt, kd.timeout_seconds) == ("http://x", "K", "S", 3.0)
    assert kd.min_query_interval_seconds == 1800


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ordertally.core.settings import Settings

    assert kuaidi100_from_settings(Settings()) is None  # off by default
    for name, value in {
        "API_BASE": "http://127.0.0.1:8765",
        "CUSTOMER": "CUST",
        "KEY": "KEY",
        "SALT": "SALT",
        "SECRET": "SECRET",
        "TIMEOUT_SECONDS": "2.5",
        "MIN_QUERY_INTERVAL_SECONDS": "3600",
    }.items():
        monkeypatch.setenv(f"ORDERTALLY_KUAIDI100_{name}", value)
    kd = kuaidi100_from_settings(Settings())
    assert kd is not None
    assert (kd.api_base, kd.customer, kd.secret) == ("http://127.0.0.1:8765", "CUST", "SECRET")
    assert (kd.timeout_seconds, kd.min_query_interval_seconds) == (2.5, 3600)
