"""Search by what the product master says (issue 22), on both databases: an order is found by
its lines' brand (汉字, pinyin, English name) and category (and the categories above it); a
catalogue change re-indexes the orders it concerns through consumers; the catalogue's words
become the segmenter's user dictionary, at index time and at query time."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from ordertally.catalog import service as catalog_service
from ordertally.catalog.models import CatalogRevision, CatalogWord
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.jobs.scheduler import JOBS, run_tick
from ordertally.orders.models import SalesOrder
from ordertally.search import dictionary
from ordertally.search import jobs as search_jobs  # noqa: F401  (registers the watcher job)
from ordertally.search import tokens as tk
from tests.factories import auth, make_order
from tests.search.helpers import index

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_dictionary() -> Any:
    """Each test's database has its own words: start from the shipped dictionary."""
    dictionary.forget()
    yield
    dictionary.forget()


async def search(client: httpx.AsyncClient, key: str, q: str) -> dict[str, Any]:
    r = await client.get("/api/v1/search", params={"q": q}, headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def found(client: httpx.AsyncClient, key: str, q: str) -> list[str]:
    return [i["order_no"] for i in (await search(client, key, q))["items"]]


async def search_service_watch(db: Database) -> dict[str, Any]:
    """One more run of the dictionary watcher (outside the job's slot)."""
    from ordertally.search import service

    async with db.transaction() as session:
        return await service.watch_catalog_words(session)


async def events_of(db: Database, event_type: str) -> int:
    async with db.transaction(write=False) as session:
        return int(
            await session.scalar(select(func.count()).where(OutboxEvent.event_type == event_type))
            or 0
        )


@pytest.fixture
async def tea_and_cup(db: Database) -> tuple[SalesOrder, SalesOrder]:
    """TEA-LJ-250 is a 狮峰 (Lion Peak) green tea under 茶叶 > 绿茶; CUP-CER-01 is teaware.
    One order of each, indexed."""
    async with db.transaction() as session:
        await catalog_service.create_category(
            session, {"code": "tea", "name": "茶叶", "name_en": "Tea"}
        )
        await catalog_service.create_category(
            session, {"code": "tea-green", "name": "绿茶", "name_en": "Green tea", "parent": "tea"}
        )
        await catalog_service.create_category(
            session, {"code": "teaware", "name": "茶具", "name_en": "Teaware"}
        )
        await catalog_service.update_sku(
            session,
            "TEA-LJ-250",
            {"brand": "狮峰", "brand_en": "Lion Peak", "category": "tea-green"},
            "test",
        )
        await catalog_service.update_sku(
            session, "CUP-CER-01", {"brand": "龙泉", "category": "teaware"}, "test"
        )
    tea = await make_order(db, lines=[{"sku": "TEA-LJ-250", "quantity": 1, "unit_price": "59.90"}])
    cup = await make_order(db, lines=[{"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"}])
    await index(db)
    return tea, cup


async def test_an_order_is_found_by_its_brand_and_category(
    tea_and_cup: tuple[SalesOrder, SalesOrder], client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    tea, cup = (o.order_no for o in tea_and_cup)
    cs = keys["cs"]
    # When cs searches by the brand in 汉字, its pinyin, its English name, and by category
    # Then each finds the tea order and only it (the cup is another brand and category)
    assert await found(client, cs, "狮峰") == [tea]
    assert await found(client, cs, "shifeng") == [tea]
    assert await found(client, cs, "shi feng") == [tea]
    assert await found(client, cs, "Lion Peak") == [tea]
    assert await found(client, cs, "lion") == [tea]
    assert await found(client, cs, "绿茶") == [tea]
    assert await found(client, cs, "Green tea") == [tea]
    assert await found(client, cs, "茶叶") == [tea]  # the category above
    assert await found(client, cs, "龙泉") == [cup]
    assert await found(client, cs, "茶具") == [cup]
    assert await found(client, cs, "狮峰 茶具") == []
    # and the match says it was the brand, its pinyin, the category
    doc = await search(client, cs, "狮峰")
    assert doc["items"][0]["highlights"] == [{"term": "狮峰", "field": "brand"}]
    doc = await search(client, cs, "shifeng")
    assert {"term": "shifeng", "field": "brand_pinyin"} in doc["items"][0]["highlights"]
    doc = await search(client, cs, "绿茶")
    assert doc["items"][0]["highlights"] == [{"term": "绿茶", "field": "category"}]


async def test_a_brand_or_category_change_reindexes_the_orders_through_consumers(
    tea_and_cup: tuple[SalesOrder, SalesOrder],
    client: httpx.AsyncClient,
    keys: dict[str, str],
    db: Database,
) -> None:
    tea, cup = (o.order_no for o in tea_and_cup)
    cs = keys["cs"]
    changed = await events_of(db, "CatalogChanged")
    requested = await events_of(db, "SearchReindexRequested")
    # Given a new brand for the tea and a renamed category, written in the catalogue
    async with db.transaction() as session:
        await catalog_service.update_sku(session, "TEA-LJ-250", {"brand": "御前"}, "test")
        await catalog_service.update_category(session, "teaware", {"name": "杯壶"})
    # Then nothing is re-indexed on the request path: the old words still find them
    assert await found(client, cs, "狮峰") == [tea]
    assert await found(client, cs, "杯壶") == []
    assert await events_of(db, "CatalogChanged") == changed + 2
    # When the worker runs the consumers (CatalogChanged -> SearchReindexRequested -> index)
    await index(db)
    # Then the orders are found by the new brand and category name, no longer by the old
    assert await events_of(db, "SearchReindexRequested") == requested + 2
    assert await found(client, cs, "御前") == [tea]
    assert await found(client, cs, "狮峰") == []
    assert await found(client, cs, "杯壶") == [cup]
    assert await found(client, cs, "茶具") == []


async def test_a_price_change_publishes_nothing_and_a_sku_without_orders_queues_nothing(
    tea_and_cup: tuple[SalesOrder, SalesOrder], db: Database
) -> None:
    changed = await events_of(db, "CatalogChanged")
    requested = await events_of(db, "SearchReindexRequested")
    # Given changes that do not touch what orders are found by, and a new SKU (no orders)
    async with db.transaction() as session:
        await catalog_service.update_sku(session, "TEA-LJ-250", {"cost_minor": 9900}, "test")
        await catalog_service.create_sku(
            session, {"code": "TEA-NEW-1", "name": "新茶 一号", "brand": "新品牌"}, "test"
        )
    await index(db)
    # Then no catalogue event and no re-index request was written
    assert await events_of(db, "CatalogChanged") == changed
    assert await events_of(db, "SearchReindexRequested") == requested


async def test_catalogue_words_feed_the_segmenter_at_index_and_query_time(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    cs = keys["cs"]
    # Given an order for a tea whose name holds a word no dictionary has (犇鑫)
    async with db.transaction() as session:
        await catalog_service.update_sku(session, "A", {"name": "犇鑫红茶特级"}, "test")
    await index(db)
    requested = await events_of(db, "SearchReindexRequested")
    order = await make_order(db, lines=[{"sku": "A", "quantity": 1, "unit_price": "19.90"}])
    await index(db)
    before = await search(client, cs, "犇鑫白茶")
    assert await found(client, cs, "犇鑫红茶特级") == [order.order_no]  # the whole name
    assert await found(client, cs, "犇鑫") == []  # 犇 / 鑫 are two characters to jieba
    assert "犇鑫" not in before["query"][0]["words"]
    # When the catalogue gains a SKU of the brand 犇鑫
    async with db.transaction() as session:
        await catalog_service.create_sku(
            session, {"code": "TEA-BX-2", "name": "犇鑫 白茶", "brand": "犇鑫"}, "test"
        )
    # Then the very next query is cut with it (no restart) ...
    after = await search(client, cs, "犇鑫白茶")
    assert after["query"][0]["words"] == ["犇鑫", "白茶"]
    # ... and once the dictionary watcher has run and the worker drained its request, the
    # old order is found by the word, as a product word (the order's line has no brand)
    assert await found(client, cs, "犇鑫") == []  # not re-indexed on the request path
    result = await run_tick(db, JOBS["search_catalog_words"], "test-worker")
    assert result is not None and result["words"] >= 2 and result["events"] == 1
    await index(db)
    doc = await search(client, cs, "犇鑫")
    assert [i["order_no"] for i in doc["items"]] == [order.order_no]
    assert doc["items"][0]["highlights"] == [{"term": "犇鑫", "field": "product"}]
    # and a second run of the watcher finds nothing new
    again = await search_service_watch(db)
    assert again == {"words": 0, "events": 0}
    assert await events_of(db, "SearchReindexRequested") == requested + 1


async def test_words_are_appended_once_and_every_process_state_cuts_alike(db: Database) -> None:
    # Given words added in two transactions, one repeating a word of the other
    async with db.transaction() as session:
        first = await catalog_service.word_revision(session)
        await catalog_service.create_sku(
            session, {"code": "W-1", "name": "犇鑫 白茶", "spec_text": "骉驫 款"}, "test"
        )
    async with db.transaction() as session:
        await catalog_service.create_sku(session, {"code": "W-2", "name": "犇鑫 红茶"}, "test")
        await catalog_service.create_sku(session, {"code": "W-3", "name": "白茶 犇鑫"}, "test")
        epoch, revision = await catalog_service.word_revision(session)
        words = await catalog_service.words_between(session, first[1], revision)
    # Then each word is stored once, and revisions moved once per transaction that added one
    assert sorted(words) == ["犇鑫", "白茶", "红茶", "骉驫"]
    assert revision == first[1] + 2
    # And a process that loads them all at once cuts like one that took them in two steps
    async with db.transaction(write=False) as session:
        dictionary.forget()
        await dictionary.ensure_current(session)
        at_once = [tk.query_words(t) for t in ("犇鑫白茶骉驫款", "红茶犇鑫")]
    dictionary.forget()
    tk.add_catalog_words(["白茶", "红茶"])
    tk.add_catalog_words(["骉驫", "犇鑫"])
    stepwise = [tk.query_words(t) for t in ("犇鑫白茶骉驫款", "红茶犇鑫")]
    assert at_once == stepwise == [["犇鑫", "白茶", "骉驫", "款"], ["红茶", "犇鑫"]]
    assert dictionary.seen() == (None, 0)
    async with db.transaction(write=False) as session:
        await dictionary.ensure_current(session)
    assert dictionary.seen() == (epoch, revision)
    # And when the database's word list starts over (emptied, restored: a new epoch), a process
    # forgets the words it had and cuts as the new list says
    async with db.transaction() as session:
        await session.execute(delete(CatalogWord))
        await session.execute(delete(CatalogRevision))
        await catalog_service.create_sku(session, {"code": "W-4", "name": "骉驫 礼盒"}, "test")
        new_epoch, new_revision = await catalog_service.word_revision(session)
    async with db.transaction(write=False) as session:
        await dictionary.ensure_current(session)
    assert new_epoch != epoch and new_revision == 1
    assert dictionary.seen() == (new_epoch, 1)
    assert tk.query_words("犇鑫白茶骉驫") == ["犇", "鑫", "白", "茶", "骉驫"]
