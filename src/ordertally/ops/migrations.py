"""Alembic driven from code: upgrade, check, and where the database stands."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import create_private_file

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """A Config pointing at the packaged migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Migrate a database to head."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        create_private_file(Path(parsed.database))
    command.upgrade(alembic_config(url), "head")


def check(url: str) -> None:
    """Fail if the models and the migrations disagree."""
    command.check(alembic_config(url))


def head_revision() -> str | None:
    """The newest migration in the package."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(session: AsyncSession) -> str | None:
    """The revision a database is at."""

    def read(sync_session: object) -> str | None:
        connection = session.sync_session.connection()
        return MigrationContext.configure(connection).get_current_revision()

    return await session.run_sync(read)
