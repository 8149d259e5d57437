"""The carrier simulator's pushes, received over real HTTP by a tiny Starlette receiver and parsed
by the Kuaidi100 adapter: scripts and final states, duplicates, out-of-order, silence, retries,
the control API and the CLI command."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import typer
from typer.testing import CliRunner

from ordertally.fulfillment.carriers.base import (
    Party,
    Subscription,
    TrackingStatus,
    TrackingUpdate,
    WaybillRequest,
)
from ordertally.fulfillment.carriers.kuaidi100 import Kuaidi100Adapter
from ordertally.fulfillment.simulator.cli import register
from ordertally.fulfillment.simulator.engine import FINALS, CarrierSimulator
from ordertally.fulfillment.simulator.server import CarrierSimServer
from tests.fulfillment.carrier_receiver import Receiver, serve_receiver

pytestmark = pytest.mark.anyio

SALT = "receiver-salt"
PARTY = Party("李四", "13700000003", "浙江省", "杭州市", "西湖区", "文三路1号")
FINAL_STATE = {"delivered": "3", "rejected": "14", "returned": "6", "problem": "2"}


@pytest.fixture
def sim() -> Iterator[CarrierSimServer]:
    with CarrierSimServer(CarrierSimulator(seed=7)) as server:
        yield server


@pytest.fixture
async def adapter(sim: CarrierSimServer) -> AsyncIterator[Kuaidi100Adapter]:
    e = sim.engine
    kd = Kuaidi100Adapter(
        api_base=sim.url, customer=e.customer, key=e.key, salt=SALT, secret=e.secret
    )
    yield kd
    await kd.aclose()


@pytest.fixture
def receiver(adapter: Kuaidi100Adapter) -> Iterator[Receiver]:
    with serve_receiver(adapter) as r:
        yield r


async def ship(
    adapter: Kuaidi100Adapter, receiver: Receiver, reference: str, company: str = "shunfeng"
) -> str:
    """A waybill from the label API, subscribed to the receiver; answers its number."""
    request = WaybillRequest(reference, company, PARTY, PARTY, (("SKU", 1),))
    waybill = await adapter.create_waybill(request)
    await adapter.subscribe(Subscription(company, waybill.waybill_no, receiver.url))
    return waybill.waybill_no


def merged(updates: list[TrackingUpdate], number: str) -> list[tuple[object, str, str]]:
    """What a receiver keeps: events deduplicated on (time, code, words), by event time."""
    seen = {
        (e.occurred_at, e.state_code, e.description)
        for u in updates
        if u.waybill_no == number
        for e in u.events
    }
    return sorted(seen)  # by event time first


async def test_every_push_is_parsed_and_ends_in_the_scripted_final_state(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    numbers: dict[str, str] = {}
    for index, final in enumerate(FINALS):
        await sim.set_defaults(final=final)
        numbers[final] = await ship(adapter, receiver, f"S{index}", "zhongtong")

    deliveries = await sim.run_to_end()

    assert deliveries and all(d.ok and d.variant == "genuine" for d in deliveries)
    assert receiver.rejected == []
    assert len(receiver.updates) == len(deliveries)
    for end, number in numbers.items():
        updates = [u for u in receiver.updates if u.waybill_no == number]
        scripted = 4 if end == "silence" else 6  # 揽收, 3 在途, [派件, final]
        assert len(updates) == scripted
        assert [len(u.events) for u in updates] == list(range(1, scripted + 1))
        last = updates[-1]
        if end == "silence":
            assert (last.state_code, last.finished) == ("0", False)
            continue
        assert last.state_code == FINAL_STATE[end]
        assert last.events[0].state_code == FINAL_STATE[end]
        assert last.events[1].status is TrackingStatus.OUT_FOR_DELIVERY
        assert last.finished is (end != "problem")  # 疑难 is not closed by Kuaidi100
        assert all(not u.finished for u in updates[:-1])
    assert {w["number"]: w["true_status"] for w in await sim.waybills()} == {
        numbers["delivered"]: "delivered",
        numbers["rejected"]: "exception",
        numbers["returned"]: "exception",
        numbers["problem"]: "exception",
        numbers["silence"]: "in_transit",
    }
    delivered = [u for u in receiver.updates if u.waybill_no == numbers["delivered"]][-1]
    assert delivered.state is TrackingStatus.DELIVERED
    times = [e.occurred_at for e in delivered.events]
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times)


async def test_duplicates_and_out_of_order_pushes_still_tell_the_whole_story(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    numbers = [await ship(adapter, receiver, f"S{i}") for i in range(30)]
    await sim.set_mode(duplicate_rate=0.3, out_of_order_rate=0.3)

    deliveries = await sim.run_to_end()

    variants = [d.variant for d in deliveries]
    assert variants.count("duplicate") > 0 and variants.count("stale") > 0
    assert all(d.ok for d in deliveries)
    genuine = len([v for v in variants if v in ("genuine", "stale")])
    assert genuine == 30 * 6  # every step's snapshot arrived exactly once, some late
    arrived_older = 0
    for number in numbers:
        updates = [u for u in receiver.updates if u.waybill_no == number]
        sizes = [len(u.events) for u in updates]
        arrived_older += sum(1 for a, b in itertools.pairwise(sizes) if b < a)
        story = merged(updates, number)
        assert len(story) == 6  # nothing lost, nothing twice
        assert story[-1][1] == "3"  # the newest by event time is 签收
        assert max(sizes) == 6
    assert arrived_older == variants.count("stale")


async def test_silent_waybill_pushes_nothing_but_query_sees_its_steps(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    quiet = await ship(adapter, receiver, "S1")
    loud = await ship(adapter, receiver, "S2")
    await sim.set_mode(number=quiet, silent=True)

    await sim.advance(steps=3)

    assert {u.waybill_no for u in receiver.updates} == {loud}
    update = await adapter.query("shunfeng", quiet)
    assert len(update.events) == 3
    assert await sim.deliveries(quiet) == []


async def test_failed_pushes_are_retried_three_times_then_dropped(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    number = await ship(adapter, receiver, "S1")
    receiver.fail_next = 3

    first = await sim.advance()
    retried = [await sim.retry() for _ in range(4)]

    assert [d.ok for d in first] == [False]
    assert [[d.ok for d in r] for r in retried] == [[False], [False], [True], []]
    assert len(receiver.updates) == 1 and receiver.updates[0].waybill_no == number

    receiver.fail_next = 10
    await sim.advance()
    assert [len(await sim.retry()) for _ in range(4)] == [1, 1, 1, 0]  # 3 retries, then dropped


async def test_control_api_over_http(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    number = await ship(adapter, receiver, "S1", "yuantong")
    async with httpx.AsyncClient(base_url=sim.url) as client:
        script = await client.post("/_sim/script", json={"number": number, "final": "rejected"})
        assert script.status_code == 200 and script.json()["steps"] == 6
        mode = await client.post("/_sim/mode", json={"number": number, "duplicate_rate": 1.0})
        assert mode.json()["mode"]["duplicate_rate"] == 1.0
        advanced = await client.post("/_sim/advance", json={"number": number, "steps": 2})
        assert [d["variant"] for d in advanced.json()] == ["genuine", "duplicate"] * 2
        rest = await client.post("/_sim/advance", json={"to_end": True})
        assert rest.json()[-1]["status"] == "shutdown" and rest.json()[-1]["state"] == "14"
        (row,) = (await client.get("/_sim/waybills", params={"number": number})).json()
        assert (row["played"], row["done"], row["true_status"]) == (6, True, "exception")
        assert len((await client.get("/_sim/deliveries")).json()) == 12
        down = await client.post("/_sim/mode", json={"down_requests": 1})
        assert down.json()["down_requests"] == 1
        assert (await client.post("/poll", data={"schema": "json"})).status_code == 503
        assert (await client.post("/_sim/advance", json={"number": "nope"})).status_code == 404
        assert (await client.post("/_sim/reset")).json() == {"status": "reset"}
        assert (await client.get("/_sim/waybills")).json() == []
    assert receiver.rejected == []
    assert receiver.updates[-1].state is TrackingStatus.EXCEPTION


async def test_forged_pushes_claim_delivery_and_are_all_refused(
    adapter: Kuaidi100Adapter, sim: CarrierSimServer, receiver: Receiver
) -> None:
    number = await ship(adapter, receiver, "S1")
    await sim.set_mode(forge_rate=1.0)

    deliveries = await sim.advance(steps=3)

    forged = [d for d in deliveries if d.variant == "forged"]
    assert len(forged) == 3 and all(d.state == "3" and not d.ok for d in forged)
    assert receiver.rejected == ["bad_sign"] * 3
    assert all(u.state is not TrackingStatus.DELIVERED for u in receiver.updates)
    assert [json.loads(r["param"])["status"] for r in receiver.raw].count("shutdown") == 3
    assert sim.engine.retries == []  # forged pushes are not the carrier's: never retried
    assert {u.waybill_no for u in receiver.updates} == {number}


def test_cli_command_is_registered() -> None:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in multi-command mode."""

    result = CliRunner().invoke(app, ["carriersim", "--help"])
    assert result.exit_code == 0, result.output
    assert "--push-every" in result.output and "--port" in result.output
