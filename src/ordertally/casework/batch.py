"""Batch actions over orders picked by a filter: preview (count and a sample), confirm, then
run by the worker in chunks of one transaction each, with progress, cancellable between chunks.
Each order gets one audit row per batch, written with the change in the same transaction, so a
resumed run skips what it did; every action is idempotent on its own too (a second batch asking
the same changes nothing: a tag present, a sub-status already set, one coupon per campaign, one
message per campaign, a case of the type already active)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.casework import repository
from ordertally.casework.errors import BatchNotCancellable, BatchNotConfirmable, BatchNotFound
from ordertally.casework.models import BatchAction
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.service import Who
from ordertally.notify import service as notify_service
from ordertally.orders import closing, holds, transitions
from ordertally.orders import service as orders_service
from ordertally.orders.errors import IllegalTransition, OrderOnHold, TransitionConflict
from ordertally.orders.state_machine import Actor, ActorKind, Event, Status

CHUNK = 500
SAMPLE = 20
HOLD_TYPE = "manual_hold"
ACTIONS = (
    "message",
    "coupon",
    "tag",
    "sub_status",
    "remark",
    "open_case",
    "resolve_cases",
    "hold",
    "release",
    "cancel_unpaid",
)


class _Cancelled(Exception):
    """Rolls back a chunk whose batch was cancelled while it ran."""


# (session, batch, order id, who) -> changed?
Apply = Callable[[AsyncSession, BatchAction, int, Who], Awaitable[bool]]
# (session, batch, a chunk's order ids, who) -> the ids it changed
Bulk = Callable[[AsyncSession, BatchAction, list[int], Who], Awaitable[set[int]]]
# (database, a chunk's order ids) -> the ids to leave as they are; run with no transaction open
Precheck = Callable[[Database, list[int]], Awaitable[set[int]]]


async def preview(
    session: AsyncSession, target: str, filters: dict[str, Any]
) -> tuple[int, list[str]]:
    """How many orders a filter selects, and the first few order numbers."""
    now = clock.now()
    total = await repository.count_targets(session, target, filters, now)
    ids = await repository.target_ids(session, target, filters, now, 0, SAMPLE)
    nos = await repository.order_nos(session, ids)
    return total, [nos[i] for i in ids if i in nos]


async def create(
    session: AsyncSession,
    action: str,
    target: str,
    filters: dict[str, Any],
    params: dict[str, Any],
    who: Who,
) -> tuple[int, int, list[str]]:
    """Store a previewed batch; returns (id, count, sample). Nothing runs before confirm."""
    total, sample = await preview(session, target, filters)
    batch_id = await repository.add_batch(
        session,
        {
            "action": action,
            "target": target,
            "filters": filters,
            "params": params,
            "state": "previewed",
            "total": total,
            "processed": 0,
            "changed": 0,
            "cursor": 0,
            "created_by": who.name,
            "source_ip": who.source_ip,
            "created_at": clock.now(),
        },
    )
    return batch_id, total, sample


async def get(session: AsyncSession, batch_id: int) -> BatchAction:
    """A batch, or BatchNotFound."""
    batch = await repository.get_batch(session, batch_id)
    if batch is None:
        raise BatchNotFound(f"batch {batch_id} does not exist")
    return batch


async def confirm(session: AsyncSession, batch_id: int) -> BatchAction:
    """Queue a previewed batch for the worker."""
    batch = await get(session, batch_id)
    if not await repository.change_batch(session, batch_id, ("previewed",), {"state": "queued"}):
        raise BatchNotConfirmable(f"batch {batch_id} is {batch.state}", state=batch.state)
    await session.refresh(batch)
    return batch


async def cancel(session: AsyncSession, batch_id: int) -> BatchAction:
    """Stop a batch between chunks (what is done stays done, with its audit rows)."""
    batch = await get(session, batch_id)
    if not await repository.change_batch(
        session,
        batch_id,
        ("previewed", "queued", "running"),
        {"state": "cancelled", "finished_at": clock.now()},
    ):
        raise BatchNotCancellable(f"batch {batch_id} is {batch.state}", state=batch.state)
    await session.refresh(batch)
    return batch


async def queued(session: AsyncSession) -> list[int]:
    """Batches waiting for the worker (or interrupted in their run)."""
    return await repository.queued_batches(session, 10)


async def audit_counts(session: AsyncSession, batch_id: int) -> dict[str, int]:
    """A batch's audit rows per outcome (changed / unchanged)."""
    return await repository.audit_of(session, batch_id)


async def run(db: Database, batch_id: int, chunk: int = CHUNK) -> str:
    """Run (or resume) a queued batch chunk by chunk; returns its final state."""
    async with db.transaction() as session:
        batch = await get(session, batch_id)
        if batch.state == "queued":
            await repository.change_batch(
                session, batch_id, ("queued",), {"state": "running", "started_at": clock.now()}
            )
        elif batch.state != "running":
            return batch.state
        precheck = PRECHECKS.get(batch.action)
    while True:
        ids: list[int] | None = None
        keep: set[int] = set()
        if precheck is not None:
            # The chunk is read first and checked with no transaction open (the check may ask a
            # platform); the write transaction then works on exactly the ids that were checked.
            async with db.transaction(write=False) as session:
                batch = await get(session, batch_id)
                ids = await repository.target_ids(
                    session, batch.target, batch.filters, batch.created_at, batch.cursor, chunk
                )
            keep = await precheck(db, ids) if ids else set()
        async with db.transaction() as session:
            batch = await get(session, batch_id)
            if batch.state != "running":
                return batch.state
            if ids is None:
                ids = await repository.target_ids(
                    session, batch.target, batch.filters, batch.created_at, batch.cursor, chunk
                )
            if not ids:
                await repository.change_batch(
                    session, batch_id, ("running",), {"state": "done", "finished_at": clock.now()}
                )
                return "done"
            try:
                changed = await _apply_chunk(session, batch, ids, keep)
                if not await repository.advance_batch(
                    session, batch_id, ids[-1], len(ids), changed
                ):
                    raise _Cancelled  # cancelled meanwhile: this chunk rolls back
            except _Cancelled:
                return "cancelled"


async def _apply_chunk(
    session: AsyncSession, batch: BatchAction, ids: list[int], keep: set[int]
) -> int:
    done = await repository.audited(session, batch.id, ids)
    who = Who(f"batch:{batch.id}:{batch.created_by}", batch.source_ip)
    todo = [i for i in ids if i not in done]
    work = [i for i in todo if i not in keep]
    changed = await BULK[batch.action](session, batch, work, who) if work else set()
    now = clock.now()
    await repository.add_audit(
        session,
        [
            {
                "batch_id": batch.id,
                "order_id": order_id,
                "action": batch.action,
                "outcome": "changed" if order_id in changed else "unchanged",
                "detail": batch.params,
                "actor": batch.created_by,
                "at": now,
            }
            for order_id in todo
        ],
    )
    return len(changed)


# --- set-based actions: one statement or two per chunk ------------------------------------------


async def _tag(
    session: AsyncSession, batch: BatchAction, order_ids: list[int], who: Who
) -> set[int]:
    now = clock.now()
    rows = [
        {"order_id": i, "tag": batch.params["tag"], "created_at": now, "created_by": who.name[:100]}
        for i in order_ids
    ]
    return await repository.add_tags(session, rows)


async def _sub_status(
    session: AsyncSession, batch: BatchAction, order_ids: list[int], who: Who
) -> set[int]:
    return await orders_service.set_sub_status_many(
        session, order_ids, batch.params.get("sub_status"), who.name, who.source_ip
    )


async def _remark(
    session: AsyncSession, batch: BatchAction, order_ids: list[int], who: Who
) -> set[int]:
    return await orders_service.set_remark_many(
        session, order_ids, batch.params.get("remark") or None, who.name, who.source_ip
    )


async def _coupon(
    session: AsyncSession, batch: BatchAction, order_ids: list[int], who: Who
) -> set[int]:
    now = clock.now()
    rows = [
        {
            "order_id": i,
            "campaign": batch.params["campaign"],
            "code": "C" + secrets.token_hex(8).upper(),
            "amount_minor": int(batch.params["amount_minor"]),
            "currency": batch.params.get("currency", "CNY"),
            "batch_id": batch.id,
            "created_at": now,
            "created_by": who.name[:100],
        }
        for i in order_ids
    ]
    return await repository.add_coupons(session, rows)


# --- the actions that go one order at a time (they open or close cases, plan messages) ----------


async def _message(session: AsyncSession, batch: BatchAction, order_id: int, who: Who) -> bool:
    nos = await repository.order_nos(session, [order_id])
    return await notify_service.plan_buyer_message(
        session,
        key=f"batch:{batch.params['campaign']}:{order_id}",
        order_no=nos[order_id],
        template=str(batch.params.get("template", "delay")),
        params={"delay_days": str(batch.params.get("delay_days", "")), "order_no": nos[order_id]},
    )


async def _has_active(session: AsyncSession, order_id: int, case_type: str) -> list[int]:
    return [
        c.id for c in await exceptions_service.open_cases(session, order_id) if c.type == case_type
    ]


async def _open(
    session: AsyncSession, order_id: int, case_type: str, blocking: bool, who: Who, note: str
) -> bool:
    if await _has_active(session, order_id, case_type):
        return False
    await exceptions_service.open_case_record(
        session,
        order_id=order_id,
        category="casework",
        type=case_type,
        blocking=blocking,
        detail={"note": note},
        by=who,
    )
    return True


async def _resolve(
    session: AsyncSession, order_id: int, case_type: str, who: Who, note: str, code: str
) -> bool:
    ids = await _has_active(session, order_id, case_type)
    for case_id in ids:
        await holds.resolve_case(
            session, case_id, who.name, note, code=code, source_ip=who.source_ip
        )
    return bool(ids)


async def _open_case(session: AsyncSession, batch: BatchAction, order_id: int, who: Who) -> bool:
    p = batch.params
    return await _open(
        session, order_id, p["case_type"], bool(p.get("blocking")), who, p.get("note", "")
    )


async def _resolve_cases(
    session: AsyncSession, batch: BatchAction, order_id: int, who: Who
) -> bool:
    p = batch.params
    return await _resolve(
        session, order_id, p["case_type"], who, p.get("note", "batch"), p.get("code", "batch")
    )


async def _hold(session: AsyncSession, batch: BatchAction, order_id: int, who: Who) -> bool:
    return await _open(session, order_id, HOLD_TYPE, True, who, batch.params.get("note", ""))


async def _release(session: AsyncSession, batch: BatchAction, order_id: int, who: Who) -> bool:
    note = batch.params.get("note", "released")
    return await _resolve(session, order_id, HOLD_TYPE, who, note, "released")


async def _cancel_unpaid(
    session: AsyncSession, batch: BatchAction, order_id: int, who: Who
) -> bool:
    orders = await orders_service.get_orders_by_id(session, [order_id])
    if not orders or orders[0].status != Status.PENDING_PAYMENT:
        return False
    actor = Actor(ActorKind.OPERATOR, who.name[:100], who.source_ip, note=batch.params.get("note"))
    try:
        result = await transitions.transition(session, orders[0].order_no, Event.CANCEL, actor)
    except (IllegalTransition, OrderOnHold, TransitionConflict):
        return False  # refused before anything was written: paid meanwhile, or on hold
    return result.applied


def _each(apply: Apply) -> Bulk:
    async def bulk(
        session: AsyncSession, batch: BatchAction, order_ids: list[int], who: Who
    ) -> set[int]:
        return {i for i in order_ids if await apply(session, batch, i, who)}

    return bulk


BULK: dict[str, Bulk] = {
    "message": _each(_message),
    "coupon": _coupon,
    "tag": _tag,
    "sub_status": _sub_status,
    "remark": _remark,
    "open_case": _each(_open_case),
    "resolve_cases": _each(_resolve_cases),
    "hold": _each(_hold),
    "release": _each(_release),
    "cancel_unpaid": _each(_cancel_unpaid),
}
PRECHECKS: dict[str, Precheck] = {"cancel_unpaid": closing.kept_open_ids}
