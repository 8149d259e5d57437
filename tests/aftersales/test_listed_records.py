"""Douyin (afterSale/List), JD (jingdong.pop.afs.soa.refundapply.queryPageList) and Taobao
(taobao.refunds.receive.get) after-sale records: each platform's published or SDK-defined record
mapped with its unit (fen or yuan), list answers uploaded to the API, each refund id a case once,
a status advanced moving the case once, records with nothing to act on left for later, and bad
answers and records refused with nothing changed."""

from __future__ import annotations

import copy
import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ordertally.aftersales import batch, platforms, pulls, records, repository
from ordertally.aftersales.errors import ReportRefused
from ordertally.aftersales.models import AftersaleCase, AftersaleRefund
from ordertally.aftersales.state_machine import CaseType
from ordertally.channels.errors import RateLimited
from ordertally.channels.simulators.engine import ChannelSim
from ordertally.core import clock
from ordertally.core.db import Database
from tests.aftersales.conftest import CHANNEL_NOW
from tests.aftersales.helpers import order_status, run_cli, stored_records, walk
from tests.channels.helpers import make_account
from tests.conftest import ONLY_SQLITE, TEST_WAREHOUSE
from tests.factories import auth, make_order, receive

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
UPLOAD = "/api/v1/aftersales/platform-files/after-sale-list"


def _doc(name: str) -> dict[str, Any]:
    # Sources of each fixture: tests/aftersales/fixtures/SOURCES.md (section "h36").
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


def _taobao(**changes: Any) -> dict[str, Any]:
    """The Taobao answer (bububa/opentaobao model/trade/Refund.go fields) with its one refund
    changed."""
    doc = _doc("taobao_refunds_receive_get.json")
    doc[records.TAOBAO_RESPONSE]["refunds"]["refund"][0].update(changes)
    return doc


def _jd(*statuses: str, **changes: Any) -> dict[str, Any]:
    """The JD answer with its one application repeated, once per status given."""
    doc = _doc("jd_refundapply_querypagelist.json")
    body = doc[records.JD_RESPONSE]["queryResult"]
    [item] = body["result"]
    body["result"] = [{**copy.deepcopy(item), **changes, "status": s} for s in statuses]
    body["totalCount"] = len(statuses)
    return doc


def test_each_platforms_record_maps_with_its_unit() -> None:
    # Given Douyin's published record (agiso's capture of afterSale/List): 已发货仅退款 (type 1),
    # 售后成功 (status 12), refund_amount 1 — fen
    [douyin] = records.read_douyin(_doc("douyin_aftersale_list_agiso.json")).items
    # When it, the Taobao record (refund_fee "200.07" yuan, a return) and the JD application
    # (applyRefundSum 5990 fen, 京东财务审核通过) are mapped
    d = platforms.from_listed(records.DOUYIN_API, douyin, "dy_a")
    [taobao] = records.read_taobao(_taobao()).items
    t = platforms.from_listed(records.TAOBAO_API, taobao, "tb_a")
    [jd] = records.read_jd(_jd("3")).items
    j = platforms.from_listed(records.JD_API, jd, "jd_a")
    # Then each is its platform's refund, in fen, keyed by the platform's refund id
    assert d == platforms.PlatformRecord(
        channel="dy_a",
        platform_refund_id="146701382803677771",
        external_order_id="6936476692437472563",
        type=CaseType.REFUND_ONLY,
        amount_minor=1,
        reason_code="douyin:aftersale",
        skus={},
        asked_minor=1,
        stage=records.REFUNDED,
    )
    assert (t.platform_refund_id, t.external_order_id, t.type) == (
        "2183427593460215",
        "2231958349623715",
        CaseType.RETURN_REFUND,
    )
    assert (t.amount_minor, t.skus, t.stage) == (20007, {"CHAIR-W": 1}, records.REFUNDED)
    assert (j.platform_refund_id, j.external_order_id, j.type, j.amount_minor) == (
        "1738291001",
        "298374651023",
        CaseType.REFUND_ONLY,
        5990,
    )
    # And a status agreed but not refunded asks the amount and refunds nothing yet
    waiting = platforms.from_listed(
        records.TAOBAO_API, {**taobao, "status": "WAIT_BUYER_RETURN_GOODS"}, "tb_a"
    )
    assert (waiting.stage, waiting.asked_minor, waiting.amount_minor) == (records.OPEN, 20007, 0)


def test_the_status_tables_cover_every_published_value() -> None:
    # The tables are the platforms' enums (SOURCES.md), each value with its stage
    assert set(records.TAOBAO_STAGES) == {
        "WAIT_SELLER_AGREE",
        "WAIT_BUYER_RETURN_GOODS",
        "WAIT_SELLER_CONFIRM_GOODS",
        "SELLER_REFUSE_BUYER",
        "CLOSED",
        "SUCCESS",
    }
    assert set(records.JD_STAGES) == set(range(12))
    assert set(records.DOUYIN_STAGES) == {3, 6, 7, 8, 11, 12, 14, 27, 28, 29}
    assert set(records.DOUYIN_TYPES) == {0, 1, 2, 3, 6, 7}


def test_answers_that_are_not_list_answers_are_refused() -> None:
    # Given an error answer of each platform, and an answer of another API
    bad = [
        (records.read_taobao, {"error_response": {"code": 27, "msg": "Invalid session"}}),
        (records.read_jd, {records.JD_RESPONSE: {"code": "1", "queryResult": {}}}),
        (records.read_jd, {records.JD_RESPONSE: {"code": "0", "queryResult": {"success": False}}}),
        (records.read_douyin, {"code": 40004, "msg": "参数错误", "data": {}}),
        (records.read_douyin, {"isSuccess": False, "data": {"items": []}}),
        (records.read_taobao, _doc("jd_refundapply_querypagelist.json")),
    ]
    # Then each is refused with the stable code
    for read, doc in bad:
        with pytest.raises(ReportRefused) as refused:
            read(doc)
        assert refused.value.code == "aftersales.report_refused"


async def _cases(db: Database) -> list[tuple[str | None, str, str, int]]:
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase).order_by(AftersaleCase.id))).all()
    return [(c.platform_refund_id, c.type, c.status, c.refund_minor) for c in cases]


async def _refunds(db: Database) -> list[tuple[str, int, str]]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(AftersaleRefund).order_by(AftersaleRefund.id))).all()
    return [(r.out_refund_no, r.amount_minor, r.state) for r in rows]


async def _shipped(db: Database, channel: str, external_id: str, sku: str, price: str) -> str:
    await receive(db, TEST_WAREHOUSE, sku, 10)
    order = await make_order(
        db,
        "paid",
        channel=channel,
        external_id=external_id,
        lines=[{"sku": sku, "quantity": 1, "unit_price": price}],
    )
    await walk(db, order.order_no, "shipped")
    return order.order_no


async def _jd_paid(db: Database) -> None:
    """The JD application's order (59.90), paid and not shipped."""
    await make_order(
        db,
        "paid",
        channel="jd_a",
        external_id="298374651023",
        lines=[{"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"}],
    )


async def _upload(
    client: httpx.AsyncClient, key: str, account: str, doc: Any, status: int = 200
) -> dict[str, Any]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    r = await client.post(
        f"{UPLOAD}?account={account}",
        content=body,
        headers=auth(key, **{"Content-Type": "application/json"}),
    )
    assert r.status_code == status, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_douyins_published_record_uploaded_opens_one_refunded_case(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Douyin account and the published record's order (one unit of 112233 at 0.01),
    # shipped
    await make_account(db, "dy_a", "douyin")
    order_no = await _shipped(db, "dy_a", "6936476692437472563", "112233", "0.01")
    # When the published answer is uploaded twice
    doc = _doc("douyin_aftersale_list_agiso.json")
    first = await _upload(client, keys["cs"], "dy_a", doc)
    again = await _upload(client, keys["cs"], "dy_a", doc)
    # Then one refund-only case holds Douyin's 1-fen refund, the order is refunded, and the
    # second upload changed nothing
    assert first == {
        "records": 1,
        "total": 35,
        "created": 1,
        "advanced": 0,
        "duplicates": 0,
        "undecided": 0,
        "unknown_order": 0,
        "refused": [],
    }
    assert (again["created"], again["duplicates"]) == (0, 1)
    assert await _cases(db) == [("146701382803677771", "refund_only", "refunded", 1)]
    assert await _refunds(db) == [("dy_a:146701382803677771", 1, "succeeded")]
    assert await order_status(db, order_no) == "refunded"
    assert await stored_records(db) == [("dy_a", "146701382803677771:refunded", "applied")]


async def test_a_taobao_return_advanced_to_success_records_the_refund_once(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Taobao account and the order of the refund (one CHAIR-W at 200.07), shipped
    await make_account(db, "tb_a", "taobao")
    order_no = await _shipped(db, "tb_a", "2231958349623715", "CHAIR-W", "200.07")
    # When the refund is first listed agreed, waiting for the buyer's return (and the
    # buyer's request before it, which is not the seller's decision yet)
    asked = await _upload(client, keys["cs"], "tb_a", _taobao(status="WAIT_SELLER_AGREE"))
    agreed = await _upload(client, keys["cs"], "tb_a", _taobao(status="WAIT_BUYER_RETURN_GOODS"))
    # Then the request is left for later, and the agreement opens a return waiting for its
    # unit, with no money moved
    assert (asked["undecided"], asked["created"]) == (1, 0)
    assert (agreed["created"], agreed["advanced"]) == (1, 0)
    assert await _cases(db) == [("2183427593460215", "return_refund", "awaiting_return", 20007)]
    assert await _refunds(db) == []
    # When the goods are on their way back (same stage), then SUCCESS is listed twice
    shipped_back = await _upload(
        client, keys["cs"], "tb_a", _taobao(status="WAIT_SELLER_CONFIRM_GOODS")
    )
    success = await _upload(client, keys["cs"], "tb_a", _taobao())
    success_again = await _upload(client, keys["cs"], "tb_a", _taobao())
    # Then the same case carries Taobao's refund, recorded once; no second case; the order is
    # refunded; the return still waits for its unit (refund first: the goods still come home)
    assert (shipped_back["created"], shipped_back["duplicates"]) == (0, 1)
    assert (success["created"], success["advanced"], success["duplicates"]) == (0, 1, 0)
    assert (success_again["advanced"], success_again["duplicates"]) == (0, 1)
    assert await _cases(db) == [("2183427593460215", "return_refund", "awaiting_return", 20007)]
    assert await _refunds(db) == [("tb_a:2183427593460215", 20007, "succeeded")]
    assert await order_status(db, order_no) == "refunded"
    assert await stored_records(db) == [
        ("tb_a", "2183427593460215:open", "applied"),
        ("tb_a", "2183427593460215:refunded", "applied"),
    ]


async def test_a_jd_page_with_duplicates_and_stages_applies_each_once(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a JD account and the application's order (59.90), paid and not shipped
    await make_account(db, "jd_a", "jd")
    await _jd_paid(db)
    # When one page lists the application approved (1), refunded (3) twice, and pending (0)
    page = _jd("1", "3", "3", "0")
    answer = await _upload(client, keys["cs"], "jd_a", page)
    again = await _upload(client, keys["cs"], "jd_a", page)
    # Then one case is opened and refunded once; the repeated record is a duplicate, the
    # pending one waits; the page read again changes nothing
    assert answer | {"refused": []} == {
        "records": 4,
        "total": 4,
        "created": 1,
        "advanced": 1,
        "duplicates": 1,
        "undecided": 1,
        "unknown_order": 0,
        "refused": [],
    }
    assert (again["created"], again["advanced"], again["duplicates"]) == (0, 0, 3)
    assert await _cases(db) == [("1738291001", "refund_only", "refunded", 5990)]
    assert await _refunds(db) == [("jd_a:1738291001", 5990, "succeeded")]


async def test_bad_answers_and_records_change_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given Taobao and Pinduoduo accounts and the Taobao order, shipped
    await make_account(db, "tb_a", "taobao")
    await make_account(db, "pdd_a", "pinduoduo")
    await _shipped(db, "tb_a", "2231958349623715", "CHAIR-W", "200.07")
    # When a body that is not JSON, an error answer, and a Taobao answer for a Pinduoduo
    # account are uploaded
    not_json = await _upload(client, keys["cs"], "tb_a", b"refund_id,tid\n1,2\n", 400)
    error = await _upload(client, keys["cs"], "tb_a", {"error_response": {"code": 7}}, 400)
    other = await _upload(client, keys["cs"], "pdd_a", _taobao(), 400)
    # Then each is a problem with the stable code
    assert {not_json["code"], error["code"], other["code"]} == {"aftersales.report_refused"}
    # When a record with an unknown status and one whose amount does not read are uploaded
    unknown = await _upload(client, keys["cs"], "tb_a", _taobao(status="SOMETHING_NEW"))
    unreadable = await _upload(client, keys["cs"], "tb_a", _taobao(refund_fee="两百"))
    # Then the first is refused and not stored; the second is held in the inbox as refused
    # with why, and no case or refund exists
    assert (unknown["created"], len(unknown["refused"])) == (0, 1)
    assert "SOMETHING_NEW" in unknown["refused"][0]["message"]
    assert (unreadable["created"], len(unreadable["refused"])) == (0, 1)
    assert await stored_records(db) == [("tb_a", "2183427593460215:refunded", "refused")]
    assert await _cases(db) == []
    assert await _refunds(db) == []


async def test_a_closed_refund_withdraws_its_waiting_case_once(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Taobao return agreed (a case waiting for its unit)
    await make_account(db, "tb_a", "taobao")
    await _shipped(db, "tb_a", "2231958349623715", "CHAIR-W", "200.07")
    await _upload(client, keys["cs"], "tb_a", _taobao(status="WAIT_BUYER_RETURN_GOODS"))
    # When Taobao lists it CLOSED (the buyer withdrew), twice, and a never-opened refund closed
    closed = await _upload(client, keys["cs"], "tb_a", _taobao(status="CLOSED"))
    again = await _upload(client, keys["cs"], "tb_a", _taobao(status="CLOSED"))
    never = await _upload(
        client, keys["cs"], "tb_a", _taobao(status="CLOSED", refund_id="999", tid=1)
    )
    # Then the waiting case is withdrawn (closed, nothing refunded) once; a refund that opened
    # nothing needs nothing
    assert (closed["advanced"], closed["refused"]) == (1, [])
    assert (again["advanced"], again["refused"]) == (0, [])
    assert (never["advanced"], never["refused"], never["duplicates"]) == (0, [], 1)
    assert await _cases(db) == [("2183427593460215", "return_refund", "closed", 20007)]
    assert await _refunds(db) == []


# --- Pulled from the channel simulator over real HTTP -------------------------------------

NOW = CHANNEL_NOW  # the channel simulator's clock (conftest)


async def _list_account(db: Database, url: str, code: str, platform: str) -> None:
    with clock.frozen(NOW - timedelta(hours=30)):
        await make_account(
            db,
            code,
            platform,
            config={"base_url": f"{url}/{platform}", "client_id": "sim-list-key"},
            credentials={"client_secret": "sim-list-secret", "access_token": "t"},
            overlap_seconds=600,
            rate_limit_per_second=1000,
            rate_limit_burst=1000,
        )


def _item(platform: str) -> dict[str, Any]:
    """Each platform's fixture record, as the simulator serves it."""
    if platform == "taobao":
        item: dict[str, Any] = _taobao()[records.TAOBAO_RESPONSE]["refunds"]["refund"][0]
    elif platform == "jd":
        item = _jd("3")[records.JD_RESPONSE]["queryResult"]["result"][0]
    else:
        item = _doc("douyin_aftersale_list_agiso.json")["data"]["items"][0]
    return item


async def test_each_platforms_pull_applies_its_records_once_through_the_simulator(
    db: Database, channel_sim: tuple[str, ChannelSim]
) -> None:
    url, state = channel_sim
    # Given a Taobao, a JD and a Douyin account, each with the order of its fixture record
    await _list_account(db, url, "tb_a", "taobao")
    await _list_account(db, url, "jd_a", "jd")
    await _list_account(db, url, "dy_a", "douyin")
    tb_order = await _shipped(db, "tb_a", "2231958349623715", "CHAIR-W", "200.07")
    await _jd_paid(db)
    dy_order = await _shipped(db, "dy_a", "6936476692437472563", "112233", "0.01")
    # And the platforms hold: Taobao's return agreed (waiting for the goods) 20 hours ago,
    # JD's application refunded 2 hours ago, Douyin's refund succeeded 10 minutes ago
    state.lists.hold(
        "taobao",
        {**_item("taobao"), "status": "WAIT_BUYER_RETURN_GOODS"},
        NOW - timedelta(hours=20),
    )
    state.lists.hold("jd", _item("jd"), NOW - timedelta(hours=2))
    state.lists.hold("douyin", _item("douyin"), NOW - timedelta(minutes=10))
    # When each account is pulled
    tb = await pulls.pull_account(db, "tb_a")
    jd = await pulls.pull_account(db, "jd_a")
    dy = await pulls.pull_account(db, "dy_a")
    # Then every call was signed and accepted, within a day's window, and each record opened
    # its case once: Taobao's return waits for its unit, JD's and Douyin's refunds are recorded
    assert all(o.complete for o in (tb, jd, dy))
    assert [(o.read, o.result.created) for o in (tb, jd, dy)] == [(1, 1), (1, 1), (1, 1)]
    kinds = {p for p, _ in state.lists.requests}
    assert kinds == {"taobao", "jd", "douyin"} and len(state.lists.requests) == 6
    assert await _cases(db) == [
        ("2183427593460215", "return_refund", "awaiting_return", 20007),
        ("1738291001", "refund_only", "refunded", 5990),
        ("146701382803677771", "refund_only", "refunded", 1),
    ]
    assert await order_status(db, dy_order) == "refunded"
    # When Taobao's refund succeeds (the record advanced) and every account is pulled again
    state.lists.hold("taobao", _item("taobao"), NOW - timedelta(minutes=5))
    again = [await pulls.pull_account(db, code) for code in ("tb_a", "jd_a", "dy_a")]
    # Then the Taobao case carries the refund, once; nothing else changed (the overlap re-read
    # Douyin's record: a duplicate)
    assert [(o.result.created, o.result.advanced) for o in again] == [(0, 1), (0, 0), (0, 0)]
    assert again[2].result.duplicates == 1
    assert await _refunds(db) == [
        ("jd_a:1738291001", 5990, "succeeded"),
        ("dy_a:146701382803677771", 1, "succeeded"),
        ("tb_a:2183427593460215", 20007, "succeeded"),
    ]
    assert await order_status(db, tb_order) == "refunded"


async def test_a_taobao_limit_backs_off_and_the_cursor_waits(
    db: Database, channel_sim: tuple[str, ChannelSim]
) -> None:
    url, state = channel_sim
    # Given a Taobao account and TOP answering "App Call Limited" (code 7) once
    await _list_account(db, url, "tb_a", "taobao")
    state.lists.throttle.fail_next(1)
    # When it is pulled
    with pytest.raises(RateLimited):
        await pulls.pull_account(db, "tb_a")
    # Then the cursor did not move and the account backs off
    async with db.transaction(write=False) as session:
        pulled = await repository.pull_state(session, "tb_a")
        assert pulled is not None and pulled.error_count == 1
        assert clock.as_utc(pulled.cursor_at) == NOW - timedelta(hours=30)
        assert pulled.backoff_until is not None


async def test_only_accounts_with_an_api_are_due(
    db: Database, channel_sim: tuple[str, ChannelSim]
) -> None:
    url, _ = channel_sim
    # Given a Douyin account configured for the API and a Taobao account whose orders come
    # as files (no base URL)
    await _list_account(db, url, "dy_a", "douyin")
    await make_account(db, "tb_files", "taobao")
    # Then only the first is due for a pull of its after-sale records
    async with db.transaction(write=False) as session:
        assert await pulls.due_accounts(session, NOW) == ["dy_a"]


@ONLY_SQLITE  # the command line is the same on both databases; it runs once
async def test_an_operator_imports_a_list_answer_from_the_command_line(
    db: Database, tmp_path: Path
) -> None:
    # Given a JD account's paid order and its application refunded, saved as JD answered it
    await make_account(db, "jd_a", "jd")
    await _jd_paid(db)
    path = tmp_path / "jd.json"
    path.write_text(json.dumps(_jd("3")))
    bad = tmp_path / "bad.json"
    bad.write_text("not json")

    # When an operator imports it twice, and a file that is not an answer
    first, second = (run_cli("import-after-sale-list", "jd_a", str(path)) for _ in range(2))
    refused = run_cli("import-after-sale-list", "jd_a", str(bad))
    # Then the first opens the refunded case, the second finds it, the third says why
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout[first.stdout.find("{") :])["created"] == 1
    assert json.loads(second.stdout[second.stdout.find("{") :])["duplicates"] == 1
    assert refused.returncode == 1 and "not a JSON" in refused.stdout
    assert await _cases(db) == [("1738291001", "refund_only", "refunded", 5990)]


def _stage_stream(seed: int, orders: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Taobao refunds over `orders` orders: first listed agreed, then listed SUCCESS with the
    same amount, a smaller one, or one past what the order paid; refund only and returns."""
    rng = random.Random(seed)
    agreed, success = [], []
    for i in range(orders * 2):
        k = i % orders
        returns = rng.random() < 0.5
        fee = rng.choice(("59.90", "10.00", "0.01"))
        item = _taobao()[records.TAOBAO_RESPONSE]["refunds"]["refund"][0] | {
            "refund_id": f"9{i:05d}",
            "tid": 7000 + k,
            "has_good_return": returns,
            "outer_id": "TEA-LJ-250",
            "refund_fee": fee,
        }
        agreed.append(item | {"status": "WAIT_BUYER_RETURN_GOODS"})
        paid_out = rng.choice((fee, fee, "5.00", "900.00"))
        success.append(item | {"status": "SUCCESS", "refund_fee": paid_out})
    return agreed, success


@pytest.mark.parametrize("seed", [13, 36])
async def test_later_refunds_batched_write_what_the_per_record_path_writes(
    db: Database, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.aftersales.test_batch import _tables

    # Given the same shipped and paid orders on two Taobao accounts, and one stream of refunds
    # agreed then refunded (some smaller than agreed, some past what the order paid)
    statuses = ["shipped", "paid", "delivered", "shipped", "paid", "shipped"]
    for channel in ("tb_batch", "tb_each"):
        await make_account(db, channel, "taobao")
        for k, status in enumerate(statuses):
            await make_order(db, status, channel=channel, external_id=str(7000 + k))
    agreed, success = _stage_stream(seed, len(statuses))

    async def receive(channel: str, items: list[dict[str, Any]]) -> tuple[int, ...]:
        async with db.transaction() as session:
            r = await platforms.receive_listed(session, records.TAOBAO_API, items, "sync", channel)
        return (r.created, r.advanced, r.duplicates, r.unknown_order, len(r.refused))

    # When the agreed stages are applied on both, then the refunds batched on one and record
    # by record on the other
    first = [await receive(ch, agreed) for ch in ("tb_batch", "tb_each")]
    recorded: list[int] = []
    real = batch.refund_cases

    async def counted(*args: Any) -> batch.PageResult:
        page = await real(*args)
        recorded.append(sum(o == batch.CREATED for o, _ in page.outcomes.values()))
        return page

    monkeypatch.setattr(batch, "refund_cases", counted)
    batched = await receive("tb_batch", success)
    assert sum(recorded) > 3  # the batched page recorded them (no fallback)
    monkeypatch.setattr(platforms, "BATCH_ADVANCES", False)
    each = await receive("tb_each", success)
    # Then both counted the same outcomes, with some refunds recorded and some refused
    assert first[0] == first[1]
    assert batched == each
    assert batched[1] > 3 and batched[4] > 0
    # And every table holds the same rows
    tables = {ch: await _tables(db, ch) for ch in ("tb_batch", "tb_each")}
    assert tables["tb_batch"]["refunds"] and tables["tb_batch"]["order_audit"]
    for table in tables["tb_batch"]:
        assert tables["tb_batch"][table] == tables["tb_each"][table], table
