"""Every query on idempotency keys: advisory locks, stored responses, the purge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Read, Upsert, execute_driver_sql, insert_rows, table_of
from ordertally.idempotency.models import IdempotencyKey

# Hot-path statements are built once and executed with parameters (compiled-form cache).
_KEYS = table_of(IdempotencyKey)
_SELECT_KEY = select(
    _KEYS.c.request_hash, _KEYS.c.response_status, _KEYS.c.response_body, _KEYS.c.expires_at
).where(_KEYS.c.scope == bindparam("scope"), _KEYS.c.key == bindparam("key"))
_KEY_LOCK = select(
    func.pg_try_advisory_xact_lock(
        func.hashtextextended(bindparam("scope") + "\x1f" + bindparam("key"), 0)
    )
)


async def try_key_lock(session: AsyncSession, scope: str, key: str) -> bool:
    """PostgreSQL: take a transaction-scoped advisory lock on (scope, key), without waiting."""
    return bool(await session.scalar(_KEY_LOCK, {"scope": scope, "key": key}))


_KEY_LOCKS = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended(s || chr(31) || k, 0))"
    " FROM unnest(CAST($1 AS text[]), CAST($2 AS text[])) WITH ORDINALITY AS t(s, k, n)"
    " ORDER BY n"
)


def key_locks(session: AsyncSession, keys: list[tuple[str, str]]) -> Read[set[tuple[str, str]]]:
    """PostgreSQL: `try_key_lock` on many (scope, key) pairs in one statement (a
    `read_together` read): the pairs it locked."""
    args = [[s for s, _ in keys], [k for _, k in keys]]

    def locked(rows: list[Any]) -> set[tuple[str, str]]:
        return {key for key, (ok,) in zip(keys, rows, strict=True) if ok}

    async def alone() -> set[tuple[str, str]]:
        return locked(list((await execute_driver_sql(session, _KEY_LOCKS, args)).all()))

    return Read(_KEY_LOCKS, args, locked, alone)


def stored_keys(session: AsyncSession, keys: list[tuple[str, str]]) -> Read[set[tuple[str, str]]]:
    """`keys_present` as a `read_together` read, on the exact pairs (one statement text
    whatever their number)."""
    if not keys:
        return Read.known(set())
    return Read(
        "SELECT t.s, t.k FROM unnest(CAST($1 AS text[]), CAST($2 AS text[])) AS t(s, k)"
        " WHERE EXISTS (SELECT FROM idempotency_key i WHERE i.scope = t.s AND i.key = t.k)",
        [[s for s, _ in keys], [k for _, k in keys]],
        lambda rows: {(s, k) for s, k in rows},
        lambda: keys_present(session, keys),
    )


async def keys_present(session: AsyncSession, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (scope, key) pairs have a stored response (expired or not): one query on both
    columns' values (the primary key serves it), narrowed to the exact pairs here."""
    if not keys:
        return set()
    rows = await session.execute(
        select(_KEYS.c.scope, _KEYS.c.key).where(
            _KEYS.c.scope.in_(sorted({s for s, _ in keys})),
            _KEYS.c.key.in_(sorted({k for _, k in keys})),
        )
    )
    return {(s, k) for s, k in rows.all()} & set(keys)


async def get_key(session: AsyncSession, scope: str, key: str) -> Any:
    """A stored key's (request_hash, response_status, response_body, expires_at), or None."""
    return (await session.execute(_SELECT_KEY, {"scope": scope, "key": key})).first()


async def store_keys(session: AsyncSession, values: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Store (or, over an expired one, replace) one key's response, or many at once: at once,
    or folded into the creation batch's one INSERT statement (`folded_inserts`)."""
    await insert_rows(session, _KEYS, values, upsert=_STORE)


_STORE = Upsert(
    keys=("scope", "key"),
    update=("request_hash", "response_status", "response_body", "created_at", "expires_at"),
)


async def purge_keys(session: AsyncSession, now: datetime, limit: int) -> int:
    """Delete up to `limit` expired keys, those that expired first first (the walk follows
    the expires_at index)."""
    oldest = (
        select(IdempotencyKey.scope, IdempotencyKey.key)
        .where(IdempotencyKey.expires_at < now)
        .order_by(IdempotencyKey.expires_at)
        .limit(limit)
    )
    result = await session.execute(
        delete(IdempotencyKey).where(tuple_(IdempotencyKey.scope, IdempotencyKey.key).in_(oldest))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
