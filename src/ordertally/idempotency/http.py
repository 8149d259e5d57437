"""The Idempotency-Key boundary of a POST: one transaction around the check, the work and the
stored response, and the replayed answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Response
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Database
from ordertally.core.http import JSON
from ordertally.idempotency import service
from ordertally.idempotency.service import Replay

Work = Callable[[AsyncSession], Awaitable[tuple[int, bytes, dict[str, str]]]]


def replay_response(replay: Replay) -> Response:
    """The stored response, marked `Idempotent-Replayed: true`."""
    return Response(
        replay.body.encode(),
        status_code=replay.status,
        media_type=JSON,
        headers={"Idempotent-Replayed": "true"},
    )


async def run_idempotent(
    db: Database, *, scope: str, key: str | None, req_hash: str, work: Work
) -> Response:
    """Run `work` in one transaction with its Idempotency-Key: a stored response is replayed
    (Idempotent-Replayed: true), another body is 422, a key still in flight is 409; the
    response is stored in the same transaction as the work, so both commit or neither."""
    async with db.transaction() as session:
        if key is not None:
            replay = await service.check(session, scope, key, req_hash)
            if replay is not None:
                return replay_response(replay)
        status, payload, headers = await work(session)
        if key is not None:
            await service.store(session, scope, key, req_hash, status, payload.decode())
    return Response(payload, status_code=status, media_type=JSON, headers=headers)
