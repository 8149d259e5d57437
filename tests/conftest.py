"""Test fixtures: a migrated database per backend (SQLite always, PostgreSQL when configured),
emptied after every test, the app over ASGI, a live server over real HTTP (tests/live.py), and API
keys.

Each pytest-xdist worker is its own process with its own databases (ADR 0037)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ordertally.core import clock
from ordertally.core.crypto import reset_cipher
from ordertally.core.db import Base, Database
from ordertally.core.settings import get_settings, reset_settings
from tests.live import LiveServer, ordertally_app, serve_live

PG_URL = os.environ.get("ORDERTALLY_TEST_PG_URL", "")
REQUIRE_SERVICES = os.environ.get("ORDERTALLY_REQUIRE_SERVICES") == "1"

_TMP = tempfile.mkdtemp(prefix="ordertally-tests-")
os.environ["ORDERTALLY_DATA_DIR"] = _TMP
os.environ["ORDERTALLY_PII_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
os.environ["ORDERTALLY_API_KEY_CACHE_SECONDS"] = "0"
os.environ.pop("ORDERTALLY_DATABASE_URL", None)

# PostgreSQL's connections (100 by default, counted across every worker and every other client
# of the server) are budgeted per worker, see ADR 0037's addendum. A `Database(url, pool_size=n)`
# opens at most 2n connections (pool + overflow): the `db` fixture's 10 are enough for the races
# (200 buyers queue for 10 connections, FIFO, and still race on the stock rows). Every app the
# tests start (the live server; `ordertally serve`/`worker` subprocesses inherit the
# environment) opens at most 2 x APP_POOL_SIZE. A test that wants another size sets
# ORDERTALLY_DB_POOL_SIZE itself (monkeypatch, or the subprocess's env).
TEST_POOL_SIZE = 5
APP_POOL_SIZE = 4
os.environ["ORDERTALLY_DB_POOL_SIZE"] = str(APP_POOL_SIZE)
reset_settings()
reset_cipher()


# Modules whose tests start server or worker processes, each with its own connection pool, or
# race many connections: under pytest-xdist they form one unit of work that one worker runs
# (the scheduler below), so two of them never run at once and share the CPU or PostgreSQL's
# connections (ADR 0037).
PROCESS_HEAVY = (
    "tests/drill/",
    "tests/events/test_dispatcher.py",
    "tests/events/test_relay.py",
    "tests/inventory/test_concurrency.py",
    "tests/jobs/test_scheduler.py",
    "tests/ops/test_demo_key.py",
    "tests/orders/test_batch.py",
    "tests/orders/test_concurrency.py",
    "tests/orders/test_duplicate_race.py",
    "tests/search/test_dictionary_processes.py",
    "tests/security/test_floods_and_slow_clients.py",
)


# Single tests that take minutes (`--durations` in CI; the carrier proof on PostgreSQL took 406 s
# at load 9): queued right after the group, so that no worker starts one while the other is
# running out of work.
SLOW_FIRST = (
    "tests/fulfillment/test_carrier_proof.py",
    "tests/orders/test_stateful.py",
    "tests/inventory/test_stateful.py",
    "tests/catalog/test_bundle_stateful.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`, with the groups taken from PROCESS_HEAVY by node id.

    Not `@pytest.mark.xdist_group`: pytest-xdist 3.8 groups by rewriting `item._nodeid`, which
    pytest 9 no longer reads (a node id is derived from `item._id`), so marked tests were spread
    over every worker like the others (ADR 0037, addendum). Each other test is its own unit; the
    group is the largest unit, so xdist queues it first: one worker starts on it while the other
    takes the single tests."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "processes" if nodeid.startswith(PROCESS_HEAVY) else nodeid

    return ProcessGroupScheduling(config, log)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


class _SessionDatabases:
    """This process's scratch databases, one per backend, made on first use and dropped when the
    session ends. Kept here rather than in the parametrized fixture: pytest tears a session
    fixture down whenever the next test wants its other parameter, and an xdist worker gets
    SQLite and PostgreSQL tests in any order (each switch would create and migrate again)."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.failures: dict[str, tuple[bool, str]] = {}  # backend -> (skip?, reason)
        self.pg_names: list[str] = []

    def url(self, backend: str) -> str:
        if backend in self.failures:
            skip, reason = self.failures[backend]
            if skip:
                pytest.skip(reason)
            pytest.fail(reason)
        if backend not in self.urls:
            try:
                self.urls[backend] = self._create(backend)
            except pytest.skip.Exception as exc:
                self.failures[backend] = (True, str(exc))
                raise
            except pytest.fail.Exception as exc:
                self.failures[backend] = (False, str(exc))
                raise
        return self.urls[backend]

    def _create(self, backend: str) -> str:
        from ordertally.ops.migrations import upgrade

        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{Path(_TMP) / f'test-{uuid.uuid4().hex[:8]}.db'}"
            upgrade(url)
            return url
        if not PG_URL:
            if REQUIRE_SERVICES:
                pytest.fail("ORDERTALLY_TEST_PG_URL is not set but ORDERTALLY_REQUIRE_SERVICES=1")
            pytest.skip("PostgreSQL not configured (set ORDERTALLY_TEST_PG_URL)")
        name = f"ot_test_{uuid.uuid4().hex[:12]}"
        try:
            asyncio.run(_admin(PG_URL, f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            if REQUIRE_SERVICES:
                pytest.fail(f"PostgreSQL unreachable: {exc}")
            pytest.skip(f"PostgreSQL unreachable: {exc}")
        self.pg_names.append(name)
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        return url

    def drop(self) -> None:
        for name in self.pg_names:
            asyncio.run(_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.pg_names.clear()


@pytest.fixture(scope="session")
def _session_databases() -> Iterator[_SessionDatabases]:
    databases = _SessionDatabases()
    yield databases
    databases.drop()


@pytest.fixture(scope="session", params=["sqlite", "pg"])
def database_url(request: pytest.FixtureRequest, _session_databases: _SessionDatabases) -> str:
    """A migrated scratch database for the whole session, per backend."""
    return _session_databases.url(request.param)


# A test (or a module's tests) on one database only. Not a skip in the test: by then the other
# database has been set up for it, seeded, and is emptied again afterwards, for nothing.
ONLY_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ONLY_PG = pytest.mark.parametrize("database_url", ["pg"], indirect=True)


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "pg"


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    reset_settings()
    clock.reset()
    yield
    clock.reset()
    reset_settings()


def _pg_empty_statement() -> str:
    """One round trip that deletes every row (children first) and rewinds the used sequences.

    Not TRUNCATE: it gives each of the ~80 tables and their indexes new files, about 20 ms a
    table (1.6 s a test under CI's load) against under 0.1 s for DELETE on the few rows a test
    leaves (docs/adr/0037-parallel-tests.md)."""
    deletes = " ".join(f'DELETE FROM "{t.name}";' for t in reversed(Base.metadata.sorted_tables))
    rewind = (
        "PERFORM setval(format('%I.%I', schemaname, sequencename), start_value, false) "
        "FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL;"
    )
    return f"DO $$ BEGIN {deletes} {rewind} END $$"


async def empty_tables(db: Database) -> None:
    """Delete every row of every table (tests commit for real, so they clean up)."""
    async with db.transaction() as session:
        if db.is_sqlite:
            for table in reversed(Base.metadata.sorted_tables):
                await session.execute(table.delete())
        else:
            await session.execute(text(_pg_empty_statement()))


TEST_WAREHOUSE = "WH-TEST"
# SKUs the order factories use, stocked generously so tests about orders need not think of stock.
TEST_SKUS = ("TEA-LJ-250", "CUP-CER-01", "A")
# Every other code the tests order or receive: the catalogue knows them (unknown codes are
# refused), none is stocked. Codes a test needs unknown (PLATFORM-ONLY-9, NOT-OURS-…) are not here.
TEST_CATALOG = (
    *TEST_SKUS,
    *("B", "C", "D", "K", "S", "X", "Y", "Z", "H", "P", "Q", "T", "U", "V", "W"),
    *("TEA-X", "TEA-LJ", "CUP-X", "TB-1", "TB-2", "TB-10", "TB-11", "TB-12", "TB-20", "TB-21"),
    *("EV-1", "RARE-1", "R-1", "R-2", "PDD-LJ-1", "NOBODY-STOCKS", "NEVER-STOCKED", "B-ONLY"),
    *("SKU-1", "SKU-2", "HOLD-K1", "A-1", "B-1", "X-1", "SKU", "TEA", "ONE", "SOLO", "SPLIT"),
    *("EXP", "HOT", "RACE", "NOWHERE", "K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8"),
)


async def seed_catalog(db: Database, codes: tuple[str, ...] = TEST_CATALOG) -> None:
    """Catalogue rows for the test codes, named after them (zh and en)."""
    from ordertally.catalog import service as catalog_service

    async with db.transaction() as session:
        known = await catalog_service.known_codes(session, codes)
        await catalog_service.add_skus(
            session,
            [
                {"code": c, "name": f"测试商品 {c}", "name_en": f"Test item {c}"}
                for c in dict.fromkeys(codes)
                if c not in known
            ],
            "conftest",
        )


async def seed_stock(db: Database) -> None:
    """One warehouse holding plenty of the factory SKUs (and the test catalogue)."""
    from ordertally.inventory import service as inventory_service

    await seed_catalog(db)
    async with db.transaction() as session:
        await inventory_service.create_warehouse(
            session,
            {
                "code": TEST_WAREHOUSE,
                "name": "测试仓",
                "province": "江苏省",
                "city": "苏州市",
                "latitude": None,
                "longitude": None,
                "priority": 100,
                "cost_factor": 1.0,
                "active": True,
            },
        )
        for sku in TEST_SKUS:
            await inventory_service.record_movement(
                session,
                warehouse_code=TEST_WAREHOUSE,
                sku=sku,
                kind="receipt",
                quantity=1_000_000,
                reason="test seed",
                actor="conftest",
            )


# The databases whose last `db` teardown did not finish emptying them (a failed test teardown,
# an interrupted one): the next test empties them first instead of failing on the leftovers.
_NOT_EMPTIED: set[str] = set()


@pytest.fixture
async def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    """The backend's database, empty, for one test."""
    monkeypatch.setenv("ORDERTALLY_DATABASE_URL", database_url)
    reset_settings()
    database = Database(database_url, pool_size=TEST_POOL_SIZE)
    try:
        if database_url in _NOT_EMPTIED:
            await empty_tables(database)
        _NOT_EMPTIED.add(database_url)
        await seed_stock(database)
        yield database
    finally:
        clock.reset()
        try:
            await empty_tables(database)
            _NOT_EMPTIED.discard(database_url)
        finally:
            await database.dispose()


@pytest.fixture
def app(db: Database) -> Any:
    from ordertally.app import create_app

    return create_app(get_settings(), db=db)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
        yield c


@pytest.fixture
async def keys(db: Database) -> dict[str, str]:
    """One raw API key per role."""
    from ordertally.auth import service as auth_service
    from ordertally.auth.models import ROLES

    raw: dict[str, str] = {}
    async with db.transaction() as session:
        for role in ROLES:
            _, raw[role] = await auth_service.create_api_key(session, f"{role}-tester", role)
    return raw


@pytest.fixture(scope="session")
def sim_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The payment simulator's test key set (tests/payments, tests/aftersales), generated once
    per session."""
    from ordertally.payments.simulator import keys as sim_keys

    directory = tmp_path_factory.mktemp("paysim-keys")
    sim_keys.generate(directory, "http://127.0.0.1:9")
    return directory


@pytest.fixture
def live_server(db: Database) -> Iterator[LiveServer]:
    """The real app on a real port (its own engine, same database), in a thread."""
    with serve_live(ordertally_app()) as server:
        yield server
