"""`make migrations-check`: `upgrade head` then `check` on a scratch SQLite file and, when
ORDERTALLY_TEST_PG_URL is set, on a scratch PostgreSQL database (created and dropped here)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ordertally.ops.migrations import check, upgrade


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/check.db"
        upgrade(url)
        check(url)
        print("migrations: sqlite upgrade head + check OK")
    pg = os.environ.get("ORDERTALLY_TEST_PG_URL")
    if not pg:
        if os.environ.get("ORDERTALLY_REQUIRE_SERVICES") == "1":
            print("ORDERTALLY_TEST_PG_URL is required but not set", file=sys.stderr)
            return 1
        print("migrations: PostgreSQL skipped (ORDERTALLY_TEST_PG_URL not set)")
        return 0
    name = f"ot_migcheck_{uuid.uuid4().hex[:10]}"
    base = make_url(pg)
    asyncio.run(_admin(pg, f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        check(url)
        print("migrations: postgresql upgrade head + check OK")
    finally:
        asyncio.run(_admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
