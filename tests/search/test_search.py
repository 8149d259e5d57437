"""Search over the HTTP API on both databases: orders created through the service, indexed by
the search lane (run as the worker would), then found by every kind of query a caller
gives: names (汉字, pinyin with every reading, initials, near miss), phones (full, masked,
last four), dates, order numbers and their tails, platform ids, waybills, payment ids, SKUs,
product and address words, synonyms; with filters, pages and explanations."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text, update

from ordertally.channels.events import ChannelOrderIngested
from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.orders.contact import PII_ADDRESS, PII_PHONE
from ordertally.orders.models import SalesOrder
from ordertally.search import query as parser
from ordertally.search import repository, service
from ordertally.search import tokens as tk
from ordertally.search.models import SearchDoc
from tests.conftest import ONLY_PG
from tests.factories import auth, close_case, make_order
from tests.fulfillment.helpers import shipments
from tests.payments.helpers import make_attempt, paid_notice, store_and_apply
from tests.search.helpers import index

pytestmark = pytest.mark.anyio

# 2026-01-25 10:00 in Shanghai.
PLACED = datetime(2026, 1, 25, 2, 0, tzinfo=UTC)
NEXT_DAY = datetime(2026, 1, 26, 4, 0, tzinfo=UTC)


async def find(client: httpx.AsyncClient, key: str, q: str, **params: Any) -> list[str]:
    """The order numbers a search returns, in order."""
    r = await client.get("/api/v1/search", params={"q": q, **params}, headers=auth(key))
    assert r.status_code == 200, r.text
    return [item["order_no"] for item in r.json()["items"]]


async def rewrite_phone_as_platform_masked(db: Database, order_no: str, masked: str) -> None:
    """Store the buyer's phone as a platform that masks it sends it (channels/ingest.py keeps
    the masked text as it came, encrypted, with its masked display)."""
    cipher = get_cipher()
    async with db.transaction() as session:
        await session.execute(
            update(SalesOrder)
            .where(SalesOrder.order_no == order_no)
            .values(
                customer_phone_enc=cipher.encrypt(masked, PII_PHONE),
                customer_phone_masked=masked,
                customer_phone_last4=masked[-4:],
            )
        )


@pytest.fixture
async def orders(db: Database) -> dict[str, SalesOrder]:
    """Three orders placed on 2026-01-25 (Shanghai) and indexed:
    a: 曾单 (polyphonic: ceng/zeng, dan/chan/shan), 13812345678, 上海 浦东 世纪大道, TEA-LJ-250;
    b: 张三, 13900001234, 北京 朝阳区 建国路, CUP-CER-01, platform id JD-778899001;
    c: 朴仇, a platform-masked phone 138****5678, 广州 天河区."""
    with clock.frozen(PLACED):
        a = await make_order(
            db,
            "paid",
            customer={"name": "曾单", "phone": "13812345678"},
            lines=[{"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"}],
        )
        b = await make_order(
            db,
            customer={"name": "张三", "phone": "+86 139 0000 1234"},
            external_id="JD-778899001",
            channel="jd",
            shipping_address={
                "name": "张三",
                "phone": "13900001234",
                "province": "北京市",
                "city": "北京市",
                "district": "朝阳区",
                "line1": "建国路88号",
                "postal_code": "100022",
            },
            lines=[{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}],
        )
        c = await make_order(
            db,
            customer={"name": "朴仇", "phone": "13700005678"},
            shipping_address={
                "name": "朴仇",
                "phone": "13700005678",
                "province": "广东省",
                "city": "广州市",
                "district": "天河区",
                "line1": "体育西路1号",
                "postal_code": "510620",
            },
        )
    await rewrite_phone_as_platform_masked(db, c.order_no, "138****5678")
    with clock.frozen(NEXT_DAY):
        await index(db)
    return {"a": a, "b": b, "c": c}


async def test_every_query_kind_finds_its_order(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a, b, c = (orders[k].order_no for k in "abc")
    cs = keys["cs"]
    # Given three indexed orders / When each kind of query is asked / Then exactly these match
    expected: list[tuple[str, list[str]]] = [
        ("曾单", [a]),
        ("zengshan", [a]),  # 曾 zeng + 单 shan: a surname reading, found among all readings
        ("cengdan", [a]),
        ("zhang san", [b]),
        ("zhangsan", [b]),
        ("zhangshan", [b]),  # near miss: sh for s
        ("piaoqiu", [c]),  # 朴 piao, 仇 qiu as surnames
        ("13812345678", [a]),
        ("+86 138 1234 5678", [a]),
        ("138****5678", [c, a]),  # a platform-masked phone, and a full one with the same ends
        ("5678", [c, a]),
        ("1234 张三", [b]),
        (a, [a]),  # the whole order number
        (a[-8:], [a]),  # its last eight characters
        ("JD-778899001", [b]),
        ("TEA-LJ-250", [c, a]),  # c has the factory's default lines
        ("测试商品", [c, b, a]),  # the catalogue's product names (conftest seeds them)
        ("test item", [c, b, a]),  # and their English names
        ("浦东", [a]),
        ("世纪大道", [a]),
        ("上海", [a]),
        ("朝阳区 建国路", [b]),
        ("广州", [c]),
        ("20260125", [c, b, a]),
        ("2026-01-25 张三", [b]),
        ("1月25日 曾单", [a]),
        ("1/25 朴仇", [c]),
        ("一月二十五号 朴仇", [c]),
        ("20260124", []),
        ("李雷", []),
    ]
    wrong = []
    with clock.frozen(NEXT_DAY):
        for q, want in expected:
            got = await find(client, cs, q)
            if got != want:
                wrong.append((q, got, want))
        # 昨天 is read in the merchant's time zone: on the 26th it is the 25th
        yesterday = await find(client, cs, "昨天 张三")
    assert wrong == []
    assert yesterday == [b]


async def test_a_near_miss_that_drops_the_g_between_two_syllables_finds_the_name(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given orders of 王国 (wang guo: -ng before g) and 杨光 (yang guang), indexed
    with clock.frozen(PLACED):
        wang = await make_order(db, customer={"name": "王国", "phone": "13500002468"})
        yang = await make_order(db, customer={"name": "杨光", "phone": "13500001357"})
    with clock.frozen(NEXT_DAY):
        await index(db)
        # When callers who say -n for -ng type the names as they hear them
        found = {q: await find(client, keys["cs"], q) for q in ("wanguo", "yanguan", "wangguo")}
        # ... or another name that only shares the folded syllables' start
        other = await find(client, keys["cs"], "wangguan")
    # Then each finds its own order, and the other name finds neither
    assert found == {
        "wanguo": [wang.order_no],
        "yanguan": [yang.order_no],
        "wangguo": [wang.order_no],
    }
    assert other == []


async def test_a_street_the_segmenter_cuts_with_a_single_character_is_found(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order to 武汉 武昌区 中南路72号 (cut 中 / 南路 / 72 / 号; single characters are
    # not indexed as address words)
    address = {
        "name": "刘英春",
        "phone": "13500007788",
        "province": "湖北省",
        "city": "武汉市",
        "district": "武昌区",
        "line1": "中南路72号",
        "postal_code": "430071",
    }
    with clock.frozen(PLACED):
        order = await make_order(
            db, customer={"name": "刘英春", "phone": "13500007788"}, shipping_address=address
        )
    with clock.frozen(NEXT_DAY):
        await index(db)
        # When the caller names the street as people do, with the district and the name
        found = await find(client, keys["cs"], "武昌 中南路 刘英春")
        alone = await find(client, keys["cs"], "中南路")
        elsewhere = await find(client, keys["cs"], "中山路 刘英春")
    # Then the order is found, and a street it is not on does not find it
    assert found == [order.order_no]
    assert alone == [order.order_no]
    assert elsewhere == []


async def test_results_explain_the_match_and_show_only_masked_data(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a = orders["a"].order_no
    # Given the caller's words / When cs searches
    with clock.frozen(NEXT_DAY):
        r = await client.get(
            "/api/v1/search", params={"q": "曾单 5678 20260125"}, headers=auth(keys["cs"])
        )
    # Then the order comes with why it matched, and its phone masked as everywhere
    assert r.status_code == 200
    doc = r.json()
    assert [(t["text"], t["kind"]) for t in doc["query"]] == [
        ("20260125", "date"),
        ("曾单", "text"),
        ("5678", "phone_last4"),
    ]
    (item,) = doc["items"]
    assert item["order_no"] == a
    assert item["customer_phone"] == "138****5678"
    assert item["customer_name"] == "曾*"
    assert item["highlights"] == [
        {"term": "20260125", "field": "date"},
        {"term": "曾单", "field": "name"},
        {"term": "5678", "field": "phone_last4"},
    ]
    assert "13812345678" not in r.text


async def test_a_role_that_may_not_see_the_phone_finds_by_its_last_four(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given finance, who may not reveal a contact, and warehouse
    for role in ("finance", "warehouse"):
        # When they search by the last four digits
        r = await client.get("/api/v1/search", params={"q": "5678"}, headers=auth(keys[role]))
        # Then they find the orders, with masked phones only
        assert r.status_code == 200
        items = r.json()["items"]
        assert [i["order_no"] for i in items] == [orders["c"].order_no, orders["a"].order_no]
        assert [i["customer_phone"] for i in items] == ["138****5678", "138****5678"]
        assert "13812345678" not in r.text and "13700005678" not in r.text
    # And the index itself holds no phone, name or address in clear
    async with db.transaction(write=False) as session:
        texts = [d.tokens for d in (await session.scalars(select_docs())).all()]
    words = [w for t in texts for w in t.split()]
    assert words and not any(s in w for w in words for s in ("曾单", "浦东", "TEA"))
    # A keyed token is letters and 12 hex digits, which hold "5678" by chance now and then
    # (the key is new each run): the clear digits are a word of their own or a word's tail.
    assert not any(w == "5678" or (w.endswith("5678") and not _keyed(w)) for w in words)


def select_docs() -> Any:
    from sqlalchemy import select

    return select(SearchDoc).order_by(SearchDoc.order_id)


async def test_filters_and_pages(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a, b, c = (orders[k].order_no for k in "abc")
    cs = keys["cs"]
    # Filters combine with the query (status, channel, dates, open exceptions)
    assert await find(client, cs, "20260125", status="allocated") == [a]  # paid, then allocated
    assert await find(client, cs, "", channel="jd") == [b]
    assert await find(client, cs, "", date_from="2026-01-25", date_to="2026-01-25") == [c, b, a]
    assert await find(client, cs, "", date_from="2026-01-26") == []
    assert await find(client, cs, "测试商品", has_open_exception=True) == []
    # Pages: newest first, each page after the last one's cursor
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": "测试商品", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/search", params=params, headers=auth(cs))
        seen += [i["order_no"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [c, b, a]
    # Bad input is refused with a stable code
    bad = await client.get("/api/v1/search", params={"cursor": "nope"}, headers=auth(cs))
    assert (bad.status_code, bad.json()["code"]) == (400, "search.invalid_cursor")
    bad = await client.get("/api/v1/search", params={"status": "lost"}, headers=auth(cs))
    assert (bad.status_code, bad.json()["code"]) == (400, "search.invalid_filter")


async def test_synonyms_are_merchant_edited_and_apply_both_ways(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a = orders["a"].order_no
    # Given no synonym, "longjing" finds nothing
    assert await find(client, keys["cs"], "longjing") == []
    # When ops says longjing means 龙井 (and cs may not)
    body = {"term": "LongJing", "synonym": "测试商品 TEA-LJ-250"}
    refused = await client.post("/api/v1/search/synonyms", json=body, headers=auth(keys["cs"]))
    assert refused.status_code == 403
    r = await client.post("/api/v1/search/synonyms", json=body, headers=auth(keys["ops"]))
    assert r.status_code == 201
    again = await client.post(
        "/api/v1/search/synonyms",
        json={"term": body["synonym"], "synonym": body["term"]},
        headers=auth(keys["ops"]),
    )
    assert (again.status_code, again.json()["id"]) == (200, r.json()["id"])
    # Then the word finds the product's orders at once (no re-index)
    assert await find(client, keys["cs"], "longjing") == [orders["c"].order_no, a]
    # And deleting it stops that
    gone = await client.delete(
        f"/api/v1/search/synonyms/{r.json()['id']}", headers=auth(keys["ops"])
    )
    assert gone.status_code == 204
    assert await find(client, keys["cs"], "longjing") == []
    missing = await client.delete(
        f"/api/v1/search/synonyms/{r.json()['id']}", headers=auth(keys["ops"])
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "search.synonym_not_found")


async def test_an_updated_order_is_found_by_its_new_data_after_the_consumer_runs(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    a = orders["a"]
    cs = keys["cs"]
    # Given the paid order's shipment, planned by fulfillment; nothing found by its waybill yet
    (shipment,) = await shipments(db, a.id)
    assert await find(client, cs, "ZT7000000000001") == []
    # When the warehouse ships it with a waybill (and carrier)
    wh = auth(keys["warehouse"])
    assert (await client.post(f"/api/v1/shipments/{shipment.id}/confirm", headers=wh)).is_success
    r = await client.post(
        f"/api/v1/shipments/{shipment.id}/ship",
        json={"waybill_no": "ZT7000000000001", "company": "zhongtong"},
        headers=wh,
    )
    assert r.status_code == 200, r.text
    # Then nothing is found before the consumer runs (never on the request path)...
    assert await find(client, cs, "ZT7000000000001") == []
    await index(db)
    # ...and after it, by the waybill, the new status and the carrier and warehouse filters
    assert await find(client, cs, "ZT7000000000001") == [a.order_no]
    assert await find(client, cs, "曾单", status="shipped") == [a.order_no]
    assert await find(client, cs, "", carrier="zhongtong", warehouse="WH-TEST") == [a.order_no]
    # When the address changes (stored as the order's data is stored) and an event about the
    # order is applied
    cipher = get_cipher()
    moved = orjson.dumps(
        {
            "name": "曾单",
            "phone": "13812345678",
            "province": "浙江省",
            "city": "杭州市",
            "district": "西湖区",
            "line1": "文三路100号",
            "postal_code": "310000",
        }
    ).decode()
    async with db.transaction() as session:
        await session.execute(
            update(SalesOrder)
            .where(SalesOrder.id == a.id)
            .values(shipping_address_enc=cipher.encrypt(moved, PII_ADDRESS), ship_city="杭州市")
        )
    # (a platform's update of the order: what channels publish when it changed on their side)
    async with db.transaction() as session:
        await outbox.publish(
            session,
            "ChannelOrderIngested",
            ChannelOrderIngested(
                order_id=a.id,
                order_no=a.order_no,
                account="jd-shop",
                platform="jd",
                external_id=a.order_no,
                created=False,
                buyer_platform_id="",
                categories=[],
            ),
            aggregate_type="order",
            aggregate_id=a.order_no,
        )
    await index(db)
    # Then it is found by the new city and no longer by the old district
    assert await find(client, cs, "杭州 西湖区") == [a.order_no]
    assert await find(client, cs, "浦东") == []


@pytest.mark.parametrize("close", ["resolve", "cancel"])
async def test_the_open_exception_filter_follows_a_case_opened_and_closed(
    orders: dict[str, SalesOrder],
    client: httpx.AsyncClient,
    keys: dict[str, str],
    db: Database,
    close: str,
) -> None:
    b = orders["b"]
    cs = keys["cs"]
    assert await find(client, cs, "张三", has_open_exception=True) == []
    # When a case is opened on the order, by a path that changes nothing else about it
    async with db.transaction() as session:
        case_id = await exceptions_service.open_case(
            session,
            order_id=b.id,
            category="order",
            type="address_check",
            blocking=False,
            detail={},
        )
    await index(db)
    # Then the filter finds it among the orders with an open exception
    assert await find(client, cs, "张三", has_open_exception=True) == [b.order_no]
    assert await find(client, cs, "张三", has_open_exception=False) == []
    # When the case is resolved (or cancelled), it no longer does
    await close_case(db, case_id, close)
    await index(db)
    assert await find(client, cs, "张三", has_open_exception=True) == []
    assert await find(client, cs, "张三", has_open_exception=False) == [b.order_no]


async def test_out_trade_no_and_transaction_id_after_payment(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a pending order and its payment attempt
    order = await make_order(db)
    payment = await make_attempt(db, order)
    # When the provider says it is paid, and the consumers run
    await store_and_apply(db, paid_notice(payment, txn="4200000001202601251234567890"))
    await index(db)
    # Then the order is found by our out_trade_no and by the provider's transaction id
    cs = keys["cs"]
    assert await find(client, cs, payment.out_trade_no) == [order.order_no]
    assert await find(client, cs, "4200000001202601251234567890") == [order.order_no]
    # (paid, then allocated by the fulfillment consumer: the row follows the newest status)
    assert await find(client, cs, "", status="allocated") == [order.order_no]


async def test_a_word_cut_with_a_one_character_tail_finds_its_order(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given an order shipped to 关上路 (the segmenter cuts it 关上 + 路, and the index keeps no
    # one-character word) and another on 体育西路
    def address(line1: str) -> dict[str, str]:
        return {
            "name": "王芳",
            "phone": "13600001111",
            "province": "云南省",
            "city": "昆明市",
            "district": "官渡区",
            "line1": line1,
            "postal_code": "650000",
        }

    with clock.frozen(PLACED):
        wanted = await make_order(db, shipping_address=address("关上路5号"))
        await make_order(db, shipping_address=address("体育西路1号"))
    with clock.frozen(NEXT_DAY):
        await index(db)
        # When the street is typed as the caller says it / Then only that order is found
        assert await find(client, keys["cs"], "关上路") == [wanted.order_no]
        assert await find(client, keys["cs"], "关上路 王芳") == [wanted.order_no]


@ONLY_PG  # PostgreSQL's statistics decide the split; FTS5 reads every term
async def test_broad_terms_checked_on_the_rows_the_rarer_ones_find_give_the_same_orders(
    orders: dict[str, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    a, b, c = (orders[k].order_no for k in "abc")
    cs = keys["cs"]
    queries = {
        "测试商品 5678 20260125": [c, a],
        "测试商品 张三": [b],
        "上海 测试商品 曾单": [a],
        "test item 1234": [b],
        "测试商品 李雷": [],
        "上海 5678": [a],  # c has a phone ending 5678 too, and is not shipped to 上海
    }
    with clock.frozen(NEXT_DAY):
        # Given the index read whole (no statistics yet): what each search finds
        whole = {q: await find(client, cs, q) for q in queries}
        # When the statistics say the product's words and 上海 are on 60% of 10,000 orders (and
        # the least common token listed on 0.02%: one not listed is rarer still)
        words = [tk.token(kind, w) for kind in ("pw", "ps") for w in ("测试商品", "test", "item")]
        words.append(tk.token("ad", "上海"))
        common = {tk.token("pw", "other"): 0.0002, **dict.fromkeys(words, 0.6)}
        shares = parser.Shares(10_000, common)
        service.pin_shares(shares)
        try:
            prepared = {q: service.prepare(q, {}, "pg", shares=shares).match for q in queries}
            split = {q: await find(client, cs, q) for q in queries}
            # the plan of the split search reads the rarer terms from the index, and checks the
            # product's words on the rows it finds
            match = prepared["测试商品 5678 20260125"]
            assert match is not None and match.check is not None
            async with db.transaction(write=False) as session:
                await session.execute(text("SET LOCAL enable_seqscan = off"))
                plan = await repository.plan(session, match)
        finally:
            service.forget_shares()
    # Then every search was split, and each found the same orders in the same order
    assert [q for q, m in prepared.items() if m is None or m.check is None] == []
    assert split == whole == queries
    assert "hand_search_doc_tsv" in plan
    (checked,) = [line for line in plan.splitlines() if "ts_match_vq" in line]
    assert "Filter" in checked and "Cond" not in checked


@ONLY_PG  # SQLite keeps no such statistics
async def test_token_shares_are_postgresql_statistics_of_the_index_column(
    orders: dict[str, SalesOrder], db: Database
) -> None:
    # Given three indexed orders, the index analysed (autovacuum does it as the index grows)
    async with db.transaction() as session:
        await session.execute(text("ANALYZE search_doc"))
        texts = [d.tokens.split() for d in (await session.scalars(select_docs())).all()]
        # When the shares are read
        rows, common = await repository.token_shares(session)
    # Then they are the rows, and the share of rows that hold each token listed
    assert rows == 3
    assert common
    for token, share in common.items():
        assert share == pytest.approx(sum(token in t for t in texts) / 3, abs=1e-6)
    # all three were placed on the 25th
    assert common[tk.token("dt", "20260125")] == pytest.approx(1.0)


def _keyed(word: str) -> bool:
    """A blind token: a kind's letters and 12 hex digits."""
    return re.fullmatch(r"[a-z]{1,3}[0-9a-f]{12}", word) is not None
