"""Database engines, the declarative base and the unit of work (one boundary = one transaction).

SQLite (embedded mode) gets WAL, foreign keys, a busy timeout and `BEGIN IMMEDIATE` for write
transactions, serialised in-process by a lock so writers queue in asyncio instead of spinning
in SQLite's busy handler. Reads use a separate engine with deferred transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from prometheus_client import Counter
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Table, event, insert, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import greenlet_spawn

from ordertally.core.clock import as_utc
from ordertally.core.settings import Settings, get_settings

T = TypeVar("T")
U = TypeVar("U")

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race, its
# work was not wrong; run again, it usually goes through once the other side has committed.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
# Runs of one unit of work (`Database.run`) before a transient failure is given up on.
RUN_ATTEMPTS = 3
TRANSIENT_RETRIES = Counter(
    "ordertally_transaction_retries_total",
    "Request transactions run again after a deadlock or serialization failure",
)

# Settings of every PostgreSQL connection the app opens. The app's statements read or write a
# few rows through an index; a parallel plan would start worker processes for one statement
# (forked and ended per execution, each paying a backend's start-up) for no gain at that size.
# The planner chose one at 1M orders for a search by a single token (an order number, a
# waybill, a phone), whose rarity it cannot see: the search index's lexemes are blind, so any
# unknown one looks like 0.5% of the table (ADR 0032, addendum session 13).
# For the same reason JIT is off: at 10M orders such a search is estimated at ~150,000 rows,
# past the JIT's cost thresholds, and PostgreSQL compiled, inlined and optimised it with LLVM
# for ~110 ms to run a 0.15 ms query (search p95 at 10M: ~400 ms with it, docs/benchmarks.md,
# session 16). The app's statements are all short; none gains from JIT.
PG_SESSION = {"max_parallel_workers_per_gather": "0", "jit": "off"}

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return as_utc(value)


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself so write transactions can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (its WAL and SHM files inherit it)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)  # whatever the umask allowed


class Database:
    """The engines of one process and the transaction boundary every caller uses."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        application_name: str = "ordertally",
    ) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        # Every engine hides bound values from its exceptions: a failed statement's text goes to
        # logs (a batch that falls back, the 500 handler) and its values may be a buyer's name,
        # phone or address, or a carrier's words naming who signed.
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                create_private_file(Path(database))
            self.write_engine = create_async_engine(
                url,
                echo=echo,
                hide_parameters=True,
                pool_size=1,
                max_overflow=0,
                connect_args={"timeout": 30},
            )
            self.read_engine = create_async_engine(
                url,
                echo=echo,
                hide_parameters=True,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"timeout": 30},
            )
            _configure_sqlite(self.write_engine, immediate=True, synchronous="FULL")
            _configure_sqlite(self.read_engine, immediate=False, synchronous="FULL")
        else:
            # The name shows in pg_stat_activity: which process (API, worker) a backend serves.
            # Up to twice `pool_size` connections, all kept once opened: an overflow connection
            # would be closed on its return and opened again at the next burst, and under load
            # that churn (a backend forked, an SSL context built, the dialect's codecs set up) cost
            # more than the work it served (issue 21, ADR 0046).
            self.write_engine = create_async_engine(
                url,
                echo=echo,
                hide_parameters=True,
                pool_size=2 * pool_size,
                max_overflow=0,
                pool_pre_ping=False,
                connect_args={
                    "server_settings": {"application_name": application_name, **PG_SESSION}
                },
            )
            self.read_engine = self.write_engine
        self._writers = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._readers = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # PostgreSQL reads that need no common snapshot run in autocommit: no BEGIN and COMMIT
        # round trips (the same pool; asyncpg switches mode client-side, nothing is sent).
        self._statements = (
            self._readers
            if self.is_sqlite
            else async_sessionmaker(
                self.read_engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
        )
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None

    @contextlib.asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """Open one transaction; commit when the block ends, roll back if it raises."""
        if self._write_lock is not None and write:
            async with self._write_lock, self._writers() as session, session.begin():
                session.info[_LAST_QUEUE] = []
                yield session
                await _run_last(session)
            return
        factory = self._writers if write else self._readers
        async with factory() as session, session.begin():
            session.info[_LAST_QUEUE] = []
            yield session
            await _run_last(session)

    async def read_one(self, sql: str) -> Any:
        """The first column of the first row of one read (`sql`, no parameters), outside any
        unit of work: on PostgreSQL one statement in autocommit on the driver's own connection
        (`fetch`), on SQLite in a read transaction as usual. For a small read every request
        makes (the auth revision): it starts after the caller asked and sees everything
        committed before it."""
        if self.is_sqlite:
            async with self.transaction(write=False) as session:
                return await session.scalar(text(sql))
        rows = await self.fetch(sql)
        return rows[0][0] if rows else None

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one read on PostgreSQL (`$1`-style parameters), outside any unit of work:
        one statement in autocommit on a pooled connection's driver, prepared once per
        connection by the driver and kept in its statement cache; rows as the driver gives them
        (asyncpg records: by position or column name). For a hot read that needs no session, no
        statement compiled per call and no result layer (the search request, the revision reads
        every request shares). SQLite has no such path: use a session there."""
        if self.is_sqlite:
            raise NotImplementedError("Database.fetch reads PostgreSQL; use a session on SQLite")
        pooled = await self.read_engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None, "a pooled connection has its driver connection"
            rows = await driver.fetch(sql, *args)
        except BaseException as exc:
            # A statement PostgreSQL refused (it names an SQLSTATE) leaves the connection as it
            # was; anything else (a connection lost, a request cancelled mid-statement) may not,
            # so that connection is not handed out again.
            usable = getattr(exc, "sqlstate", None) is not None
            await greenlet_spawn(pooled.close if usable else pooled.invalidate)
            raise
        await greenlet_spawn(pooled.close)
        return list(rows)

    @contextlib.asynccontextmanager
    async def reads(self) -> AsyncIterator[AsyncSession]:
        """Read-only work whose statements need not share a snapshot (under PostgreSQL's READ
        COMMITTED each statement of a transaction takes its own anyway). On PostgreSQL each
        statement runs on its own, in autocommit, saving the BEGIN and COMMIT round trips of a
        hot read path; on SQLite it is a read transaction. Nothing may be written in it."""
        async with self._statements() as session:
            if self.is_sqlite:
                async with session.begin():
                    yield session
            else:
                yield session

    async def run(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = RUN_ATTEMPTS
    ) -> T:
        """Run `work` in one write transaction; after a deadlock or serialization failure (the
        transaction lost a race and rolled back: none of it happened) run it again from the start,
        after a short random pause, as the worker does with its batches.

        For request handlers whose transaction locks rows another process may take in another
        order (an order row then its stock rows, against a worker batch holding a stock row): the
        request answers as if it had simply waited, never a 500. `work` must do nothing outside
        the database (no network call: it may run more than once)."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except Exception as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
                TRANSIENT_RETRIES.inc()
            await asyncio.sleep(random.uniform(0.005, 0.025) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()


class SharedRead(Generic[T]):
    """A small read that concurrent callers share (a revision every request checks): each
    caller gets the answer of a read that *started after it asked*, so it sees everything
    committed before it asked, and at most one read is in flight; the callers arriving
    meanwhile share the next one. One round trip per burst of requests instead of one each."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._next: asyncio.Future[T] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def get(self) -> T:
        """The answer of a read that started after this call."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            try:
                value = await self._read()
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved here; each waiter re-raises it
                continue
            future.set_result(value)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is a deadlock or serialization failure (anywhere in its chain)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in TRANSIENT_SQLSTATES:
            return True
        if getattr(current, "pgcode", None) in TRANSIENT_SQLSTATES:
            return True
        orig = getattr(current, "orig", None)
        stack.extend([current.__cause__, current.__context__])
        if isinstance(orig, BaseException):
            stack.append(orig)
    return False


def create_database(settings: Settings | None = None, *, role: str = "ordertally") -> Database:
    """A Database for the configured URL; `role` names the process to PostgreSQL
    (`application_name`: ordertally-api, ordertally-worker, ordertally)."""
    settings = settings or get_settings()
    return Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        echo=settings.db_echo,
        application_name=role,
    )


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class (hot paths use Core statements built once)."""
    return cast(Table, model.__table__)


def dialect_of(session: AsyncSession) -> str:
    """The database dialect name behind a session ("sqlite" or "postgresql")."""
    bind = session.bind
    assert bind is not None, "session is not bound"
    return bind.dialect.name


def upsert_insert(session: AsyncSession, model: Any) -> Any:
    """An INSERT that supports ON CONFLICT, for the session's dialect."""
    if dialect_of(session) == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


# --- hot rows last -----------------------------------------------------------------------------

_LAST_QUEUE = "ordertally.last"


async def at_end(session: AsyncSession, work: Callable[[], Awaitable[Any]]) -> None:
    """Run `work` as the last statements of this transaction, just before its COMMIT, so that
    the rows it locks (a hot SKU's stock row) are held for one round trip and the commit instead
    of for every statement after it (issue 21: shipments queued behind a stock row while the
    transaction that held it sent its remaining statements).

    Only where the outcome is not read later in the same transaction and nothing it could fail
    on is decided by it. Deferred only in a transaction `Database.transaction` opened (it runs
    the queue) and outside savepoints; anywhere else `work` runs at once, as before."""
    queue: list[Callable[[], Awaitable[Any]]] | None = session.info.get(_LAST_QUEUE)
    if queue is None or session.in_nested_transaction():
        await work()
        return
    queue.append(work)


async def _run_last(session: AsyncSession) -> None:
    queue: list[Callable[[], Awaitable[Any]]] = session.info.get(_LAST_QUEUE, [])
    while queue:
        await queue.pop(0)()


# --- metrics counted after commit ---------------------------------------------------------------

_COUNT_QUEUE = "ordertally.count_after_commit"


def count_after_commit(session: AsyncSession, count: Callable[[], None]) -> None:
    """Run `count` (a metric update) once the session's transaction commits; dropped if it
    rolls back, or if the savepoint it was queued in rolls back."""
    sync = session.sync_session
    queue: list[tuple[SessionTransaction | None, Callable[[], None]]] | None = sync.info.get(
        _COUNT_QUEUE
    )
    if queue is None:
        queue = sync.info[_COUNT_QUEUE] = []
        event.listen(sync, "after_commit", _run_queued)
        event.listen(sync, "after_soft_rollback", _drop_queued)
    queue.append((sync.get_nested_transaction(), count))


def _run_queued(sync: Session) -> None:
    if sync.in_nested_transaction():  # a savepoint released: its counts wait for the commit
        return
    queue = sync.info.get(_COUNT_QUEUE, [])
    counts, queue[:] = [count for _, count in queue], []
    for count in counts:
        count()


def _drop_queued(sync: Session, previous: SessionTransaction) -> None:
    queue: list[tuple[Any, Callable[[], None]]] = sync.info.get(_COUNT_QUEUE, [])
    if not previous.nested:
        if previous.parent is None:
            queue.clear()
        return
    queue[:] = [(txn, count) for txn, count in queue if not _within(txn, previous)]


def _within(txn: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while txn is not None:
        if txn is savepoint:
            return True
        txn = txn.parent
    return False


# --- independent reads in one statement (PostgreSQL) -------------------------------------------


class Read(Generic[T]):
    """A read `read_together` sends with others: PostgreSQL text with its own `$1`, `$2`…
    (see `execute_driver_sql`), its arguments and what its rows (tuples) mean; `alone` runs it
    on its own (SQLite, whose reads are per statement anyway). `Read.known(value)` reads
    nothing."""

    __slots__ = ("alone", "args", "decode", "sql")

    def __init__(
        self,
        sql: str | None,
        args: list[Any],
        decode: Callable[[list[Any]], T],
        alone: Callable[[], Awaitable[T]],
    ) -> None:
        self.sql = sql
        self.args = args
        self.decode = decode
        self.alone = alone

    @classmethod
    def known(cls, value: T) -> Read[T]:
        """A read whose answer is known without one (nothing to look up)."""

        async def alone() -> T:
            return value

        return cls(None, [], lambda rows: value, alone)

    def map(self, convert: Callable[[T], U]) -> Read[U]:
        """The same read, its answer converted."""
        decode, run = self.decode, self.alone

        async def alone() -> U:
            return convert(await run())

        return Read(self.sql, self.args, lambda rows: convert(decode(rows)), alone)


_READ_SQL: dict[tuple[str, ...], str] = {}
_PARAMETER = re.compile(r"\$(\d+)")


def _shift_parameters(sql: str, offset: int) -> str:
    return _PARAMETER.sub(lambda m: f"${int(m[1]) + offset}", sql)


async def read_together(session: AsyncSession, *reads: Read[Any]) -> list[Any]:
    """The answers of independent reads, in order: on PostgreSQL one statement (one round trip
    of the transaction instead of one each), each read's rows an array of records; elsewhere
    one statement each. The reads share one snapshot, taken when the statement starts, and
    none sees what another locks or writes: a read that must see what a lock waited for goes
    in a later call (ADR 0025, ADR 0057)."""
    if dialect_of(session) != "postgresql":
        return [await read.alone() for read in reads]
    sent = [read for read in reads if read.sql is not None]
    rows: list[Any] = []
    if sent:
        plan = tuple(read.sql for read in sent if read.sql is not None)
        sql = _READ_SQL.get(plan)
        if sql is None:
            parts, offset = [], 0
            for part in plan:
                parts.append(f"ARRAY(SELECT r FROM ({_shift_parameters(part, offset)}) AS r)")
                offset += max((int(n) for n in _PARAMETER.findall(part)), default=0)
            sql = _READ_SQL[plan] = "SELECT " + ", ".join(parts)
        args = [arg for read in sent for arg in read.args]
        rows = list((await execute_driver_sql(session, sql, args)).one())
    answers = iter(rows)
    return [read.decode(list(next(answers)) if read.sql is not None else []) for read in reads]


# --- plain INSERTs folded into one statement (PostgreSQL) --------------------------------------

_FOLD = "ordertally.fold"
_FOLD_SQL: dict[tuple[Any, ...], str] = {}


@dataclass(frozen=True, slots=True)
class Upsert:
    """An INSERT's ON CONFLICT (`keys`) DO UPDATE of the `update` columns to the new row's."""

    keys: tuple[str, ...]
    update: tuple[str, ...]


@dataclass(slots=True)
class _Fold:
    """What a `folded_inserts` block gathered: rows per table, and the statement it ends with."""

    rows: list[tuple[Table, Upsert | None, list[dict[str, Any]]]] = field(default_factory=list)
    last: tuple[str, list[Any], Callable[[list[Any]], None]] | None = None


@contextlib.asynccontextmanager
async def folded_inserts(session: AsyncSession) -> AsyncIterator[None]:
    """Gather the plain INSERTs `insert_rows` is given in this block and send them, when the
    block ends, as one statement: on PostgreSQL, one data-modifying CTE per table over
    `unnest` of one array per column, so their number and the batch's size change neither the
    round trips (one) nor the statement's text (prepared once per connection). Issue 21: the
    group commit's audit rows, outbox events, search queue, reservations and allocations were
    five round trips of a batch that makes ~14. A statement given to `end_fold_with` goes in
    the same round trip, as the statement the CTEs hang on.

    Only rows nothing in the block reads back: the block's other statements run at once, before
    the gathered rows exist (a read of them would not see them). Nothing is sent if the block
    raises (its transaction rolls back). SQLite, a nested block, or a savepoint inside the block:
    every INSERT runs at once, as without it."""
    if dialect_of(session) != "postgresql" or _FOLD in session.info:
        yield
        return
    fold = session.info[_FOLD] = _Fold()
    try:
        yield
    finally:
        session.info.pop(_FOLD, None)
    if fold.rows or fold.last is not None:
        await _send_folded(session, fold)


async def end_fold_with(
    session: AsyncSession, sql: str, args: list[Any], check: Callable[[list[Any]], None]
) -> bool:
    """Make PostgreSQL text (`$n` parameters, see `execute_driver_sql`) the last statement of
    the enclosing `folded_inserts` block, sent with its gathered INSERTs in one round trip when
    the block ends; `check` gets its rows then and may raise (the block's transaction then
    rolls back). False, and nothing done, outside a block (or in a savepoint): the caller runs
    its statement itself."""
    fold: _Fold | None = session.info.get(_FOLD)
    if fold is None or session.in_nested_transaction():
        return False
    if fold.last is not None:
        raise RuntimeError("a folded block ends with one statement")
    fold.last = (sql, args, check)
    return True


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: dict[str, Any] | list[dict[str, Any]],
    *,
    upsert: Upsert | None = None,
) -> None:
    """Plain INSERT of `rows` into `table` (an executemany, or a row), or with `upsert` an
    INSERT … ON CONFLICT DO UPDATE: at once, or gathered into the enclosing `folded_inserts`
    block's one statement."""
    if isinstance(rows, dict):
        rows = [rows]
    if not rows:
        return
    fold: _Fold | None = session.info.get(_FOLD)
    defaults = None if fold is None else scalar_defaults(table, tuple(rows[0]))
    if fold is None or defaults is None or session.in_nested_transaction():
        key = (dialect_of(session), table.name, upsert)
        statement = _INSERTS.get(key)
        if statement is None:
            statement = _INSERTS[key] = _insert_statement(session, table, upsert)
        await session.execute(statement, rows if len(rows) > 1 else rows[0])
        return
    fold.rows.append((table, upsert, [{**row, **defaults} for row in rows] if defaults else rows))


def _insert_statement(session: AsyncSession, table: Table, upsert: Upsert | None) -> Any:
    if upsert is None:
        return insert(table)
    base = upsert_insert(session, table)
    return base.on_conflict_do_update(
        index_elements=list(upsert.keys), set_={name: base.excluded[name] for name in upsert.update}
    )


_DEFAULTS: dict[tuple[str, tuple[str, ...]], dict[str, Any] | None] = {}
# (dialect, table name, upsert) -> its INSERT, built once
_INSERTS: dict[tuple[str, str, Upsert | None], Any] = {}


def scalar_defaults(table: Table, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The client-side defaults an INSERT of these columns would add (SQLAlchemy fills them in
    on its own statements; a folded one must too); None when one of them is computed (a Python
    callable or an SQL expression): such rows are not folded."""
    key = (table.name, names)
    if key not in _DEFAULTS:
        found: dict[str, Any] = {}
        computed = False
        for column in table.c:
            default = column.default
            if column.key in names or default is None:
                continue
            if not getattr(default, "is_scalar", False):
                computed = True
                break
            found[column.key] = getattr(default, "arg", None)
        _DEFAULTS[key] = None if computed else found
    return _DEFAULTS[key]


async def _send_folded(session: AsyncSession, fold: _Fold) -> None:
    dialect = _dialect(session)
    parts: dict[tuple[str, tuple[str, ...], Upsert | None], tuple[Table, list[dict[str, Any]]]] = {}
    for table, upsert, rows in fold.rows:
        for row in rows:
            key = (table.name, tuple(row), upsert)
            if key not in parts:
                parts[key] = (table, [])
            parts[key][1].append(row)
    # The last statement's parameters come first: its text keeps its own `$n`.
    last_sql, last_args, check = fold.last if fold.last is not None else (None, [], None)
    args = list(last_args)
    for (_, names, _), (table, rows) in parts.items():
        args += unnest_args(dialect, table, list(names), rows)
    plan = (tuple(parts), last_sql, len(last_args))
    sql = _FOLD_SQL.get(plan)
    if sql is None:
        statements, first = [], len(last_args) + 1
        for (_, names, upsert), (table, _) in parts.items():
            statement = unnest_insert(dialect, table, list(names), first)
            if upsert is not None:
                quote = dialect.identifier_preparer.quote
                statement += (
                    f" ON CONFLICT ({', '.join(quote(k) for k in upsert.keys)}) DO UPDATE SET "
                    + ", ".join(f"{quote(n)} = EXCLUDED.{quote(n)}" for n in upsert.update)
                )
            statements.append(statement)
            first += len(names)
        if last_sql is not None:
            # A CTE of its own (its text may open with a WITH), the statement's rows its rows
            statements.append(last_sql)
            last = f"SELECT * FROM f{len(statements) - 1}"
        else:
            last = statements.pop()
        ctes = "WITH " + ", ".join(f"f{n} AS ({cte})" for n, cte in enumerate(statements)) + " "
        sql = _FOLD_SQL[plan] = (ctes if statements else "") + last
    result = await execute_driver_sql(session, sql, args)
    if check is not None:
        check(list(result.all()))


def _dialect(session: AsyncSession) -> Dialect:
    bind = session.bind
    assert bind is not None, "session is not bound"
    return bind.dialect


async def execute_driver_sql(session: AsyncSession, sql: str, args: list[Any]) -> Any:
    """Run PostgreSQL text with `$n` parameters in the session's transaction, as the driver
    takes it: no statement compiled or cached by SQLAlchemy and no bound values processed
    (the caller did), errors wrapped as any statement's (IntegrityError…). Returns the result."""
    connection = await session.connection()
    return await connection.exec_driver_sql(sql, tuple(args))


def unnest_args(
    dialect: Dialect, table: Table, names: list[str], rows: list[dict[str, Any]]
) -> list[Any]:
    """`unnest_insert`'s arrays, in column order: one list per column, each value as the
    column's type binds it (a UTC datetime, JSON text)."""
    args: list[Any] = []
    for name in names:
        process = table.c[name].type._cached_bind_processor(dialect)
        values = [row[name] for row in rows]
        args.append(values if process is None else [process(v) for v in values])
    return args


def unnest_insert(
    dialect: Dialect,
    table: Table,
    names: list[str],
    first: int,
    *,
    keys: tuple[str, ...] = (),
    extra: tuple[str, str, str] | None = None,
) -> str:
    """PostgreSQL: `INSERT INTO table (names) SELECT … FROM unnest(one array per column)`, the
    arrays bound as `$first`, `$first+1`… (see `unnest_args`). Its text depends on the columns,
    not on the number of rows: one prepared statement for every batch size, and no multi-row
    VALUES list to parse and plan each time. Strings go as text[] (an over-long value fails the
    column's own check, where a cast to varchar(n)[] would cut it short), JSON as text[] cast
    per value. `keys`: more arrays unnested beside the columns' (SQL, named `u.k0`, `u.k1`…),
    not inserted; `extra` = (column, SQL expression, join clause) adds a column computed from
    another relation, e.g. a parent's id found by a natural key in `u.k0`."""
    quote = dialect.identifier_preparer
    arrays, selected = [], []
    for i, name in enumerate(names):
        sql_type = table.c[name].type.compile(dialect=dialect).upper()
        if sql_type.startswith("JSON"):
            arrays.append(f"CAST(${first + i} AS TEXT[])")
            selected.append(f"CAST(u.c{i} AS {sql_type})")
        elif sql_type.startswith(("VARCHAR", "CHAR", "TEXT")):
            arrays.append(f"CAST(${first + i} AS TEXT[])")
            selected.append(f"u.c{i}")
        else:
            arrays.append(f"CAST(${first + i} AS {sql_type}[])")
            selected.append(f"u.c{i}")
    columns = [quote.quote(table.c[name].name) for name in names]
    aliases = [f"c{i}" for i in range(len(names))] + [f"k{i}" for i in range(len(keys))]
    source = f"unnest({', '.join(arrays + list(keys))}) AS u({', '.join(aliases)})"
    if extra is not None:
        column, expression, join = extra
        columns.append(quote.quote(column))
        selected.append(expression)
        source = f"{source} {join}"
    return (
        f"INSERT INTO {quote.format_table(table)} ({', '.join(columns)})"
        f" SELECT {', '.join(selected)} FROM {source}"
    )
