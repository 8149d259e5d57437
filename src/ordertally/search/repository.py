"""Every query of the search domain: index rows, the two engines' match, synonyms, the plan
and size checks of the doctor and the benches."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Row,
    Select,
    Text,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause

from ordertally.core import clock
from ordertally.core.db import Database, dialect_of, insert_rows, table_of, upsert_insert
from ordertally.search.models import SearchDirty, SearchDoc, SearchSynonym, SearchWordWatch

_DOC = table_of(SearchDoc)
_DIRTY = table_of(SearchDirty)
_UPDATABLE = [c.name for c in _DOC.columns if c.name != "order_id"]
# What a result shows and explains: plain rows, not ORM objects (the search path's hottest
# cost was building and tracking them).
_RESULT = (
    _DOC.c.order_id,
    _DOC.c.order_no,
    _DOC.c.channel,
    _DOC.c.status,
    _DOC.c.placed_date,
    _DOC.c.has_open_exception,
    _DOC.c.total_minor,
    _DOC.c.currency,
    _DOC.c.customer_name_masked,
    _DOC.c.customer_phone_masked,
    _DOC.c.ship_city,
    _DOC.c.created_at,
    _DOC.c.tokens,
)
# The names of those columns, in the order a plain result row has them.
RESULT_COLUMNS: tuple[str, ...] = tuple(c.name for c in _RESULT)


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters people combine with a query (all optional)."""

    status: str | None = None
    channel: str | None = None
    date_from: str | None = None  # merchant-local YYYY-MM-DD, inclusive
    date_to: str | None = None
    open_exception: bool | None = None
    # A channel-scoped caller's channel accounts: only their orders are found (None: any).
    channels: tuple[str, ...] | None = None


# What a row says; a row whose every one of these is unchanged is not written again. The
# times (source_at, indexed_at) alone do not count: rewriting a row to move them would give
# PostgreSQL a new row version and its ~55 GIN entries (SQLite: the FTS5 row deleted and added
# back by the triggers) for nothing a search can see.
_COMPARED = [c for c in _UPDATABLE if c not in ("source_at", "indexed_at")]


async def upsert_docs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write index rows (absolute values: a replay writes the same row), leaving alone the
    rows that already say the same (a rebuild of a current index, a replayed event)."""
    if not rows:
        return
    stmt = upsert_insert(session, SearchDoc)
    changed = or_(*(_DOC.c[c].is_distinct_from(stmt.excluded[c]) for c in _COMPARED))
    stmt = stmt.on_conflict_do_update(
        index_elements=["order_id"], set_={c: stmt.excluded[c] for c in _UPDATABLE}, where=changed
    )
    await session.execute(stmt, list(rows))


async def delete_docs(session: AsyncSession, order_ids: Sequence[int]) -> None:
    """Drop the rows of orders that no longer exist."""
    if order_ids:
        await session.execute(delete(SearchDoc).where(SearchDoc.order_id.in_(list(order_ids))))


# --- the search lane's queue of dirty orders ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dirty:
    id: int
    order_id: int
    since: datetime


async def add_dirty(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Queue orders for the lane (`order_id`, `since`): plain inserts, never a conflict, so a
    writer never waits for a lane."""
    await insert_rows(session, _DIRTY, list(rows))


async def claim_dirty(session: AsyncSession, limit: int) -> list[Dirty]:
    """The oldest queued rows, locked for this transaction; on PostgreSQL rows another lane
    holds are skipped (SQLite: the single writer serialises the lanes)."""
    stmt = select(_DIRTY.c.id, _DIRTY.c.order_id, _DIRTY.c.since).order_by(_DIRTY.c.id)
    stmt = stmt.limit(limit)
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = (await session.execute(stmt)).all()
    return [Dirty(int(r[0]), int(r[1]), clock.as_utc(r[2])) for r in rows]


async def delete_dirty(session: AsyncSession, ids: Sequence[int]) -> None:
    """Forget the queued rows a lane claimed and indexed (by row id: a row queued since, for
    the same order, stays)."""
    if ids:
        await session.execute(
            delete(SearchDirty).where(SearchDirty.id.in_(bindparam("ids", expanding=True))),
            {"ids": list(ids)},
        )


async def any_dirty(session: AsyncSession) -> bool:
    """Whether any order waits for the lane (what an idle lane polls: one probe of the primary
    key, not a scan of a table the lane keeps emptying)."""
    return (await session.scalar(select(_DIRTY.c.id).order_by(_DIRTY.c.id).limit(1))) is not None


async def dirty_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Queued rows, and the oldest change among them."""
    row = (await session.execute(select(func.count(), func.min(_DIRTY.c.since)))).one()
    return int(row[0]), (clock.as_utc(row[1]) if row[1] is not None else None)


# An order's index row is written by one transaction at a time (a lane, a rebuild chunk): the
# key of its transaction-scoped advisory lock on PostgreSQL.
_ORDER_LOCK_KEY = "hashtextextended('search-order' || chr(31) || o::text, 0)"
_TRY_LOCK_ORDERS = text(
    "SELECT o FROM unnest(CAST(:ids AS bigint[])) AS t(o)"
    f" WHERE pg_try_advisory_xact_lock({_ORDER_LOCK_KEY})"
)
_LOCK_ORDERS = text(
    f"SELECT pg_advisory_xact_lock({_ORDER_LOCK_KEY}) FROM unnest(CAST(:ids AS bigint[])) AS t(o)"
)


async def lock_orders(session: AsyncSession, order_ids: Sequence[int], *, wait: bool) -> set[int]:
    """PostgreSQL: lock these orders' index rows for this transaction, so that a read of an
    order's state never overwrites a row written from a newer read. `wait=False` (a lane)
    returns the ids it got and skips the others; `wait=True` (a rebuild) waits for each, in
    ascending order. SQLite: the single writer already serialises them; every id."""
    ids = sorted(set(order_ids))
    if not ids or dialect_of(session) != "postgresql":
        return set(ids)
    if wait:
        await session.execute(_LOCK_ORDERS, {"ids": ids})
        return set(ids)
    return {int(r[0]) for r in (await session.execute(_TRY_LOCK_ORDERS, {"ids": ids})).all()}


# The engine's query text (a tsquery, an FTS5 MATCH expression), typed so that the doctor can
# render a plan with it inline.
_EXPRESSION = bindparam("expression", type_=Text)
# PostgreSQL: the broad terms a row the index found is checked against (query.split).
_CHECK = bindparam("check", type_=Text)


def _match(stmt: Select[Any], dialect: str, check: bool) -> Select[Any]:
    if dialect == "postgresql":
        tsv: ColumnClause[Any] = literal_column("search_doc.hand_tsv")
        simple: ColumnClause[Any] = literal_column("'simple'::regconfig")
        stmt = stmt.where(tsv.op("@@")(func.to_tsquery(simple, _EXPRESSION)))
        if check:
            # The function behind @@, which no index serves: checked on the rows found only.
            stmt = stmt.where(func.ts_match_vq(tsv, func.to_tsquery(simple, _CHECK)))
        return stmt
    return stmt.where(
        _DOC.c.order_id.in_(
            select(literal_column("rowid"))
            .select_from(text("hand_search_fts"))
            .where(text("hand_search_fts MATCH :expression").bindparams(_EXPRESSION))
        )
    )


# Filter -> its condition over a bound parameter of the filter's name.
_FILTERS: dict[str, Callable[[], Any]] = {
    "status": lambda: _DOC.c.status == bindparam("status"),
    "channel": lambda: _DOC.c.channel == bindparam("channel"),
    "channels": lambda: _DOC.c.channel.in_(bindparam("channels", expanding=True)),
    "date_from": lambda: _DOC.c.placed_date >= bindparam("date_from"),
    "date_to": lambda: _DOC.c.placed_date <= bindparam("date_to"),
    "open_exception": lambda: _DOC.c.has_open_exception == bindparam("open_exception"),
}


def _values(filters: Filters) -> dict[str, Any]:
    """The filters given, by name (a channel scope as a list)."""
    found: dict[str, Any] = {}
    if filters.status:
        found["status"] = filters.status
    if filters.channel:
        found["channel"] = filters.channel
    if filters.channels is not None:
        found["channels"] = list(filters.channels)
    if filters.date_from:
        found["date_from"] = filters.date_from
    if filters.date_to:
        found["date_to"] = filters.date_to
    if filters.open_exception is not None:
        found["open_exception"] = filters.open_exception
    return found


@functools.lru_cache(maxsize=256)
def _statement(
    dialect: str, match: bool, given: tuple[str, ...], after: bool, check: bool = False
) -> Select[Any]:
    """The statement of one shape of search, every value a bound parameter: built once per
    shape, so a search neither builds nor re-keys a statement."""
    stmt = select(*_RESULT)
    if match:
        stmt = _match(stmt, dialect, check)
    for name in given:
        stmt = stmt.where(_FILTERS[name]())
    if after:
        stmt = stmt.where(_DOC.c.order_id < bindparam("after"))
    newest_first = _DOC.c.order_id.desc()
    if match and dialect == "postgresql":
        # PostgreSQL cannot estimate how rare our tokens are (an OR of unknown lexemes looks
        # like ~1% of the table), so with the primary key's order at hand it walks the key
        # backwards filtering every row: seconds for a waybill at 1M orders. Ordering by an
        # expression leaves it the GIN bitmap and a top-N sort of the (few) matches.
        newest_first = (_DOC.c.order_id + 0).desc()
    return stmt.order_by(newest_first).limit(bindparam("limit", type_=Integer))


@dataclass(frozen=True, slots=True)
class Match:
    """What the rows must match: the engine's expression the index reads, and (PostgreSQL)
    the broad terms the rows it finds are checked against."""

    expression: str
    check: str | None = None


def _bound(
    values: dict[str, Any], match: Match | None, after: int | None, limit: int
) -> dict[str, Any]:
    values["limit"] = limit
    if match is not None:
        values["expression"] = match.expression
        if match.check is not None:
            values["check"] = match.check
    if after is not None:
        values["after"] = after
    return values


def search_statement(
    dialect: str, match: Match | None, filters: Filters, after: int | None, limit: int
) -> tuple[Select[Any], dict[str, Any]]:
    """Matching rows, newest order first (order ids grow with time), after a keyset cursor:
    the statement and its parameters."""
    values = _values(filters)
    check = match is not None and match.check is not None
    stmt = _statement(dialect, match is not None, tuple(values), after is not None, check)
    return stmt, _bound(values, match, after, limit)


async def search(
    session: AsyncSession, match: Match | None, filters: Filters, after: int | None, limit: int
) -> Sequence[Row[Any]]:
    """One page of matching index rows (the columns of `_RESULT`), through Core: one
    statement, plain rows."""
    stmt, values = search_statement(dialect_of(session), match, filters, after, limit)
    connection = await session.connection()
    return (await connection.execute(stmt, values)).all()


@dataclass(frozen=True, slots=True)
class _Driver:
    """A search statement as the driver runs it: its SQL text with `$n` parameters, the
    parameter each position takes, a parameter's fixed value and the bind processors."""

    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]

    def args(self, values: dict[str, Any]) -> list[Any]:
        found = []
        for name in self.names:
            value = values[name] if name in values else self.fixed[name]
            process = self.processors.get(name)
            found.append(value if process is None else process(value))
        return found


@functools.lru_cache(maxsize=256)
def _driver_statement(
    dialect: Dialect, match: bool, given: tuple[str, ...], after: bool, check: bool
) -> _Driver | None:
    """The statement of one shape of search compiled once by the engine's own dialect (the SQL
    text SQLAlchemy would send); None for a shape with an expanding parameter (a channel scope),
    whose text depends on the values."""
    if "channels" in given:
        return None
    compiled = _statement("postgresql", match, given, after, check).compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    fixed = {key: bind.value for bind, key in compiled.bind_names.items()}
    processors = dict(getattr(compiled, "_bind_processors", {}) or {})
    return _Driver(str(compiled), names, fixed, processors)


async def search_rows(
    db: Database, match: Match | None, filters: Filters, after: int | None, limit: int
) -> Sequence[Any]:
    """One page of matching index rows (the columns of `_RESULT`, by position), outside any unit
    of work: on PostgreSQL straight through the driver (the statement compiled once per shape,
    no session, no result layer: the search request's path), else through a read session."""
    if not db.is_sqlite:
        values = _values(filters)
        check = match is not None and match.check is not None
        shape = _driver_statement(
            db.read_engine.dialect, match is not None, tuple(values), after is not None, check
        )
        if shape is not None:
            return await db.fetch(shape.sql, *shape.args(_bound(values, match, after, limit)))
    async with db.reads() as session:
        return await search(session, match, filters, after, limit)


async def plan(session: AsyncSession, match: str | Match) -> str:
    """The database's plan for a search expression or a prepared match (the doctor checks it
    uses the index)."""
    dialect = dialect_of(session)
    match = Match(match) if isinstance(match, str) else match
    stmt, values = search_statement(dialect, match, Filters(), None, 20)
    compiled = stmt.params(values).compile(
        dialect=session.bind.dialect,  # type: ignore[union-attr]
        compile_kwargs={"literal_binds": True},
    )
    prefix = "EXPLAIN " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    rows = (await session.execute(text(prefix + str(compiled)))).all()
    return "\n".join(" ".join(str(c) for c in row) for row in rows)


_SHARES = text(
    "SELECT c.reltuples, s.most_common_elems::text::text[] AS elems,"
    " s.most_common_elem_freqs AS freqs"
    " FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema()"
    " AND s.tablename = 'search_doc' AND s.attname = 'hand_tsv'"
    " WHERE c.oid = to_regclass('search_doc')"
)


async def token_shares(session: AsyncSession) -> tuple[float, dict[str, float]]:
    """PostgreSQL's estimate of the index rows, and the share of rows holding each of the
    index column's most common tokens (its statistics, as of the last ANALYZE; nothing before
    the first). SQLite keeps no such statistics: (0, {})."""
    if dialect_of(session) != "postgresql":
        return 0.0, {}
    row = (await session.execute(_SHARES)).first()
    if row is None or not row.elems:
        return (float(row.reltuples) if row is not None else 0.0), {}
    # The frequencies end with their minimum, maximum and the share of empty rows.
    return float(row.reltuples), dict(zip(row.elems, row.freqs[: len(row.elems)], strict=True))


async def counts(session: AsyncSession) -> tuple[int, int]:
    """Index rows, and their tokens in all."""
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(SearchDoc.token_count), 0))
        )
    ).one()
    return int(row[0]), int(row[1])


async def oldest_lag(session: AsyncSession) -> float | None:
    """The largest recorded indexed_at - source_at of the last rows written (seconds)."""
    rows = await session.execute(
        select(SearchDoc.source_at, SearchDoc.indexed_at)
        .order_by(SearchDoc.indexed_at.desc())
        .limit(100)
    )
    lags = [(b - a).total_seconds() for a, b in rows.all()]
    return max(lags) if lags else None


async def size_bytes(session: AsyncSession) -> int | None:
    """Bytes the index takes on disk (table, GIN or FTS5 shadow tables), when measurable."""
    if dialect_of(session) == "postgresql":
        value = await session.scalar(text("SELECT pg_total_relation_size('search_doc')"))
        return int(value or 0)
    try:
        value = await session.scalar(
            text(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'search_doc' "
                "OR name LIKE 'hand_search_fts%' OR name LIKE 'sqlite_autoindex_search_doc%'"
            )
        )
    except Exception:  # dbstat is a compile-time option of SQLite
        return None
    return int(value or 0)


async def synonyms(session: AsyncSession) -> list[SearchSynonym]:
    """Every synonym pair, oldest first."""
    rows = await session.scalars(select(SearchSynonym).order_by(SearchSynonym.id))
    return list(rows.all())


async def add_synonym(session: AsyncSession, values: dict[str, Any]) -> SearchSynonym | None:
    """Insert a pair unless it exists; None when it did."""
    stmt = (
        upsert_insert(session, SearchSynonym)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["term", "synonym"])
        .returning(SearchSynonym.id)
    )
    new_id = await session.scalar(stmt)
    return None if new_id is None else await session.get(SearchSynonym, new_id)


async def delete_synonym(session: AsyncSession, synonym_id: int) -> bool:
    """Delete a pair; whether it existed."""
    result = await session.execute(delete(SearchSynonym).where(SearchSynonym.id == synonym_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def word_watch(session: AsyncSession) -> tuple[str | None, int]:
    """(epoch, revision) of the catalogue words the index has taken in, locked for this
    transaction on PostgreSQL; (None, 0) at first."""
    stmt = select(SearchWordWatch.epoch, SearchWordWatch.revision).where(SearchWordWatch.id == 1)
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return (None, 0) if row is None else (str(row[0]), int(row[1]))


async def set_word_watch(session: AsyncSession, epoch: str, revision: int) -> None:
    """Record the catalogue words the index has taken in."""
    statement = upsert_insert(session, SearchWordWatch).values(id=1, epoch=epoch, revision=revision)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"epoch": epoch, "revision": revision}
        )
    )
