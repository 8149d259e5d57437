"""Counting the SQL a piece of code runs: tests that hold a hot path to its statements."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from ordertally.core.db import Database


class Statements:
    """The SQL statements the database engine runs while it listens."""

    def __init__(self, db: Database) -> None:
        self.engines = {id(e.sync_engine): e.sync_engine for e in (db.write_engine, db.read_engine)}
        self.seen: list[str] = []

    def __enter__(self) -> Statements:
        for engine in self.engines.values():
            event.listen(engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        for engine in self.engines.values():
            event.remove(engine, "before_cursor_execute", self._seen)

    def _seen(self, _c: object, _cur: object, statement: str, *_a: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def on(self, table: str) -> list[str]:
        """The statements that name a table (FROM, INTO or UPDATE)."""
        marks = (f"FROM {table} ", f"INTO {table} ", f"UPDATE {table} ")
        return [s for s in self.seen if any(m in s + " " for m in marks)]
