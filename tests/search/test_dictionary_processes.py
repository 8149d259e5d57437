"""The segmenter's user dictionary is the same in every process and follows the catalogue
without a restart (issue 22): three real processes on one database (both backends), API A that
takes a catalogue write, a worker W that indexes, API B that tokenises queries. A word added to
the catalogue through A is cut as one token by B at its next query, and W re-indexes the older
orders the word changes, found through B."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from ordertally.core.db import Database
from tests.factories import auth, order_body
from tests.live import ordertally_processes

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@contextmanager
def _processes(db: Database) -> Iterator[tuple[str, str]]:
    """API A, API B (`serve --no-worker`) and a worker (`ordertally worker`) on one database."""
    env = os.environ.copy()
    env.update(
        ORDERTALLY_DATABASE_URL=db.url, ORDERTALLY_BROKER_URL="", ORDERTALLY_DB_POOL_SIZE="3"
    )
    with ordertally_processes(env, apis=2, worker=True) as (a, b):
        yield a, b


async def _search(client: httpx.AsyncClient, key: str, q: str) -> dict[str, Any]:
    r = await client.get("/api/v1/search", params={"q": q}, headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until_found(
    client: httpx.AsyncClient, key: str, q: str, seconds: float = 60
) -> dict[str, Any]:
    """Search until something is found (the worker is another process), or give up."""
    deadline = time.monotonic() + seconds
    while True:
        doc = await _search(client, key, q)
        if doc["items"] or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.25)


async def test_a_catalogue_word_added_through_one_process_is_one_token_in_the_others(
    db: Database, keys: dict[str, str]
) -> None:
    admin, cs = keys["admin"], keys["cs"]
    with _processes(db) as (url_a, url_b):
        async with (
            httpx.AsyncClient(base_url=url_a, timeout=30) as a,
            httpx.AsyncClient(base_url=url_b, timeout=30) as b,
        ):
            # Given an order (through A) for a tea named with a word no dictionary knows,
            # indexed by W
            renamed = await a.patch(
                "/api/v1/catalog/skus/A", json={"name": "犇鑫红茶特级"}, headers=auth(admin)
            )
            assert renamed.status_code == 200, renamed.text
            created = await a.post(
                "/api/v1/orders",
                json=order_body(lines=[{"sku": "A", "quantity": 1, "unit_price": "19.90"}]),
                headers=auth(admin, **{"Idempotency-Key": uuid.uuid4().hex}),
            )
            assert created.status_code == 201, created.text
            order_no = created.json()["order_no"]
            indexed = await _until_found(b, cs, "犇鑫红茶特级")
            assert [i["order_no"] for i in indexed["items"]] == [order_no]
            # ... B cuts 犇鑫 as two characters, and the order is not found by it
            assert "犇鑫" not in (await _search(b, cs, "犇鑫白茶"))["query"][0]["words"]
            assert (await _search(b, cs, "犇鑫"))["items"] == []
            # When A adds a SKU of the brand 犇鑫 to the catalogue
            added = await a.post(
                "/api/v1/catalog/skus",
                json={"code": "TEA-BX-2", "name": "犇鑫 白茶", "brand": "犇鑫"},
                headers=auth(admin),
            )
            assert added.status_code == 201, added.text
            # Then B, never restarted, cuts 犇鑫 as one token at its very next query
            assert (await _search(b, cs, "犇鑫白茶"))["query"][0]["words"] == ["犇鑫", "白茶"]
            # And W re-indexes the older order with the word: B finds it by 犇鑫, as a product
            # word (the order's SKU has no brand)
            found = await _until_found(b, cs, "犇鑫")
            assert [i["order_no"] for i in found["items"]] == [order_no]
            assert found["items"][0]["highlights"] == [{"term": "犇鑫", "field": "product"}]
            # And B finds it by the longer phrase its words make (犇鑫 AND 红茶)
            phrase = await _search(b, cs, "犇鑫红茶")
            assert [i["order_no"] for i in phrase["items"]] == [order_no]
