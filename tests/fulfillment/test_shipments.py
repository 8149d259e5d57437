"""Shipments from payment to delivery over the HTTP API: planned from the allocation, confirmed
and shipped by the warehouse (one by one or from a shipped list), tracked by signed carrier
pushes, shown to the buyer on the tracking page."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from typing import Any

import httpx
import pytest
import xlsxwriter
import zxingcpp
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.fulfillment import service, tracking_updates
from ordertally.fulfillment.carriers import registry
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from tests.factories import auth, close_case, make_order
from tests.fulfillment.helpers import (
    SECOND_WAREHOUSE,
    configure_kuaidi100,
    events_of,
    now_minus,
    push_form,
    script,
    shipments,
    split_paid_order,
)

pytestmark = pytest.mark.anyio


async def _order(db: Database, order_no: str) -> SalesOrder:
    async with db.transaction() as session:
        order = await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))
        assert order is not None
        return order


async def _events(db: Database, event_type: str) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        )
        return [r.payload for r in rows.all()]


async def _cases(db: Database, order_id: int) -> list[tuple[str, str]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(ExceptionCase.type, ExceptionCase.detail)
            .where(ExceptionCase.order_id == order_id)
            .order_by(ExceptionCase.id)
        )
        return [(t, d.get("reason", "")) for t, d in rows.all()]


async def test_a_paid_order_is_planned_confirmed_and_shipped_per_warehouse(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a paid order split over two warehouses (no carrier adapter: waybills by hand)
    order = await split_paid_order(db)

    # Then the fulfillment consumer planned one shipment per warehouse and allocated the order
    planned = await shipments(db, order.id)
    assert [(s.warehouse_code, s.status, s.carrier) for s in planned] == [
        (SECOND_WAREHOUSE, "planned", "manual"),
        ("WH-TEST", "planned", "manual"),
    ]
    assert order.status == "allocated"
    doc = (await client.get(f"/api/v1/orders/{order.order_no}", headers=auth(keys["cs"]))).json()
    assert [(s["warehouse"], s["status"]) for s in doc["shipments"]] == [
        (SECOND_WAREHOUSE, "planned"),
        ("WH-TEST", "planned"),
    ]
    assert doc["tracking_url"].endswith(f"/t/{order.order_no}." + doc["tracking_url"][-32:])
    first, second = planned
    listed = (
        await client.get(
            "/api/v1/shipments", params={"order_no": order.order_no}, headers=auth(keys["cs"])
        )
    ).json()
    assert [line["sku"] for line in listed["items"][0]["lines"]] == ["B-ONLY"]
    assert [line["sku"] for line in listed["items"][1]["lines"]] == ["TEA-LJ-250"]

    # When the warehouse confirms the first one (picked and packed)
    wh = auth(keys["warehouse"])
    r = await client.post(f"/api/v1/shipments/{first.id}/confirm", headers=wh)
    assert r.status_code == 200, r.text
    assert (await _order(db, order.order_no)).status == "fulfilling"

    # And ships it without a waybill number while it has none: refused, nothing changed
    r = await client.post(f"/api/v1/shipments/{first.id}/ship", headers=wh)
    assert (r.status_code, r.json()["code"]) == (409, "fulfillment.waybill_missing")

    # When it ships with one
    r = await client.post(
        f"/api/v1/shipments/{first.id}/ship",
        json={"waybill_no": "ZT7000000000001", "company": "zhongtong"},
        headers=wh,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "shipped"
    # Then the waybill is on the shipment and the order, which waits for its other parcel
    after_one = await _order(db, order.order_no)
    assert (after_one.status, after_one.waybill_nos) == ("fulfilling", "ZT7000000000001")
    # Shipping it again with the same number changes nothing; another number is refused
    again = await client.post(
        f"/api/v1/shipments/{first.id}/ship", json={"waybill_no": "ZT7000000000001"}, headers=wh
    )
    assert again.status_code == 200
    other = await client.post(
        f"/api/v1/shipments/{first.id}/ship", json={"waybill_no": "ZT7000000000009"}, headers=wh
    )
    assert (other.status_code, other.json()["code"]) == (409, "fulfillment.already_shipped")
    # A waybill number that belongs to another shipment is refused
    clash = await client.post(
        f"/api/v1/shipments/{second.id}/ship",
        json={"waybill_no": "ZT7000000000001", "company": "zhongtong"},
        headers=wh,
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "fulfillment.waybill_in_use")
    # Bad input is a problem document
    bad = await client.post(
        f"/api/v1/shipments/{second.id}/ship", json={"waybill_no": "单号"}, headers=wh
    )
    assert bad.status_code == 422
    # A customer-service key may read but not ship
    cs = await client.post(f"/api/v1/shipments/{second.id}/confirm", headers=auth(keys["cs"]))
    assert cs.status_code == 403

    # When the second parcel ships
    r = await client.post(
        f"/api/v1/shipments/{second.id}/ship", json={"waybill_no": "SF1000000000002"}, headers=wh
    )
    assert r.status_code == 200, r.text
    # Then the order is shipped, with both numbers, and one ShipmentShipped event per parcel
    shipped = await _order(db, order.order_no)
    assert shipped.status == "shipped"
    assert shipped.waybill_nos.split() == ["SF1000000000002", "ZT7000000000001"]
    events = await _events(db, "ShipmentShipped")
    assert sorted(e["waybill_no"] for e in events) == ["SF1000000000002", "ZT7000000000001"]
    assert all(e["tracking_url"] == doc["tracking_url"] for e in events)
    assert len(await _events(db, "OrderShipped")) == 1


async def test_a_shipped_list_ships_good_rows_and_reports_bad_ones_by_line(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given two paid orders with two parcels each
    a = await split_paid_order(db)
    b = await split_paid_order(db)
    # When the warehouse uploads its shipped list (Chinese headers, one bad row, one unknown
    # order, one row for an order already fully listed)
    csv_text = (
        "订单号,快递公司,运单号\n"
        f"{a.order_no},zhongtong,ZT7100000000001\n"
        f"{a.order_no},shunfeng,SF1100000000002\n"
        f"{b.order_no},zhongtong,\n"
        "NO-SUCH-ORDER,zhongtong,ZT7100000000003\n"
        f"{b.order_no},yunda,YD3100000000004\n"
        f"{a.order_no},zhongtong,ZT7100000000005\n"
    )
    r = await client.post(
        "/api/v1/shipments/import",
        content=csv_text.encode("gb18030"),
        headers=auth(keys["warehouse"], **{"Content-Type": "text/csv"}),
    )
    assert r.status_code == 200, r.text
    rows = {row["line"]: row for row in r.json()["rows"]}
    # Then each row is accounted for by its line number
    assert {n: row["result"] for n, row in rows.items()} == {
        2: "shipped",
        3: "shipped",
        4: "error",
        5: "error",
        6: "shipped",
        7: "error",
    }
    assert rows[4]["code"] == "row.waybill_invalid"
    assert rows[5]["code"] == "fulfillment.shipment_not_found"
    assert rows[7]["code"] == "fulfillment.shipment_not_found"
    assert (await _order(db, a.order_no)).status == "shipped"
    assert (await _order(db, b.order_no)).status == "fulfilling"
    # And uploading the same list again ships nothing twice
    r = await client.post(
        "/api/v1/shipments/import",
        content=csv_text.encode("utf-8"),
        headers=auth(keys["warehouse"], **{"Content-Type": "text/csv"}),
    )
    assert r.json()["summary"] == {"unchanged": 3, "error": 3}
    assert len(await _events(db, "ShipmentShipped")) == 3
    # A file without the needed columns is refused as a whole
    r = await client.post(
        "/api/v1/shipments/import", content=b"a,b\n1,2\n", headers=auth(keys["warehouse"])
    )
    assert (r.status_code, r.json()["code"]) == (422, "fulfillment.ship_list_invalid")


async def _ship_all(
    client: httpx.AsyncClient, keys: dict[str, str], order: SalesOrder
) -> list[str]:
    listed = (
        await client.get(
            "/api/v1/shipments", params={"order_no": order.order_no}, headers=auth(keys["cs"])
        )
    ).json()["items"]
    numbers = []
    for n, s in enumerate(listed):
        number = f"ZT73{order.id:06d}{n:05d}"
        r = await client.post(
            f"/api/v1/shipments/{s['id']}/ship",
            json={"waybill_no": number, "company": "zhongtong"},
            headers=auth(keys["warehouse"]),
        )
        assert r.status_code == 200, r.text
        numbers.append(number)
    return numbers


async def test_signed_pushes_are_stored_once_ordered_by_event_time_and_deliver_the_order(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given Kuaidi100 tracking on and a shipped two-parcel order
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    order = await split_paid_order(db)
    first, second = await _ship_all(client, keys, order)
    start = now_minus(10).replace(microsecond=0)
    steps = script(start)

    async def push(form: dict[str, str]) -> httpx.Response:
        return await client.post("/callbacks/carriers/kuaidi100", data=form)

    # When the carrier pushes the first parcel's history out of order and with duplicates:
    # the full history first, then an older snapshot (stale), then the full one again
    full = await push(push_form("zhongtong", first, steps))
    stale = await push(push_form("zhongtong", first, steps[:2]))
    dup = await push(push_form("zhongtong", first, steps))
    # Then each is answered as Kuaidi100 expects
    for r in (full, stale, dup):
        assert r.status_code == 200
        assert r.json() == {"result": True, "returnCode": "200", "message": "成功"}
    # And each scan is stored once, and the parcel is delivered (the stale push did not move it)
    stored = await events_of(db, (await shipments(db, order.id))[0].id)
    assert [e.state_code for e in stored] == [c for _, c, _ in steps]
    parcels = await shipments(db, order.id)
    assert [p.status for p in parcels] == ["delivered", "shipped"]
    assert (await _order(db, order.order_no)).status == "shipped"

    # When the second parcel's pushes arrive newest-state first, then an older one
    await push(push_form("zhongtong", second, steps[:3]))
    await push(push_form("zhongtong", second, steps[:2]))
    assert [p.status for p in await shipments(db, order.id)] == ["delivered", "in_transit"]
    await push(push_form("zhongtong", second, steps, status="shutdown"))
    # Then both are delivered, and so is the order, with one ShipmentDelivered per parcel
    assert [p.status for p in await shipments(db, order.id)] == ["delivered", "delivered"]
    assert (await _order(db, order.order_no)).status == "delivered"
    assert len(await _events(db, "ShipmentDelivered")) == 2

    # A forged push is refused in Kuaidi100's words and stores nothing
    before = len(await events_of(db, parcels[1].id))
    later = [(start + timedelta(hours=20), "0", "伪造的轨迹")]
    forged = await push(push_form("zhongtong", second, later, forge=True))
    assert forged.json()["result"] is False
    assert len(await events_of(db, parcels[1].id)) == before
    # A push for a waybill we never issued is acknowledged (so the carrier stops) and dropped
    unknown = await push(push_form("zhongtong", "ZT79999999999", later))
    assert unknown.json()["result"] is True


def _push_batches() -> tuple[float, float]:
    """(batches, pushes) the push group commit has seen so far in this process."""
    count = REGISTRY.get_sample_value("ordertally_tracking_push_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("ordertally_tracking_push_batch_size_sum") or 0.0
    return count, total


async def test_pushes_that_arrive_together_are_stored_together_as_if_one_by_one(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given eight shipped parcels (four two-parcel orders), each with its own story: most
    # delivered, one refused by the buyer
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    parcels: list[str] = []
    orders = []
    for n in range(4):
        order = await split_paid_order(db, external_id=f"together-{n}")
        orders.append(order)
        parcels += await _ship_all(client, keys, order)
    start = now_minus(10).replace(microsecond=0)
    finals = {number: ("14" if i == 5 else "3") for i, number in enumerate(parcels)}
    steps = {number: script(start, final=finals[number], steps=6) for number in parcels}

    async def push(form: dict[str, str]) -> httpx.Response:
        return await client.post("/callbacks/carriers/kuaidi100", data=form)

    # When the carrier pushes every parcel at once, in waves, each wave with a stale snapshot
    # and a duplicate beside the newest one for the same waybill
    batches_before, pushes_before = _push_batches()
    for upto in (2, 4, 6):
        wave = []
        for number in parcels:
            wave += [
                push_form("zhongtong", number, steps[number][:upto]),
                push_form("zhongtong", number, steps[number][: max(upto - 2, 1)]),
                push_form("zhongtong", number, steps[number][:upto]),
            ]
        answers = await asyncio.gather(*(push(form) for form in wave))
        assert all(a.json()["result"] is True for a in answers)
    batches_after, pushes_after = _push_batches()
    # Then the pushes really went in batches (fewer transactions than pushes)
    assert pushes_after - pushes_before == 3 * 3 * len(parcels)
    assert batches_after - batches_before < pushes_after - pushes_before
    # And every scan is stored once, every parcel ends in its true state, the refused one an
    # exception, and the orders whose parcels all arrived are delivered, each parcel's
    # ShipmentDelivered published once
    for order in orders:
        for parcel in await shipments(db, order.id):
            assert parcel.waybill_no is not None
            stored = await events_of(db, parcel.id)
            assert [e.state_code for e in stored] == [c for _, c, _ in steps[parcel.waybill_no]]
            want = "delivered" if finals[parcel.waybill_no] == "3" else "exception"
            assert parcel.status == want
    delivered = [o for o in orders if (await _order(db, o.order_no)).status == "delivered"]
    assert len(delivered) == 3
    assert len(await _events(db, "ShipmentDelivered")) == 7
    assert len(await _events(db, "ShipmentTrackingException")) == 1


async def test_one_batch_naming_a_parcel_several_times_applies_its_updates_in_order(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    order = await split_paid_order(db)
    first, second = await _ship_all(client, keys, order)
    start = now_minus(10).replace(microsecond=0)
    steps = script(start)
    refused = script(start, final="14")
    adapter = registry.current()
    assert adapter is not None

    def update(number: str, upto: list[Any]) -> Any:
        return adapter.parse_push(push_form("zhongtong", number, upto))

    # When one batch holds, in order: the first parcel's two first scans, the second parcel's
    # refusal, the first parcel's whole story, an older snapshot of it, and an unknown waybill
    batch = [
        update(first, steps[:2]),
        update(second, refused),
        update(first, steps),
        update(first, steps[:3]),
        update("ZT79999999999", steps[:1]),
    ]
    async with db.transaction() as session:
        outcomes = await tracking_updates.apply_tracking_many(session, batch, source="push")
    # Then each update did what it would have done alone, one after the other
    assert [(o.known, o.stored, o.status) for o in outcomes] == [
        (True, 2, "in_transit"),
        (True, len(refused), "exception"),
        (True, len(steps) - 2, "delivered"),
        (True, 0, "delivered"),
        (False, 0, None),
    ]
    assert [p.status for p in await shipments(db, order.id)] == ["delivered", "exception"]
    assert len(await _events(db, "ShipmentDelivered")) == 1
    assert len(await _events(db, "ShipmentTrackingException")) == 1


async def test_a_rejected_parcel_is_an_exception_and_silence_becomes_tracking_stale(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    order = await split_paid_order(db)
    first, _second = await _ship_all(client, keys, order)
    # When the first parcel is refused by the buyer (拒签)
    steps = script(now_minus(6).replace(microsecond=0), final="14")
    r = await client.post(
        "/callbacks/carriers/kuaidi100", data=push_form("zhongtong", first, steps)
    )
    assert r.json()["result"] is True
    # Then it is an exception, with a case and an event naming the reason
    assert [p.status for p in await shipments(db, order.id)] == ["exception", "shipped"]
    assert await _cases(db, order.id) == [("tracking_exception", "rejected")]
    assert [e["reason"] for e in await _events(db, "ShipmentTrackingException")] == ["rejected"]

    # When a day passes without a single scan of the second parcel
    async with db.transaction() as session:
        assert await service.flag_stale(session, clock.now()) == 0
        flagged = await service.flag_stale(session, clock.now() + timedelta(hours=25))
    # Then it is flagged tracking_stale once, however often the job runs
    async with db.transaction() as session:
        again = await service.flag_stale(session, clock.now() + timedelta(hours=26))
    assert (flagged, again) == (1, 0)
    assert await _cases(db, order.id) == [
        ("tracking_exception", "rejected"),
        ("tracking_stale", "tracking_stale"),
    ]


async def test_the_tracking_page_shows_the_timeline_and_its_qr_code_decodes_to_its_link(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    order = await split_paid_order(db)
    first, _ = await _ship_all(client, keys, order)
    steps = script(now_minus(8).replace(microsecond=0))
    await client.post("/callbacks/carriers/kuaidi100", data=push_form("zhongtong", first, steps))
    doc = (await client.get(f"/api/v1/orders/{order.order_no}", headers=auth(keys["cs"]))).json()
    url = doc["tracking_url"]
    path = httpx.URL(url).path

    # When the buyer opens the link (no login), in Chinese by default
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    # Then it shows the parcels, their waybills and the timeline, newest first, masked data only
    assert "物流跟踪" in html and first in html and "已签收，签收人是本人" in html
    assert html.index("已签收") < html.index("快件已揽收")
    assert "李*" in html and "13987654321" not in html and "世纪大道" not in html
    assert 'name="viewport"' in html
    # and the items by the names the order lines kept, not by their codes
    assert "测试商品 TEA-LJ-250 × " in html
    assert html.count("TEA-LJ-250 × ") == html.count("测试商品 TEA-LJ-250 × ")
    english = await client.get(path, headers={"Accept-Language": "en-US,en;q=0.8"})
    assert "Track your order" in english.text and "Delivered" in english.text
    assert "Test item TEA-LJ-250 × " in english.text

    # And its QR code (PNG and SVG) decodes back to the page's own link
    png = await client.get(path + "/qr.png")
    assert png.headers["content-type"] == "image/png"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
    assert [d.text for d in decoded] == [url]
    svg = await client.get(path + "/qr.svg")
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content

    # A link with a wrong signature, or for another order, opens nothing
    tampered = path[:-1] + ("0" if path[-1] != "0" else "1")
    r = await client.get(tampered)
    assert (r.status_code, r.json()["code"]) == (404, "fulfillment.tracking_link_invalid")
    # Another digit than the order number's own last one (a "9" ending made this the same link).
    last = "8" if order.order_no.endswith("9") else "9"
    other = path.replace(order.order_no, order.order_no[:-1] + last)
    assert (await client.get(other)).status_code == 404


async def _held_paid_order(db: Database) -> tuple[Any, int]:
    """An order on hold (a blocking case) that gets paid: it stays paid, without shipments,
    after the consumers ran, and the sweep leaves it alone."""
    order = await make_order(db)
    async with db.transaction() as session:
        case_id = await exceptions_service.open_case(
            session,
            order_id=order.id,
            category="order",
            type="address_check",
            blocking=True,
            detail={},
        )
        await orders_service.transition(
            session, order.order_no, "payment_succeeded", Actor(ActorKind.PAYMENT_CALLBACK, "t")
        )
    await drain(db, get_settings())
    assert (await _order(db, order.order_no)).status == "paid"
    assert await shipments(db, order.id) == []
    async with db.transaction() as session:
        assert await service.allocate_waiting(session, 100) == 0
    return order, case_id


@pytest.mark.parametrize("lift", ["resolve", "cancel"])
async def test_a_held_paid_order_is_allocated_by_the_consumer_once_its_hold_is_lifted(
    db: Database, lift: str
) -> None:
    # Given a paid order held by a blocking case
    order, case_id = await _held_paid_order(db)
    # When the case is resolved (or cancelled as opened by mistake)
    await close_case(db, case_id, lift)
    # Then the allocation consumer allocates it at once: nothing is left for the sweep
    await drain(db, get_settings())
    assert (await _order(db, order.order_no)).status == "allocated"
    assert [(s.warehouse_code, s.status) for s in await shipments(db, order.id)] == [
        ("WH-TEST", "planned")
    ]
    async with db.transaction() as session:
        assert await service.allocate_waiting(session, 100) == 0


async def test_a_held_paid_order_whose_lifted_event_is_lost_is_allocated_by_the_sweep_once(
    db: Database,
) -> None:
    # Given a paid order held by a blocking case, resolved, whose event never reaches the
    # consumer (lost: marked delivered without being dispatched)
    order, case_id = await _held_paid_order(db)
    async with db.transaction() as session:
        await exceptions_service.resolve(session, case_id, "ops", "address confirmed by phone")
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.event_type == "ExceptionCaseClosed")
            .values(status="done")
        )
    # Then the sweep allocates it, once
    async with db.transaction() as session:
        assert await service.allocate_waiting(session, 100) == 1
    async with db.transaction() as session:
        assert await service.allocate_waiting(session, 100) == 0
    assert (await _order(db, order.order_no)).status == "allocated"


async def test_a_shipped_list_in_xlsx_ships_and_the_metrics_count_the_pushes(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_kuaidi100(monkeypatch, "http://127.0.0.1:9")
    order = await split_paid_order(db)
    # When the warehouse uploads its list as an Excel file (English headers, numeric cells)
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet()
    rows = [
        ["order_no", "company", "waybill_no"],
        [order.order_no, "zhongtong", "ZT7200000000001"],
        [order.order_no, "shunfeng", 1200000000002],
    ]
    for r, row in enumerate(rows):
        sheet.write_row(r, 0, row)
    book.close()
    r = await client.post(
        "/api/v1/shipments/import", content=out.getvalue(), headers=auth(keys["warehouse"])
    )
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"shipped": 2}
    assert (await _order(db, order.order_no)).status == "shipped"

    # And a push, a duplicate and a forgery show in the metrics by outcome
    def pushes(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "ordertally_tracking_pushes_total", {"carrier": "kuaidi100", "outcome": outcome}
            )
            or 0.0
        )

    before = {o: pushes(o) for o in ("stored", "duplicate", "rejected")}
    steps = script(now_minus(3).replace(microsecond=0), steps=4)
    form = push_form("zhongtong", "ZT7200000000001", steps)
    await client.post("/callbacks/carriers/kuaidi100", data=form)
    await client.post("/callbacks/carriers/kuaidi100", data=form)
    await client.post(
        "/callbacks/carriers/kuaidi100",
        data=push_form("zhongtong", "ZT7200000000001", steps, forge=True),
    )
    assert {o: pushes(o) - before[o] for o in before} == {
        "stored": 1,
        "duplicate": 1,
        "rejected": 1,
    }
    text = (await client.get("/metrics")).text
    for name in (
        "ordertally_tracking_lag_seconds",
        "ordertally_delivery_time_seconds",
        "ordertally_waybill_requests_total",
        "ordertally_shipments_tracking_stale",
    ):
        assert name in text
