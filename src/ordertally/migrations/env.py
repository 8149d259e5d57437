"""Alembic environment: runs migrations over the async engine on SQLite and PostgreSQL."""

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

import ordertally.aftersales.models
import ordertally.analytics.models
import ordertally.auth.models
import ordertally.casework.models
import ordertally.catalog.models
import ordertally.channels.models
import ordertally.customers.models
import ordertally.events.models
import ordertally.exceptions.models
import ordertally.exports.models
import ordertally.fulfillment.models
import ordertally.idempotency.models
import ordertally.inventory.models
import ordertally.jobs.models
import ordertally.notify.models
import ordertally.orders.models
import ordertally.payments.models
import ordertally.rules.models
import ordertally.search.models  # noqa: F401  (register every table on the metadata)
from ordertally.core.db import Base
from ordertally.core.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().effective_database_url


def _include_object(obj, name, type_, reflected, compare_to):
    # Hand-written per-dialect objects (FTS5 tables, GIN indexes) carry this prefix.
    return not (name or "").startswith("hand_")


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=_include_object,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _url()
    if url.startswith("sqlite"):
        from pathlib import Path

        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
