"""Exports over real HTTP against both databases: the file agrees with the database, money and
time are explicit, formulas are neutralised, personal data is masked unless allowed, and a
closed period's export is reproducible byte for byte (its body)."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from python_calamine import CalamineWorkbook
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.core.settings import reset_settings
from ordertally.exports import service
from ordertally.exports.models import ExportAudit
from ordertally.orders.contact import mask_name
from ordertally.orders.models import SalesOrder
from tests.factories import auth, order_body

pytestmark = pytest.mark.anyio

# 2026-11-30 23:30 in Asia/Shanghai is 15:30 UTC the same day; 2026-12-01 00:30 there is
# 16:30 UTC on 2026-11-30: a UTC-day export would put it on the wrong day.
LATE_EVENING = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
JUST_AFTER_MIDNIGHT = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
FORMULA = '=HYPERLINK("http://evil.example/","x")'


@pytest.fixture
def fx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()


async def _order(client: AsyncClient, key: str, at: datetime, **body: Any) -> dict[str, Any]:
    with clock.frozen(at):
        r = await client.post("/api/v1/orders", json=order_body(**body), headers=auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _export(
    client: AsyncClient, db: Database, key: str, **body: Any
) -> tuple[dict[str, Any], bytes]:
    """Request an export, let the job run it, poll it, and download its file."""
    r = await client.post("/api/v1/exports", json=body, headers=auth(key))
    assert r.status_code == 202, r.text
    export_no = r.json()["export_no"]
    assert r.json()["state"] == "queued"
    assert await service.run_queued(db) == 1
    doc = (await client.get(f"/api/v1/exports/{export_no}", headers=auth(key))).json()
    assert doc["state"] == "done", doc
    assert (doc["rows_done"], doc["progress"]) == (doc["rows_total"], 1.0)
    file = await client.get(f"/api/v1/exports/{export_no}/file", headers=auth(key))
    assert file.status_code == 200
    return doc, file.content


def _body_rows(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """The header and data rows of a CSV export (after the watermark block, before the footer)."""
    assert content.startswith("\ufeff".encode())
    lines = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    start = lines.index([]) + 1
    end = len(lines) - 1 - lines[::-1].index([])
    header, *rows = lines[start:end]
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def _col(header: list[str], prefix: str) -> str:
    return next(h for h in header if h.startswith(prefix))


async def test_orders_export_agrees_with_the_database_and_shows_both_amounts(
    client: AsyncClient, keys: dict[str, str], db: Database, fx: None
) -> None:
    # Given two CNY orders and one USD order at the rate locked when it was made
    day = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    await _order(client, keys["ops"], day, channel="douyin")
    await _order(client, keys["ops"], day + timedelta(minutes=1), channel="douyin")
    usd = await _order(client, keys["ops"], day + timedelta(minutes=2), currency="USD")
    # When finance exports November's orders
    doc, content = await _export(
        client, db, keys["finance"], template="orders", date_from="2026-11-01", date_to="2026-11-30"
    )
    header, rows = _body_rows(content)
    # Then the row count and per-currency sums equal the database's own aggregates
    async with db.transaction(write=False) as session:
        counted = await session.scalar(select(func.count(SalesOrder.id)))
        sums = dict(
            (
                await session.execute(
                    select(SalesOrder.currency, func.sum(SalesOrder.total_minor)).group_by(
                        SalesOrder.currency
                    )
                )
            ).all()
        )
    manifest = doc["manifest"]
    assert manifest["row_count"] == len(rows) == counted == 3
    assert manifest["sums"] == {"CNY": format_minor(sums["CNY"], "CNY"), "USD": "159.70"}
    total = _col(header, "订单金额")
    file_sums: dict[str, Decimal] = {}
    for row in rows:
        file_sums[row["币种 Currency"]] = file_sums.get(row["币种 Currency"], 0) + Decimal(
            row[total]
        )
    assert {k: str(v) for k, v in file_sums.items()} == manifest["sums"]
    # And the USD order shows its amount and its base amount at the locked rate
    row = next(r for r in rows if r["订单号 Order no."] == usd["order_no"])
    assert (row[total], row["锁定汇率 Locked FX rate"], row["本位币金额 Base total"]) == (
        "159.70",
        "7.10430000",
        "1134.56",  # 159.70 x 7.1043 = 1134.556... half-even to 2 places
    )
    assert row["本位币 Base currency"] == "CNY"
    # And the manifest is downloadable and the file's SHA-256 is the one recorded
    m = await client.get(
        f"/api/v1/exports/{doc['export_no']}/manifest", headers=auth(keys["finance"])
    )
    assert m.json() == manifest
    assert hashlib.sha256(content).hexdigest() == manifest["file_sha256"]
    async with db.transaction(write=False) as session:
        export = await service.get_export(session, doc["export_no"])
        assert await service.database_aggregates(session, export) == {
            "row_count": 3,
            "sums": manifest["sums"],
        }


async def test_a_late_evening_order_falls_on_its_local_day(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order at 23:30 and one at 00:30 the next day, Asia/Shanghai
    late = await _order(client, keys["ops"], LATE_EVENING)
    early = await _order(client, keys["ops"], JUST_AFTER_MIDNIGHT)
    # When 30 November (local) is exported in the merchant's zone
    _, content = await _export(
        client,
        db,
        keys["ops"],
        template="orders",
        date_from="2026-11-30",
        date_to="2026-11-30",
        timezone="Asia/Shanghai",
    )
    _, rows = _body_rows(content)
    # Then only the 23:30 order is on it, with its local and UTC times, each labelled
    assert [r["订单号 Order no."] for r in rows] == [late["order_no"]]
    local = "下单时间(Asia/Shanghai) Created (Asia/Shanghai)"
    assert (rows[0][local], rows[0]["下单时间(UTC) Created (UTC)"]) == (
        "2026-11-30 23:30:00+08:00",
        "2026-11-30 15:30:00Z",
    )
    assert rows[0]["业务日期(Asia/Shanghai) Business day (Asia/Shanghai)"] == "2026-11-30"
    # And 1 December holds the 00:30 order, although its UTC date is 30 November
    _, content = await _export(
        client, db, keys["ops"], template="orders", date_from="2026-12-01", date_to="2026-12-01"
    )
    _, rows = _body_rows(content)
    assert [r["订单号 Order no."] for r in rows] == [early["order_no"]]
    assert rows[0]["下单时间(UTC) Created (UTC)"] == "2026-11-30 16:30:00Z"


async def test_formula_payloads_are_neutralised_in_csv_and_xlsx(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order whose platform id and buyer name are formula payloads
    order = await _order(
        client,
        keys["ops"],
        LATE_EVENING,
        external_id="=1+cmd|' /C calc'!A0",
        customer={"name": FORMULA, "phone": "13812345678"},
    )
    body = {"template": "orders", "columns": ["order_no", "external_id", "customer_name"]}
    # When cs exports them with personal data in clear (allowed, with a reason)
    doc, content = await _export(
        client, db, keys["cs"], **body, unmask_pii=True, pii_reason="complaint 42"
    )
    _, rows = _body_rows(content)
    # Then each cell starts with ' and is text, never a formula
    assert rows == [
        {
            "订单号 Order no.": order["order_no"],
            "平台单号 Platform order id": "'=1+cmd|' /C calc'!A0",
            "买家 Customer": "'" + FORMULA,
        }
    ]
    assert doc["pii_unmasked"] is True
    # And the same in an XLSX file, whose cells are strings
    doc, content = await _export(client, db, keys["cs"], **body, format="xlsx")
    path = service.export_dir() / f"{doc['export_no']}.xlsx"
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    data = [r for r in sheet if r and r[0] == order["order_no"]]
    assert data == [
        [
            order["order_no"],
            "'=1+cmd|' /C calc'!A0",
            "'" + mask_name(FORMULA),
        ]
    ]
    assert b"<f>" not in zipfile.ZipFile(io.BytesIO(content)).read("xl/worksheets/sheet1.xml")


async def test_xlsx_carries_the_watermark_in_its_properties_and_print_header(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order / When ops exports it as XLSX
    await _order(client, keys["ops"], LATE_EVENING)
    doc, content = await _export(client, db, keys["ops"], template="orders", format="xlsx")
    # Then who, from where and which export are in the document properties and the header
    book = zipfile.ZipFile(io.BytesIO(content))
    core = book.read("docProps/core.xml").decode()
    custom = book.read("docProps/custom.xml").decode()
    sheet = book.read("xl/worksheets/sheet1.xml").decode()
    assert "ops-tester" in core and doc["export_no"] in core
    assert "203.0.113.7" in custom and doc["export_no"] in custom
    assert "<oddHeader>" in sheet and "203.0.113.7" in sheet
    assert doc["manifest"]["row_count"] == 1


async def test_rerunning_a_closed_period_reproduces_the_manifest(
    client: AsyncClient, keys: dict[str, str], db: Database, fx: None
) -> None:
    # Given November's orders, and a December order made after the first export
    await _order(client, keys["ops"], LATE_EVENING)
    await _order(client, keys["ops"], LATE_EVENING - timedelta(days=3), currency="USD")
    body = {"template": "order_lines", "date_from": "2026-11-01", "date_to": "2026-11-30"}
    first, first_file = await _export(client, db, keys["finance"], **body)
    await _order(client, keys["ops"], JUST_AFTER_MIDNIGHT)  # 1 December, local
    # When someone else re-runs the same export of the closed period
    again, again_file = await _export(client, db, keys["ops"], **body)
    # Then the body's SHA-256, the count and the sums are the same; only the watermark differs
    stable = ("template", "columns", "filters", "timezone", "row_count", "sums", "body_sha256")
    assert {k: first["manifest"][k] for k in stable} == {k: again["manifest"][k] for k in stable}
    assert first["manifest"]["row_count"] == 4
    assert first["manifest"]["file_sha256"] != again["manifest"]["file_sha256"]
    assert _body_rows(first_file) == _body_rows(again_file)
    # And the body's hash is the hash of the body's bytes in the file (between the blank rows
    # after the watermark block and before the footer)
    body_bytes = first_file.split(b"\r\n\r\n")[1] + b"\r\n"
    assert hashlib.sha256(body_bytes).hexdigest() == first["manifest"]["body_sha256"]
    # And the same body hashes the same as XLSX
    xlsx, _ = await _export(client, db, keys["finance"], **body, format="xlsx")
    assert xlsx["manifest"]["body_sha256"] == first["manifest"]["body_sha256"]


async def test_personal_data_is_masked_unless_the_role_may_see_it(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order
    await _order(client, keys["ops"], LATE_EVENING)
    columns = ["customer_name", "customer_phone", "shipping_address"]
    # When finance exports it / Then the personal data is masked
    _, content = await _export(client, db, keys["finance"], template="orders", columns=columns)
    assert _body_rows(content)[1] == [
        {
            "买家 Customer": "张*",
            "买家电话 Customer phone": "138****5678",
            "收货地址 Shipping address": "上海市 上海市 浦东新区",
        }
    ]
    # When finance asks for it in clear / Then 403 and no export is recorded
    async with db.transaction(write=False) as session:
        before = await session.scalar(select(func.count(ExportAudit.id)))
    r = await client.post(
        "/api/v1/exports",
        json={"template": "orders", "unmask_pii": True, "pii_reason": "audit"},
        headers=auth(keys["finance"]),
    )
    assert (r.status_code, r.json()["code"]) == (403, "exports.pii_not_allowed")
    # And asking in clear without a reason is refused too
    r = await client.post(
        "/api/v1/exports",
        json={"template": "orders", "unmask_pii": True},
        headers=auth(keys["ops"]),
    )
    assert (r.status_code, r.json()["code"]) == (422, "exports.invalid")
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count(ExportAudit.id))) == before
    # When ops exports it in clear with a reason / Then it is in clear and the access logged
    doc, content = await _export(
        client,
        db,
        keys["ops"],
        template="orders",
        columns=columns,
        unmask_pii=True,
        pii_reason="courier dispute",
    )
    assert _body_rows(content)[1] == [
        {
            "买家 Customer": "张三",
            "买家电话 Customer phone": "'+8613812345678",
            "收货地址 Shipping address": "上海市 上海市 浦东新区 世纪大道1号",
        }
    ]
    async with db.transaction(write=False) as session:
        audit = await service.get_export(session, doc["export_no"])
    assert (audit.pii_unmasked, audit.pii_reason, audit.actor_id, audit.source_ip) == (
        True,
        "courier dispute",
        "ops-tester",
        "203.0.113.7",
    )
    # And finance may not download that file
    r = await client.get(f"/api/v1/exports/{doc['export_no']}/file", headers=auth(keys["finance"]))
    assert (r.status_code, r.json()["code"]) == (403, "exports.pii_not_allowed")


async def test_saved_template_and_other_sources_export_their_rows(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order and a saved template with three of the payments' columns
    await _order(client, keys["ops"], LATE_EVENING)
    r = await client.post(
        "/api/v1/exports/templates",
        json={
            "name": "lines_short",
            "base": "order_lines",
            "columns": ["order_no", "sku", "total"],
        },
        headers=auth(keys["finance"]),
    )
    assert r.status_code == 201
    listed = (await client.get("/api/v1/exports/templates", headers=auth(keys["cs"]))).json()
    names = [t["name"] for t in listed["items"]]
    assert names == [*service.templates(), "lines_short"]
    # When it is exported / Then the file has those columns, the lines and their sums
    doc, content = await _export(client, db, keys["finance"], template="lines_short")
    header, rows = _body_rows(content)
    assert header == ["订单号 Order no.", "SKU SKU", "行金额 Line total"]
    assert sorted(r["SKU SKU"] for r in rows) == ["CUP-CER-01", "TEA-LJ-250"]
    assert doc["manifest"]["sums"] == {"CNY": "159.70"}
    # And every built-in template runs on an empty or filled table alike
    for name in service.templates():
        doc, _ = await _export(client, db, keys["ops"], template=name)
        assert doc["manifest"]["row_count"] >= 0
    # And an unknown column or filter is refused with nothing written
    for bad in ({"columns": ["nope"]}, {"filters": {"nope": "x"}}, {"timezone": "Mars/Base"}):
        r = await client.post(
            "/api/v1/exports", json={"template": "orders", **bad}, headers=auth(keys["ops"])
        )
        assert (r.status_code, r.json()["code"]) == (422, "exports.invalid")


async def test_files_expire_after_the_retention(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given a finished export
    doc, _ = await _export(client, db, keys["ops"], template="orders")
    path = service.export_dir() / f"{doc['export_no']}.csv"
    assert path.is_file()
    # When the retention has not passed / Then nothing expires
    assert await service.expire(db, clock.now() + service.RETENTION - timedelta(minutes=1)) == 0
    # When it has / Then the file is deleted and the download says so
    assert await service.expire(db, clock.now() + service.RETENTION + timedelta(minutes=1)) == 1
    assert not path.exists()
    r = await client.get(f"/api/v1/exports/{doc['export_no']}/file", headers=auth(keys["ops"]))
    assert (r.status_code, r.json()["code"]) == (409, "exports.not_ready")
    polled = await client.get(f"/api/v1/exports/{doc['export_no']}", headers=auth(keys["ops"]))
    assert polled.json()["state"] == "expired"


async def test_count_and_rows_come_from_one_snapshot(
    client: AsyncClient,
    keys: dict[str, str],
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two orders, and an order committed by someone else right after the export counted
    await _order(client, keys["ops"], LATE_EVENING)
    await _order(client, keys["ops"], LATE_EVENING)
    counted = service.repository.count_rows
    written: list[str] = []

    async def count_then_someone_writes(*args: Any) -> int:
        n = await counted(*args)
        written.append((await _order(client, keys["ops"], LATE_EVENING))["order_no"])
        return n

    monkeypatch.setattr(service.repository, "count_rows", count_then_someone_writes)
    # When the export runs
    doc, content = await _export(client, db, keys["ops"], template="orders")
    # Then the file has the snapshot's two rows, not the third, and says so
    _, rows = _body_rows(content)
    assert len(written) == 1 and written[0] not in [r["订单号 Order no."] for r in rows]
    assert (doc["rows_total"], doc["manifest"]["row_count"], len(rows)) == (2, 2, 2)
    preamble = content.decode("utf-8-sig").splitlines()[:5]
    assert preamble[1].startswith("快照时间 Snapshot (UTC),") and doc["snapshot_at"] in preamble[1]
