"""A failed statement's exception (which reaches the logs: a batch that falls back, the 500
handler) carries the SQL but never its bound values, on both databases: they may be a buyer's
name, phone or address."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ordertally.core.db import Database

pytestmark = pytest.mark.anyio

SECRET = "张三13812345678"


async def test_a_failed_statement_keeps_its_values_out_of_the_error(db: Database) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with db.transaction() as session:
            await session.execute(
                text("SELECT * FROM no_such_table WHERE name = :name"), {"name": SECRET}
            )
    message = str(caught.value)
    assert "no_such_table" in message
    assert SECRET not in message and SECRET not in repr(caught.value)
