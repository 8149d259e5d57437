"""Idempotency keys: what "the same request" means, the check before the work, the stored
response written with the work, the batch claim of the order batcher, and the purge.

Services receive a session and never commit; the caller's boundary does (see `http.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.db import Database, Read, dialect_of, read_together
from ordertally.core.purge import in_chunks
from ordertally.core.settings import get_settings
from ordertally.idempotency import repository
from ordertally.idempotency.errors import IdempotencyInFlight, IdempotencyMismatch


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored response, to be sent again."""

    status: int
    body: str


def request_hash(method: str, path: str, body: BaseModel | bytes) -> str:
    """What "the same request" means: method, path and the parsed body."""
    raw = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + raw).hexdigest()


async def check(session: AsyncSession, scope: str, key: str, req_hash: str) -> Replay | None:
    """Inside the request's own transaction: None means "go ahead"; a Replay is the stored
    response. A concurrent request holding the same key gets IdempotencyInFlight.

    PostgreSQL: a transaction-scoped advisory lock on the key marks it in flight (released at
    commit or rollback). SQLite: write transactions are serialised, so a second request with
    the key simply runs after the first and replays it.
    """
    if dialect_of(session) == "postgresql" and not await repository.try_key_lock(
        session, scope, key
    ):
        raise IdempotencyInFlight("the first request with this key has not finished")
    row = await repository.get_key(session, scope, key)
    if row is None or clock.as_utc(row.expires_at) <= clock.now():
        return None
    if row.request_hash != req_hash:
        raise IdempotencyMismatch("this Idempotency-Key was first used with another request")
    return Replay(row.response_status, row.response_body)


async def claim(session: AsyncSession, keys: list[tuple[str, str] | None]) -> list[bool]:
    """For a batch of requests in one transaction: True where a request may go ahead here.

    An unkeyed request may. A keyed one may when its key has no stored response, is not in
    flight in another transaction (PostgreSQL: the same advisory lock as `check`) and is the
    first of its key in the batch. The others are left to `check`, after this transaction
    commits, which replays, refuses or runs them as it always does. The two reads of the claim
    (`claim_locks`, then `claim_stored`) can ride with a batch's other reads (`read_together`).
    """
    (free,) = await read_together(session, claim_locks(session, keys))
    (stored,) = await read_together(session, claim_stored(session, free))
    return claimed(keys, free - stored)


def claim_locks(
    session: AsyncSession, keys: list[tuple[str, str] | None]
) -> Read[set[tuple[str, str]]]:
    """The claim's first read: the batch's keys no other transaction holds, now locked by this
    one (PostgreSQL; SQLite: every key, its writers are serialised)."""
    keyed = sorted({k for k in keys if k is not None})
    if not keyed or dialect_of(session) != "postgresql":
        return Read.known(set(keyed))
    return repository.key_locks(session, keyed)


def claim_stored(session: AsyncSession, free: set[tuple[str, str]]) -> Read[set[tuple[str, str]]]:
    """The claim's second read, in a statement after `claim_locks`' (its snapshot must see a
    response committed by the transaction whose lock it waited out): which of the free keys
    have a stored response (expired or not)."""
    return repository.stored_keys(session, sorted(free))


def claimed(keys: list[tuple[str, str] | None], free: set[tuple[str, str]]) -> list[bool]:
    """Per request: whether it goes ahead here (its key free, not stored, first in the batch)."""
    go: list[bool] = []
    free = set(free)
    for key in keys:
        go.append(key is None or key in free)
        if key is not None:
            free.discard(key)
    return go


def response_row(scope: str, key: str, req_hash: str, status: int, body: str) -> dict[str, Any]:
    """A stored response's row (for `store_many`)."""
    now = clock.now()
    return {
        "scope": scope,
        "key": key,
        "request_hash": req_hash,
        "response_status": status,
        "response_body": body,
        "created_at": now,
        "expires_at": now + timedelta(hours=get_settings().idempotency_ttl_hours),
    }


async def store_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Store many responses (`response_row`), in the same transaction as their work."""
    if rows:
        await repository.store_keys(session, rows)


async def store(
    session: AsyncSession, scope: str, key: str, req_hash: str, status: int, body: str
) -> None:
    """Store the response, in the same transaction as the work it describes."""
    await repository.store_keys(session, response_row(scope, key, req_hash, status, body))


# The purge deletes keys in chunks, one short transaction each, and at most PURGE_CHUNKS chunks
# a run: a backlog (a worker stopped for days, a promotion) is worked off over several runs
# instead of in one transaction that holds millions of row locks and bloats the WAL at once.
PURGE_CHUNK = 10_000
PURGE_CHUNKS = 100


async def purge_expired(
    db: Database, now: datetime, chunk: int = PURGE_CHUNK, chunks: int = PURGE_CHUNKS
) -> int:
    """Delete keys past their retention (24 h by default), `chunk` per transaction, at most
    `chunks` transactions; returns how many."""
    return await in_chunks(
        db, lambda session, n: repository.purge_keys(session, now, n), chunk, chunks
    )
