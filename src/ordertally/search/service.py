"""Use cases of the search domain: (re)index orders from what each domain owns, search with
one query and filters, explain the matches, and keep the merchant's synonyms."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database, count_after_commit, dialect_of
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import service as fulfillment_service
from ordertally.orders import service as orders_service
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import TRANSITIONS
from ordertally.payments import service as payments_service
from ordertally.search import dictionary, metrics, repository
from ordertally.search import events as search_events  # noqa: F401  (registers the schema)
from ordertally.search import query as parser
from ordertally.search import tokens as tk
from ordertally.search.errors import InvalidCursor, SynonymNotFound, SynonymRefused
from ordertally.search.models import SearchSynonym
from ordertally.search.repository import Filters

MAX_LIMIT = 100
# Orders re-indexed per SearchReindexRequested event (each chunk publishes the next), and SKU
# codes per event.
REINDEX_CHUNK = 500
REINDEX_SKUS = 500
# The events that change what an order is found by. Payments change it only when it is paid
# (out_trade_no, transaction id): that is OrderPaid, a transition. The customers domain
# publishes no event of its own; a customer's data lives on the order.
INDEXED_EVENTS: tuple[str, ...] = (
    "OrderCreated",
    *sorted({t.event_type for t in TRANSITIONS}),
    "ShipmentShipped",
    "ShipmentDelivered",
    "ShipmentTrackingException",
    "ChannelOrderIngested",
    # the "open exception" filter
    "ExceptionCaseOpened",
    "ExceptionCaseClosed",
)


def today() -> date:
    """The merchant's local date now (昨天 and 1月25日 are read against it)."""
    return clock.to_local(clock.now(), get_settings().timezone).date()


def _facts(
    order: SalesOrder,
    lines: list[Any],
    payment_ids: list[str],
    shipments: list[Any],
    open_exception: bool,
    catalog: dict[str, catalog_service.SearchFacts] | None = None,
) -> tk.OrderFacts:
    cipher = get_cipher()
    address = orjson.loads(cipher.decrypt(order.shipping_address_enc, PII_ADDRESS))
    names = (cipher.decrypt(order.customer_name_enc, PII_NAME), str(address.get("name") or ""))
    phones = (cipher.decrypt(order.customer_phone_enc, PII_PHONE), str(address.get("phone") or ""))
    placed = clock.to_local(order.created_at, get_settings().timezone).date()
    known = [(catalog or {}).get(ln.sku) for ln in lines]
    return tk.OrderFacts(
        order_no=order.order_no,
        channel=order.channel,
        status=order.status,
        placed_on=placed,
        external_id=order.external_id,
        names=tuple(dict.fromkeys(n for n in names if n)),
        phones=tuple(dict.fromkeys(p for p in phones if p)),
        address=tuple(str(address.get(k) or "") for k in ("province", "city", "district", "line1")),
        # the product's words from the line's snapshot: its name, spec and English name
        skus=tuple(
            (ln.sku, " ".join(w for w in (ln.sku_name, ln.sku_spec, ln.sku_name_en) if w))
            for ln in lines
        ),
        # brand and category from the live catalogue (re-indexed when the catalogue changes)
        brands=tuple(dict.fromkeys(b for f in known if f for b in f.brands)),
        categories=tuple(dict.fromkeys(c for f in known if f for c in f.categories)),
        waybills=tuple(
            dict.fromkeys(
                [*(s.waybill_no for s in shipments if s.waybill_no), *order.waybill_nos.split()]
            )
        ),
        payment_ids=tuple(payment_ids),
        warehouses=tuple(dict.fromkeys(s.warehouse_code for s in shipments)),
        carriers=tuple(dict.fromkeys(c for s in shipments for c in (s.carrier, s.company) if c)),
        open_exception=open_exception,
    )


def doc_row(facts: tk.OrderFacts, order: SalesOrder, source_at: datetime) -> dict[str, Any]:
    """The index row of an order from its facts."""
    text = tk.tokens_of(facts)
    return {
        "order_id": order.id,
        "order_no": order.order_no,
        "channel": order.channel,
        "status": order.status,
        "placed_date": facts.placed_on.isoformat(),
        "has_open_exception": facts.open_exception,
        "total_minor": order.total_minor,
        "currency": order.currency,
        "customer_name_masked": order.customer_name_masked,
        "customer_phone_masked": order.customer_phone_masked,
        "ship_city": order.ship_city[:64],
        "tokens": text,
        "token_count": text.count(" ") + 1,
        "created_at": order.created_at,
        "source_at": source_at,
        "indexed_at": clock.now(),
    }


async def index_orders(
    session: AsyncSession, orders: list[SalesOrder], source_at: dict[int, datetime] | None = None
) -> int:
    """Write the index rows of some orders from what every owning domain says now (absolute
    values: running it twice writes the same rows). Returns the rows written."""
    if not orders:
        return 0
    await dictionary.ensure_current(session)
    ids = [o.id for o in orders]
    lines = await orders_service.line_words_of_orders(session, ids)
    catalog = await catalog_service.search_facts(
        session, {ln.sku for found in lines.values() for ln in found}
    )
    payments = await payments_service.payment_ids_of(session, ids)
    shipments: dict[int, list[Any]] = {}
    for s in await fulfillment_service.shipments_of_orders(session, ids):
        shipments.setdefault(s.order_id, []).append(s)
    open_cases = await exceptions_service.orders_with_open_cases(session, ids)
    now = clock.now()
    rows = []
    for order in orders:
        facts = _facts(
            order,
            lines.get(order.id, []),
            payments.get(order.id, []),
            shipments.get(order.id, []),
            order.id in open_cases,
            catalog,
        )
        at = (source_at or {}).get(order.id, now)
        rows.append(doc_row(facts, order, at))
        metrics.observe_lag((now - clock.as_utc(at)).total_seconds())
    await repository.upsert_docs(session, rows)
    return len(rows)


async def mark_dirty(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Queue for the search lane the orders these outbox rows are about (the publish hook: in
    the business transaction, one insert for all of them, an order once per call, the lag
    counted from its oldest event)."""
    oldest: dict[int, datetime] = {}
    for row in rows:
        order_id = row["payload"].get("order_id")
        if order_id is None:
            continue
        at = row["occurred_at"]
        oldest[int(order_id)] = min(oldest.get(int(order_id), at), at)
    await repository.add_dirty(
        session, [{"order_id": i, "since": at} for i, at in sorted(oldest.items())]
    )


async def queue_orders(session: AsyncSession, order_ids: list[int]) -> None:
    """Queue some orders for the search lane (a re-index that no event announced)."""
    now = clock.now()
    await repository.add_dirty(session, [{"order_id": i, "since": now} for i in order_ids])


@dataclass(slots=True)
class LaneBatch:
    claimed: int = 0  # queued rows claimed
    indexed: int = 0  # orders indexed
    deferred: int = 0  # orders another lane or a rebuild held (left queued)
    gone: int = 0  # orders that no longer exist (their rows dropped)


async def index_dirty(session: AsyncSession, limit: int) -> LaneBatch:
    """One batch of the search lane: claim up to `limit` queued rows, lock their orders (those
    another transaction holds stay queued), index each order once from what every domain says
    now, and delete the rows claimed, all in the caller's transaction. A change committed
    after the claim queued a row of its own, which stays: the order is indexed again."""
    claimed = await repository.claim_dirty(session, limit)
    result = LaneBatch(claimed=len(claimed))
    if not claimed:
        return result
    since: dict[int, datetime] = {}
    for row in claimed:
        since[row.order_id] = min(since.get(row.order_id, row.since), row.since)
    mine = await repository.lock_orders(session, list(since), wait=False)
    result.deferred = len(since) - len(mine)
    orders = await orders_service.get_orders_by_id(session, sorted(mine))
    result.indexed = await index_orders(session, orders, {o.id: since[o.id] for o in orders})
    result.gone = len(mine) - len(orders)
    await repository.delete_dirty(session, [r.id for r in claimed if r.order_id in mine])
    return result


async def reindex_skus(
    session: AsyncSession, skus: list[str], after_order_id: int, reason: str
) -> int:
    """Queue for the search lane the next chunk of orders with a line of one of these SKUs
    and, when more may remain, publish the next chunk's request; returns the orders queued."""
    ids = await orders_service.order_ids_with_skus(session, skus, after_order_id, REINDEX_CHUNK)
    if not ids:
        return 0
    await queue_orders(session, ids)
    if len(ids) == REINDEX_CHUNK:
        await request_reindex(session, skus, reason, after_order_id=ids[-1])
    return len(ids)


async def request_reindex(
    session: AsyncSession, skus: list[str], reason: str, *, after_order_id: int = 0
) -> int:
    """Queue the re-indexing of the orders of these SKUs (SearchReindexRequested, 500 codes
    each), in the caller's transaction; returns the events published."""
    codes = sorted(set(skus))
    for start in range(0, len(codes), REINDEX_SKUS):
        await outbox.publish(
            session,
            "SearchReindexRequested",
            {
                "skus": codes[start : start + REINDEX_SKUS],
                "after_order_id": after_order_id,
                "reason": reason,
            },
            aggregate_type="search",
            aggregate_id="reindex",
        )
    return -(-len(codes) // REINDEX_SKUS)


async def catalog_changed(session: AsyncSession, skus: list[str], categories: list[str]) -> int:
    """SKUs whose brand, category or words changed, and categories renamed or moved: queue the
    re-indexing of their orders (only when some exist)."""
    codes = sorted({*skus, *await catalog_service.codes_in_categories(session, categories)})
    if not codes or not await orders_service.order_ids_with_skus(session, codes, 0, 1):
        return 0
    return await request_reindex(session, codes, "catalog")


async def watch_catalog_words(session: AsyncSession) -> dict[str, Any]:
    """The words the catalogue added since the index last looked: queue the re-indexing of
    the orders of every SKU whose texts contain one (their segmentation may change), then
    record the revision taken in. Runs as a periodic job, never on the request path."""
    epoch, revision = await catalog_service.word_revision(session)
    seen_epoch, seen_revision = await repository.word_watch(session)
    if epoch is None or (epoch, revision) == (seen_epoch, seen_revision):
        return {"words": 0, "events": 0}
    after = seen_revision if epoch == seen_epoch and revision >= seen_revision else 0
    new = await catalog_service.words_between(session, after, revision)
    events = 0
    if new:
        codes = await catalog_service.codes_using_words(session, new)
        if codes and await orders_service.order_ids_with_skus(session, codes, 0, 1):
            events = await request_reindex(session, codes, "words")
    await repository.set_word_watch(session, epoch, revision)
    return {"words": len(new), "events": events, "revision": revision}


async def rebuild_chunk(session: AsyncSession, after_id: int, chunk: int) -> tuple[int, int]:
    """Re-index the next `chunk` orders after `after_id`; (last id, rows written), rows 0 at
    the end."""
    orders = await orders_service.orders_after(session, after_id, chunk)
    if not orders:
        return after_id, 0
    # A lane indexing one of them now finishes first: this read is then the newer one.
    await repository.lock_orders(session, [o.id for o in orders], wait=True)
    return orders[-1].id, await index_orders(session, orders)


async def orders_to_index(session: AsyncSession) -> int:
    """How many orders a full rebuild walks."""
    return await orders_service.count_orders(session)


# --- searching ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    doc: Row[Any]  # the index row's result columns (repository._RESULT), by attribute
    highlights: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Page:
    terms: list[parser.Term]
    hits: list[Hit]
    next_cursor: str | None


def encode_cursor(order_id: int) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(f"o:{order_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The order id behind a cursor, or InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "o" or not value.isdigit():
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this API returned") from exc


# The synonyms, read at most every few seconds per process (a search need not pay a round trip
# for a table that changes a few times a day); this process's own edits clear it at once.
SYNONYMS_TTL_SECONDS = 5.0
_synonyms: dict[str, Any] = {"map": None, "until": 0.0}


def forget_synonyms() -> None:
    """Drop this process's copy of the synonyms (after an edit)."""
    _synonyms["map"] = None


async def synonym_map(session: AsyncSession) -> dict[str, tuple[str, ...]]:
    """word -> its synonyms, both ways."""
    cached = _synonyms["map"]
    if cached is not None and time.monotonic() < _synonyms["until"]:
        return cached
    found: dict[str, list[str]] = {}
    for s in await repository.synonyms(session):
        found.setdefault(s.term, []).append(s.synonym)
        found.setdefault(s.synonym, []).append(s.term)
    result = {k: tuple(dict.fromkeys(v)) for k, v in found.items()}
    _synonyms.update(map=result, until=time.monotonic() + SYNONYMS_TTL_SECONDS)
    return result


def cached_synonyms() -> dict[str, tuple[str, ...]] | None:
    """This process's copy of the synonyms while it is fresh (None: read them again)."""
    cached: dict[str, tuple[str, ...]] | None = _synonyms["map"]
    if cached is not None and time.monotonic() < _synonyms["until"]:
        return cached
    return None


# How common the index's tokens are (PostgreSQL's statistics of the index column, which change
# only when it is analysed): re-read by each process this often.
SHARES_TTL_SECONDS = 300.0
_shares: dict[str, Any] = {"value": None, "until": 0.0}


def cached_shares() -> tuple[bool, parser.Shares | None]:
    """Whether this process's copy of the token shares is fresh, and the copy."""
    return time.monotonic() < _shares["until"], _shares["value"]


def forget_shares() -> None:
    """Read the token shares again at the next search (after an ANALYZE, in tests)."""
    _shares.update(value=None, until=0.0)


def pin_shares(shares: parser.Shares | None) -> None:
    """Search by these token shares until `forget_shares` (tests and benches that set what the
    statistics say)."""
    _shares.update(value=shares, until=float("inf"))


async def token_shares(session: AsyncSession) -> parser.Shares | None:
    """How common the index's tokens are (None on SQLite, or before PostgreSQL analysed the
    index): what `query.split` decides by."""
    fresh, value = cached_shares()
    if fresh:
        return value
    rows, common = await repository.token_shares(session)
    value = parser.Shares(rows, common) if common else None
    _shares.update(value=value, until=time.monotonic() + SHARES_TTL_SECONDS)
    return value


@dataclass(frozen=True, slots=True)
class _Query:
    """A query made ready for the engine: its terms, what the rows must match, the cursor's
    order id, how many rows to read and the legend that explains a match."""

    terms: list[parser.Term]
    match: repository.Match | None
    after: int | None
    limit: int
    legend: dict[str, list[tuple[str, str]]]


def prepare(
    q: str,
    synonyms: dict[str, tuple[str, ...]],
    dialect: str,
    *,
    shares: parser.Shares | None = None,
    warehouse: str | None = None,
    carrier: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> _Query:
    """A query parsed and rendered for the engine (`pg` or `sqlite`); on PostgreSQL with the
    token shares at hand, its broad terms checked on the rows the rarer ones find."""
    terms = parser.parse(q, today(), synonyms)
    nodes: list[parser.Node] = [t.node for t in terms]
    if warehouse:
        nodes.append(parser.Leaf("wh", tk.norm(warehouse), warehouse))
    if carrier:
        nodes.append(parser.Leaf("ca", tk.norm(carrier), carrier))
    match = None
    if nodes:
        read, checked = parser.split(nodes, shares if dialect == "pg" else None)
        expression = parser.render(parser.AllOf(tuple(read)), dialect)
        check = parser.render(parser.AllOf(tuple(checked)), dialect) if checked else None
        match = repository.Match(expression, check)
    after = decode_cursor(cursor) if cursor else None
    limit = max(1, min(limit, MAX_LIMIT))
    return _Query(terms, match, after, limit, parser.legend([t.node for t in terms]))


async def search(
    session: AsyncSession,
    q: str,
    filters: Filters,
    *,
    warehouse: str | None = None,
    carrier: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
    words: tuple[str | None, int] | None = None,
) -> Page:
    """Orders matching every term of `q` and every filter, newest first, with why each matched.
    `words`: the catalogue's word revision when the caller read it already
    (`dictionary.current`); read here otherwise."""
    if words is None:
        await dictionary.ensure_current(session)
    else:
        await dictionary.ensure_at(session, *words)
    dialect = "pg" if dialect_of(session) == "postgresql" else "sqlite"
    query = prepare(
        q,
        await synonym_map(session),
        dialect,
        shares=await token_shares(session),
        warehouse=warehouse,
        carrier=carrier,
        cursor=cursor,
        limit=limit,
    )
    limit = query.limit
    docs = await repository.search(session, query.match, filters, query.after, limit + 1)
    hits = [Hit(d, tk.explain(d.tokens, query.legend)) for d in docs[:limit]]
    next_cursor = encode_cursor(docs[limit - 1].order_id) if len(docs) > limit else None
    return Page(query.terms, hits, next_cursor)


# Where a plain result row has the order id and the tokens.
ROW_ORDER_ID = repository.RESULT_COLUMNS.index("order_id")
ROW_TOKENS = repository.RESULT_COLUMNS.index("tokens")


@dataclass(frozen=True, slots=True)
class Rows:
    """A page of results as plain rows (the columns of `repository._RESULT` by position), each
    with why it matched: what the search request shapes its answer from."""

    terms: list[parser.Term]
    rows: list[Any]
    highlights: list[list[dict[str, str]]]
    next_cursor: str | None


async def search_rows(
    db: Database,
    q: str,
    filters: Filters,
    *,
    words: tuple[str | None, int],
    warehouse: str | None = None,
    carrier: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> Rows:
    """`search`, for a request with the catalogue's word revision in hand (`dictionary.current`):
    the same orders, order and explanations, read as plain rows in one statement outside any
    unit of work. A session is opened only when this process must first catch up with the
    catalogue's words or re-read the synonyms or (PostgreSQL) the token shares."""
    synonyms = cached_synonyms()
    fresh, shares = cached_shares()
    if synonyms is None or not (fresh or db.is_sqlite) or dictionary.seen() != words:
        async with db.reads() as session:
            await dictionary.ensure_at(session, *words)
            synonyms = await synonym_map(session)
            shares = await token_shares(session)
    dialect = "sqlite" if db.is_sqlite else "pg"
    query = prepare(
        q,
        synonyms,
        dialect,
        shares=shares,
        warehouse=warehouse,
        carrier=carrier,
        cursor=cursor,
        limit=limit,
    )
    limit = query.limit
    rows = list(await repository.search_rows(db, query.match, filters, query.after, limit + 1))
    legend = query.legend
    explained = [tk.explain(row[ROW_TOKENS], legend) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1][ROW_ORDER_ID]) if len(rows) > limit else None
    return Rows(query.terms, rows[:limit], explained, next_cursor)


# --- synonyms ---------------------------------------------------------------------------------


async def list_synonyms(session: AsyncSession) -> list[SearchSynonym]:
    """The merchant's synonym pairs."""
    return await repository.synonyms(session)


async def add_synonym(
    session: AsyncSession, term: str, synonym: str, by: str
) -> tuple[SearchSynonym, bool]:
    """Record that two words mean the same; (the pair, whether it is new)."""
    a, b = sorted((tk.norm(term), tk.norm(synonym)))
    if not a or a == b:
        raise SynonymRefused("a synonym needs two different words")
    row = await repository.add_synonym(
        session, {"term": a, "synonym": b, "created_by": by, "created_at": clock.now()}
    )
    forget_synonyms()
    count_after_commit(session, forget_synonyms)  # and again once it is visible to others
    if row is not None:
        return row, True
    existing = [s for s in await repository.synonyms(session) if (s.term, s.synonym) == (a, b)]
    return existing[0], False


async def delete_synonym(session: AsyncSession, synonym_id: int) -> None:
    """Forget a synonym pair, or SynonymNotFound."""
    if not await repository.delete_synonym(session, synonym_id):
        raise SynonymNotFound(f"synonym {synonym_id} does not exist")
    forget_synonyms()
    count_after_commit(session, forget_synonyms)  # and again once it is visible to others


# --- health -----------------------------------------------------------------------------------


async def index_stats(session: AsyncSession) -> dict[str, Any]:
    """Rows, tokens per row and bytes of the index (the doctor, the benches)."""
    rows, tokens = await repository.counts(session)
    size = await repository.size_bytes(session)
    return {
        "rows": rows,
        "tokens_per_row": round(tokens / rows, 1) if rows else 0.0,
        "bytes": size,
        "bytes_per_row": round(size / rows) if rows and size else None,
    }


# One search of each shape the doctor checks the plan of: a name with a last four, pinyin, a
# full and a masked phone with a date, an order number and a waybill, a product word with a last
# four and a date, an address with a name.
PLAN_QUERIES = (
    "张三 5678",
    "zhangsan 5678",
    "13812345678",
    "138****5678 20260125",
    "OT251002439025257112",
    "SF1234567890",
    "普洱 5678 20260125",
    "浦东 世纪大道 张三",
)


@dataclass(frozen=True, slots=True)
class Plan:
    query: str
    uses_index: bool
    # A Gather forks parallel workers for the one search: processes started and ended per
    # query, far more CPU than the few index pages a search reads (ADR 0032, session 13).
    parallel: bool
    text: str


async def plans(session: AsyncSession) -> list[Plan]:
    """The database's plan of each search shape of PLAN_QUERIES: whether it reads the index,
    and whether it would start parallel workers."""
    dialect = "pg" if dialect_of(session) == "postgresql" else "sqlite"
    found = []
    for q in PLAN_QUERIES:
        terms = parser.parse(q, today())
        expression = parser.render(parser.AllOf(tuple(t.node for t in terms)), dialect)
        text = await repository.plan(session, expression)
        uses = "hand_search_doc_tsv" in text if dialect == "pg" else "hand_search_fts" in text
        found.append(Plan(q, uses, "Gather" in text, text))
    return found


async def recent_lag(session: AsyncSession) -> float | None:
    """The largest lag among the last rows written (seconds)."""
    return await repository.oldest_lag(session)


async def pending_lag(session: AsyncSession) -> tuple[int, float]:
    """Order changes queued for the lane (the dirty backlog), and how old the oldest is
    (seconds): the index lag as it stands now."""
    count, oldest = await repository.dirty_backlog(session)
    age = max((clock.now() - oldest).total_seconds(), 0.0) if oldest else 0.0
    metrics.PENDING_AGE.set(age)
    metrics.BACKLOG.set(count)
    return count, age
