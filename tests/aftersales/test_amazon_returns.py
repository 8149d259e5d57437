"""Amazon's seller-fulfilled returns report (GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE) as a
file source: the published header and a real report's row mapped, the report the channel
simulator serves through the Reports API (real HTTP) uploaded to the API, each Amazon RMA ID
opened once however often the report comes, undecided requests left for a later report, a
file that is not such a report refused whole, and the command line."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.aftersales import platforms
from ordertally.aftersales.errors import ReportRefused
from ordertally.aftersales.models import AftersaleCase, AftersaleLine
from ordertally.aftersales.state_machine import CaseType
from ordertally.channels.adapters import amazon
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import money
from ordertally.core.db import Database
from ordertally.orders.models import SalesOrder
from tests.aftersales.conftest import CHANNEL_NOW
from tests.aftersales.helpers import order_status, run_cli, stored_records, walk
from tests.channels.helpers import make_account
from tests.conftest import ONLY_SQLITE, TEST_WAREHOUSE
from tests.factories import auth, make_order, receive

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).parent / "fixtures" / "amazon_returns_flat_file.tsv"
UPLOAD = "/api/v1/aftersales/platform-files/amazon-returns"
NOW = CHANNEL_NOW


def test_the_published_header_and_a_real_row_are_one_return_of_two_units() -> None:
    # Given the report as Amazon documents its columns, with a real report's row
    data = FIXTURE.read_bytes()
    assert tuple(data.decode().splitlines()[0].split("\t")) == amazon.RETURNS_COLUMNS
    # When it is read and mapped
    report = platforms.read_amazon_returns(data)
    [rows] = report.not_refunded.values()
    record = platforms.from_amazon_return(rows, "amz_a")
    # Then it is one approved return of two units of its SKU, not refunded yet (the row ends
    # before "Refunded Amount"), keyed by the Amazon RMA ID: not a fact to apply yet
    assert (report.rows, report.undecided, report.unreadable, report.returns) == (1, 0, [], {})
    assert record == platforms.PlatformRecord(
        channel="amz_a",
        platform_refund_id="DfqRyqfBRRMA",
        external_order_id="113-6277818-6289068",
        type=CaseType.RETURN_REFUND,
        amount_minor=0,
        reason_code="amazon:AMZ-PG-WJ-TOO-SMALL",
        skus={"PANEC-925SS-IT": 2},
    )
    assert rows[0]["Merchant RMA ID"] == ""  # a cell of one space is empty


def test_a_file_that_is_not_a_returns_report_is_refused_whole() -> None:
    # Given the FBA customer returns report's header (another report) and an empty file
    fba = b"return-date\torder-id\tsku\tasin\tfnsku\tproduct-name\tquantity\n"
    # Then neither is read: the columns a return needs are named
    with pytest.raises(ReportRefused) as refused:
        platforms.read_amazon_returns(fba)
    assert refused.value.code == "aftersales.report_refused"
    assert refused.value.extra["missing"] == [
        "Order ID",
        "Return request status",
        "Amazon RMA ID",
        "Merchant SKU",
        "Return quantity",
    ]
    with pytest.raises(ReportRefused):
        platforms.read_amazon_returns(b"")


async def _cases(db: Database) -> list[tuple[str | None, str, str, int, list[int]]]:
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase).order_by(AftersaleCase.id))).all()
        lines = (
            await session.scalars(
                select(AftersaleLine).order_by(AftersaleLine.case_id, AftersaleLine.line_no)
            )
        ).all()
    return [
        (
            c.platform_refund_id,
            c.type,
            c.status,
            c.refund_minor,
            [ln.quantity for ln in lines if ln.case_id == c.id],
        )
        for c in cases
    ]


def _refunded(data: bytes, amount: str) -> bytes:
    """The report's row as a later report shows it once Amazon refunded the return: the cells
    the real row left out written, "Refunded Amount" last (our edit of the published row)."""
    header, row = data.decode().splitlines()
    cells = row.split("\t")
    cells += [""] * (len(header.split("\t")) - len(cells))
    cells[-1] = amount
    return (header + "\n" + "\t".join(cells) + "\n").encode()


async def test_the_real_row_uploaded_waits_for_its_refund_then_opens_once(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an Amazon account, and its order 113-6277818-6289068 of two units of the
    # returned SKU, shipped
    await make_account(db, "amz_a", "amazon")
    await receive(db, TEST_WAREHOUSE, "PANEC-925SS-IT", 10)
    order = await make_order(
        db,
        "paid",
        channel="amz_a",
        external_id="113-6277818-6289068",
        lines=[{"sku": "PANEC-925SS-IT", "quantity": 2, "unit_price": "10.69"}],
    )
    await walk(db, order.order_no, "shipped")
    # When customer service uploads the report
    r = await client.post(
        f"{UPLOAD}?account=amz_a",
        content=FIXTURE.read_bytes(),
        headers=auth(keys["cs"], **{"Content-Type": "text/tab-separated-values"}),
    )
    # Then the approved return, not refunded yet, is left for a later report
    assert r.status_code == 200, r.text
    assert r.json() == {
        "report": amazon.RETURNS_REPORT,
        "rows": 1,
        "returns": 0,
        "undecided_rows": 0,
        "not_refunded": 1,
        "unreadable_rows": [],
        "created": 0,
        "duplicates": 0,
        "unknown_order": 0,
        "refused": [],
    }
    assert await _cases(db) == []
    assert await stored_records(db) == []
    # When the next report shows Amazon's refund of the order's 21.38, uploaded twice
    refunded = _refunded(FIXTURE.read_bytes(), "21.38")
    first = await client.post(f"{UPLOAD}?account=amz_a", content=refunded, headers=auth(keys["cs"]))
    again = await client.post(f"{UPLOAD}?account=amz_a", content=refunded, headers=auth(keys["cs"]))
    # Then the return is a case awaiting its two units with Amazon's refund recorded, once,
    # and the order is refunded in full
    assert (first.json()["created"], first.json()["duplicates"]) == (1, 0)
    assert (again.json()["created"], again.json()["duplicates"]) == (0, 1)
    assert await _cases(db) == [
        ("DfqRyqfBRRMA", "return_refund", "awaiting_return", 2138, [2]),
    ]
    assert await order_status(db, order.order_no) == "refunded"
    assert await stored_records(db) == [("amz_a", "DfqRyqfBRRMA", "applied")]


async def test_a_bad_upload_is_a_problem_and_stores_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an Amazon account and a Shopify one
    await make_account(db, "amz_a", "amazon")
    await make_account(db, "shop_a", "shopify")
    # When a file that is not a returns report, the report for a Shopify account, and the
    # report by a role that may not manage cases are uploaded
    other = await client.post(
        f"{UPLOAD}?account=amz_a", content=b"order-id\tsku\n1\tA\n", headers=auth(keys["cs"])
    )
    shopify = await client.post(
        f"{UPLOAD}?account=shop_a", content=FIXTURE.read_bytes(), headers=auth(keys["cs"])
    )
    warehouse = await client.post(
        f"{UPLOAD}?account=amz_a", content=FIXTURE.read_bytes(), headers=auth(keys["warehouse"])
    )
    # Then each is a problem with its stable code, and nothing was stored or opened
    assert (other.status_code, other.json()["code"]) == (400, "aftersales.report_refused")
    assert other.headers["content-type"].startswith("application/problem+json")
    assert (shopify.status_code, shopify.json()["code"]) == (400, "aftersales.report_refused")
    assert warehouse.status_code == 403
    assert await stored_records(db) == []
    assert await _cases(db) == []


@pytest.fixture
def sim(channel_sim: tuple[str, ChannelSim]) -> tuple[str, ChannelSim]:
    return channel_sim  # tests/aftersales/conftest.py: frozen at NOW


async def _report_from(url: str, token: str) -> bytes:
    """The returns report of the last 30 days, through the Reports API as a seller's tool
    reads it: createReport, getReport until DONE, getReportDocument, the document."""
    headers = {"x-amz-access-token": token}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        created = await http.post(
            "/reports/2021-06-30/reports",
            headers=headers,
            json={
                "reportType": amazon.RETURNS_REPORT,
                "marketplaceIds": ["ATVPDKIKX0DER"],
                "dataStartTime": (NOW - timedelta(days=30)).isoformat(),
                "dataEndTime": NOW.isoformat(),
            },
        )
        assert created.status_code == 202, created.text
        report = (
            await http.get(
                f"/reports/2021-06-30/reports/{created.json()['reportId']}", headers=headers
            )
        ).json()
        assert report["processingStatus"] == "DONE"
        document = (
            await http.get(
                f"/reports/2021-06-30/documents/{report['reportDocumentId']}", headers=headers
            )
        ).json()
        content = await http.get(document["url"])
        assert content.status_code == 200
        return content.content


async def _return(url: str, **body: Any) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.post("/sim/amazon/returns", json=body)
        assert r.status_code == 200 and "error" not in r.json(), r.text


async def test_a_report_the_simulator_serves_opens_each_return_once(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    sim: tuple[str, ChannelSim],
) -> None:
    url, state = sim
    # Given an Amazon account and two of its orders (two teas and a cup each), shipped
    await make_account(db, "amz_b", "amazon")
    first = await make_order(db, "paid", channel="amz_b", external_id="111-0000001-0000001")
    second = await make_order(db, "paid", channel="amz_b", external_id="111-0000002-0000002")
    for order in (first, second):
        await walk(db, order.order_no, "shipped")
    whole = str(money.from_minor(second.total_minor, "CNY"))
    # And Amazon holds: a tea of the first returned and refunded (59.90); both lines of the
    # second returned under one RMA and refunded in full; a request of the first not decided
    # yet; a return of an order that is not ours; the first's cup to be replaced; the first's
    # other tea approved but not refunded yet
    requested = (NOW - timedelta(days=2)).isoformat()
    rows: list[dict[str, Any]] = [
        {"order_id": "111-0000001-0000001", "rma": "DRMA1", "refunded": "59.90"},
        {"order_id": "111-0000002-0000002", "rma": "DRMA2", "quantity": 2, "refunded": whole},
        {"order_id": "111-0000002-0000002", "rma": "DRMA2", "sku": "CUP-CER-01"},
        {"order_id": "111-0000001-0000001", "rma": "DRMA3", "status": "PendingApproval"},
        {"order_id": "111-0000009-0000009", "rma": "DRMA4", "refunded": "10.00"},
        {
            "order_id": "111-0000001-0000001",
            "rma": "DRMA5",
            "sku": "CUP-CER-01",
            "resolution": "ReplacementIssued",
        },
        {"order_id": "111-0000001-0000001", "rma": "DRMA6"},
    ]
    for row in rows:
        await _return(url, requested=requested, currency="CNY", **row)
    # When the report is fetched through the Reports API and uploaded
    report = await _report_from(url, state.amazon.access_token)
    r = await client.post(f"{UPLOAD}?account=amz_b", content=report, headers=auth(keys["ops"]))
    # Then each decided return of our orders is a case, once
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["rows"], doc["returns"], doc["undecided_rows"], doc["not_refunded"]) == (
        7,
        4,
        1,
        1,
    )
    assert (doc["created"], doc["duplicates"], doc["unknown_order"], doc["refused"]) == (
        3,
        0,
        1,
        [],
    )
    assert await _cases(db) == [
        ("DRMA1", "return_refund", "awaiting_return", 5990, [1]),
        ("DRMA2", "return_refund", "awaiting_return", second.total_minor, [2, 1]),
        ("DRMA5", "exchange", "awaiting_return", 0, [1]),
    ]
    # ...and the orders show what Amazon refunded
    assert await order_status(db, first.order_no) == "partially_refunded"
    assert await order_status(db, second.order_no) == "refunded"
    assert await stored_records(db) == [
        ("amz_b", "DRMA1", "applied"),
        ("amz_b", "DRMA2", "applied"),
        ("amz_b", "DRMA4", "unknown_order"),
        ("amz_b", "DRMA5", "applied"),
    ]
    # And the next report, which repeats them with the last tea now refunded, opens only that
    # one
    state.amazon.returns[6]["Refunded Amount"] = "59.90"
    again = await client.post(
        f"{UPLOAD}?account=amz_b",
        content=await _report_from(url, state.amazon.access_token),
        headers=auth(keys["ops"]),
    )
    assert (again.json()["created"], again.json()["duplicates"]) == (1, 4)
    assert again.json()["refused"] == []
    cases = await _cases(db)
    assert cases[:3] == [
        ("DRMA1", "return_refund", "awaiting_return", 5990, [1]),
        ("DRMA2", "return_refund", "awaiting_return", second.total_minor, [2, 1]),
        ("DRMA5", "exchange", "awaiting_return", 0, [1]),
    ]
    assert cases[3:] == [("DRMA6", "return_refund", "awaiting_return", 5990, [1])]
    assert await order_status(db, first.order_no) == "partially_refunded"


@ONLY_SQLITE  # the command line is the same on both databases; it runs once
async def test_an_operator_imports_a_report_from_the_command_line(
    db: Database, tmp_path: Path
) -> None:
    # Given an Amazon account's shipped order and the report with the real row once refunded
    await make_account(db, "amz_a", "amazon")
    await receive(db, TEST_WAREHOUSE, "PANEC-925SS-IT", 10)
    order = await make_order(
        db,
        "paid",
        channel="amz_a",
        external_id="113-6277818-6289068",
        lines=[{"sku": "PANEC-925SS-IT", "quantity": 2, "unit_price": "10.69"}],
    )
    await walk(db, order.order_no, "shipped")
    path = tmp_path / "returns.tsv"
    path.write_bytes(_refunded(FIXTURE.read_bytes(), "21.38"))

    # When an operator imports it twice, and a file for an account that does not exist
    first, second = (run_cli("import-amazon-returns", "amz_a", str(path)) for _ in range(2))
    missing = run_cli("import-amazon-returns", "nope", str(path))
    # Then the first opens the case, the second finds it, the third says why it stopped
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout[first.stdout.find("{") :])["created"] == 1
    assert json.loads(second.stdout[second.stdout.find("{") :])["duplicates"] == 1
    assert missing.returncode == 1 and "not" in missing.stdout
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(AftersaleCase)) == 1
        status = await session.scalar(select(SalesOrder.status).where(SalesOrder.id == order.id))
    assert status == "refunded"
