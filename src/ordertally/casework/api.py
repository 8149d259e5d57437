"""HTTP routes of the exception workbench: thin, one transaction per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.casework import batch, service
from ordertally.casework.filters import CaseFilter
from ordertally.casework.schemas import (
    AssignIn,
    BatchIn,
    CommentIn,
    HandOffIn,
    PolicyIn,
    ReasonIn,
    ResolveIn,
)
from ordertally.core import clock
from ordertally.core.errors import Forbidden
from ordertally.core.http import client_ip, database, json_response
from ordertally.exceptions import registry
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.errors import UnknownCaseType
from ordertally.exceptions.registry import CaseType
from ordertally.exceptions.service import Who
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.http import run_idempotent
from ordertally.orders import holds
from ordertally.orders import queries as orders_queries

router = APIRouter(prefix="/api/v1", tags=["cases"])
MAX_PAGE = 200


IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]
Work = Callable[[AsyncSession], Awaitable[tuple[int, bytes, dict[str, str]]]]


async def _own_case(request: Request, principal: Principal, case_id: int) -> None:
    """Refuse a channel-scoped caller a case of another channel account's order (or of no
    order)."""
    if principal.channels is None:
        return
    async with database(request).transaction(write=False) as session:
        case = await exceptions_service.get_case(session, case_id)
        order = (
            await orders_queries.get_by_id(session, case.order_id)
            if case.order_id is not None
            else None
        )
    if order is None or not principal.may_act_for_channel(order.channel):
        raise Forbidden(f"case {case_id} is outside this key's channel accounts")


def _unscoped(principal: Principal) -> None:
    """Batches select over every channel's orders: a channel-scoped caller runs none."""
    if principal.channels is not None:
        raise Forbidden("a channel-scoped key cannot run batch actions")


def _who(request: Request, principal: Principal) -> Who:
    return Who(principal.name, client_ip(request))


async def _idempotent(
    request: Request, principal: Principal, key: str | None, body: BaseModel, work: Work
) -> Response:
    return await run_idempotent(
        database(request),
        scope=principal.scope,
        key=key,
        req_hash=idempotency_service.request_hash(
            "POST", request.url.path, body.model_dump_json().encode()
        ),
        work=work,
    )


@router.get("/cases", summary="Exception cases with filters, keyset pages and facet counts")
async def list_cases(
    request: Request,
    principal: Annotated[Principal, Depends(require("cases.read"))],
    type: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(pattern="^(customer|system|supply_chain)$")] = None,
    state: Annotated[
        str | None, Query(pattern="^(open|in_progress|resolved|escalated|cancelled)$")
    ] = None,
    role: Annotated[str | None, Query(max_length=20)] = None,
    assignee: Annotated[str | None, Query(max_length=100)] = None,
    breached: bool | None = None,
    due_within_minutes: Annotated[int | None, Query(ge=0, le=60 * 24 * 30)] = None,
    order_no: Annotated[str | None, Query(max_length=32)] = None,
    sku: Annotated[str | None, Query(max_length=64)] = None,
    warehouse: Annotated[str | None, Query(max_length=32)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Response:
    """Newest first; `next_cursor` continues; `facets` counts the matches per type, category,
    state and role."""
    now = clock.now()
    f = CaseFilter(
        type=type,
        category=category,
        state=state,
        role=role,
        assignee=assignee,
        breached=breached,
        due_before=now + timedelta(minutes=due_within_minutes)
        if due_within_minutes is not None
        else None,
        now=now,
        order_no=order_no,
        sku=sku,
        warehouse=warehouse,
        channel=channel,
        tag=tag,
        created_from=created_from,
        created_to=created_to,
        channels=principal.channels,
    )
    async with database(request).transaction(write=False) as session:
        page = await service.list_cases(session, f, cursor, limit)
    return json_response(page)


@router.get("/cases/{case_id}", summary="One case with its log")
async def get_case(
    request: Request,
    case_id: int,
    principal: Annotated[Principal, Depends(require("cases.read"))],
) -> Response:
    """The case and every action, comment, hand-off and notification on it."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction(write=False) as session:
        return json_response(await service.case_detail(session, case_id))


async def _detail(request: Request, case_id: int) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        return await service.case_detail(session, case_id)


@router.post("/cases/{case_id}/assign", summary="Assign a case to a person")
async def assign(
    request: Request,
    case_id: int,
    body: AssignIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
) -> Response:
    """An open case becomes in progress."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction() as session:
        await exceptions_service.assign(session, case_id, body.assignee, _who(request, principal))
    return json_response(await _detail(request, case_id))


@router.post("/cases/{case_id}/comments", summary="Comment on a case", status_code=201)
async def comment(
    request: Request,
    case_id: int,
    body: CommentIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A comment and attachment references, logged with who, when and from where (replayed,
    not repeated, for a repeated key)."""
    await _own_case(request, principal, case_id)

    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        await exceptions_service.comment(
            session, case_id, body.text, body.attachments, _who(request, principal)
        )
        return 201, orjson.dumps(await service.case_detail(session, case_id)), {}

    return await _idempotent(request, principal, idempotency_key, body, work)


@router.post("/cases/{case_id}/hand-off", summary="Hand a case to another role")
async def hand_off(
    request: Request,
    case_id: int,
    body: HandOffIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
) -> Response:
    """Refused with 409 exceptions.evidence_missing without the evidence the type's policy
    asks of the receiving role."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction() as session:
        await exceptions_service.hand_off(
            session, case_id, body.to_role, body.evidence, body.note, _who(request, principal)
        )
    return json_response(await _detail(request, case_id))


@router.post("/cases/{case_id}/resolve", summary="Resolve a case with a resolution code")
async def resolve(
    request: Request,
    case_id: int,
    body: ResolveIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
) -> Response:
    """A stock-shortage hold re-reserves its stock first (or stays open while short)."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction() as session:
        await holds.resolve_case(
            session,
            case_id,
            principal.name,
            body.resolution,
            code=body.code,
            source_ip=client_ip(request),
        )
    return json_response(await _detail(request, case_id))


@router.post("/cases/{case_id}/reopen", summary="Reopen a closed or escalated case")
async def reopen(
    request: Request,
    case_id: int,
    body: ReasonIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
) -> Response:
    """With a fresh SLA clock."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction() as session:
        await exceptions_service.reopen(session, case_id, body.reason, _who(request, principal))
    return json_response(await _detail(request, case_id))


@router.post("/cases/{case_id}/cancel", summary="Cancel a case opened by mistake")
async def cancel(
    request: Request,
    case_id: int,
    body: ReasonIn,
    principal: Annotated[Principal, Depends(require("cases.work"))],
) -> Response:
    """An active case only."""
    await _own_case(request, principal, case_id)
    async with database(request).transaction() as session:
        await exceptions_service.cancel(session, case_id, body.reason, _who(request, principal))
    return json_response(await _detail(request, case_id))


def _policy_doc(p: CaseType) -> dict[str, Any]:
    return {
        "type": p.type,
        "category": p.side,
        "severity": p.severity,
        "owner_role": p.owner_role,
        "sla_minutes": p.sla_minutes,
        "warn_minutes": p.warn_minutes,
        "evidence": p.evidence,
        "escalate_to": p.escalate_to,
        "escalate_after_minutes": p.escalate_after_minutes,
        "notify_on_open": p.notify_on_open,
        "channels": list(p.channels),
        "label_zh": p.label_zh,
        "label_en": p.label_en,
    }


@router.get("/case-policies", summary="Every case type's policy")
async def list_policies(
    request: Request, _: Annotated[Principal, Depends(require("cases.read"))]
) -> Response:
    """The registry's defaults with stored edits applied."""
    async with database(request).transaction(write=False) as session:
        policies = await exceptions_service.list_policies(session)
    return json_response([_policy_doc(p) for p in policies])


@router.put("/case-policies/{case_type}", summary="Set a case type's policy")
async def put_policy(
    request: Request,
    case_type: str,
    body: PolicyIn,
    principal: Annotated[Principal, Depends(require("cases.manage"))],
) -> Response:
    """Cases opened from now on follow it; a type the registry does not know is refused."""
    if not registry.is_registered(case_type):
        raise UnknownCaseType(f"no case type {case_type!r}", type=case_type)
    entry = registry.lookup(case_type)
    policy = CaseType(
        case_type,
        entry.side,
        body.severity,
        body.owner_role,
        body.sla_minutes,
        body.warn_minutes,
        {str(k): v for k, v in body.evidence.items()},
        body.escalate_to,
        body.escalate_after_minutes,
        body.notify_on_open,
        tuple(body.channels),
        entry.label_zh,
        entry.label_en,
    )
    async with database(request).transaction() as session:
        stored = await exceptions_service.set_policy(session, policy, principal.name)
    return json_response(_policy_doc(stored))


def _batch_doc(b: Any, audit: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": b.id,
        "action": b.action,
        "target": b.target,
        "filters": b.filters,
        "params": b.params,
        "state": b.state,
        "total": b.total,
        "processed": b.processed,
        "changed": b.changed,
        "created_by": b.created_by,
        "audit": audit or {},
    }


@router.post("/batches", summary="Preview a batch action (count and sample)", status_code=201)
async def create_batch(
    request: Request,
    body: BatchIn,
    principal: Annotated[Principal, Depends(require("cases.batch"))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Nothing changes until the batch is confirmed (one batch per repeated key)."""
    _unscoped(principal)

    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        batch_id, total, sample = await batch.create(
            session, body.action, body.target, body.filters, body.params, _who(request, principal)
        )
        return 201, orjson.dumps({"id": batch_id, "total": total, "sample": sample}), {}

    return await _idempotent(request, principal, idempotency_key, body, work)


@router.post("/batches/{batch_id}/confirm", summary="Confirm a previewed batch")
async def confirm_batch(
    request: Request,
    batch_id: int,
    principal: Annotated[Principal, Depends(require("cases.batch"))],
) -> Response:
    """The worker runs it in the background; GET shows its progress."""
    _unscoped(principal)
    async with database(request).transaction() as session:
        b = await batch.confirm(session, batch_id)
    return json_response(_batch_doc(b))


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch")
async def cancel_batch(
    request: Request,
    batch_id: int,
    principal: Annotated[Principal, Depends(require("cases.batch"))],
) -> Response:
    """Stops between chunks; what is done stays done."""
    _unscoped(principal)
    async with database(request).transaction() as session:
        b = await batch.cancel(session, batch_id)
    return json_response(_batch_doc(b))


@router.get("/batches/{batch_id}", summary="A batch's progress")
async def get_batch(
    request: Request, batch_id: int, _: Annotated[Principal, Depends(require("cases.read"))]
) -> Response:
    """State, processed and changed counts, audit rows per outcome."""
    async with database(request).transaction(write=False) as session:
        b = await batch.get(session, batch_id)
        audit = await batch.audit_counts(session, batch_id)
    return json_response(_batch_doc(b, audit))
