"""Opening and working exception cases: the type's policy sets the side, severity, owner and
SLA due time when a case opens; every action is a compare-and-set on the case's state plus a
log row (who, when, from which IP). Services receive a session and never commit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.errors import Conflict, NotFound
from ordertally.events import outbox
from ordertally.exceptions import registry, repository
from ordertally.exceptions.errors import CaseNotActive, EvidenceMissing, UnknownCaseType
from ordertally.exceptions.events import ExceptionCaseClosed, ExceptionCaseOpened
from ordertally.exceptions.metrics import RESOLVE_SECONDS
from ordertally.exceptions.models import ACTIVE, CasePolicy, ExceptionCase, ExceptionLog
from ordertally.exceptions.registry import CaseType

SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Who:
    """Who acts on a case, and from where (the log's who and IP)."""

    name: str
    source_ip: str | None = None


# --- policies -----------------------------------------------------------------------------------


async def policy_of(session: AsyncSession, case_type: str) -> CaseType:
    """A type's policy: the stored one over the registry's entry."""
    entry = registry.lookup(case_type)
    stored = await repository.get_policy(session, case_type)
    return entry if stored is None else _merge(entry, stored)


def _merge(entry: CaseType, stored: CasePolicy) -> CaseType:
    return replace(
        entry,
        sla_minutes=stored.sla_minutes,
        warn_minutes=stored.warn_minutes,
        owner_role=stored.owner_role,
        severity=stored.severity,
        evidence={k: list(v) for k, v in stored.evidence.items()},
        escalate_to=stored.escalate_to,
        escalate_after_minutes=stored.escalate_after_minutes,
        notify_on_open=stored.notify_on_open,
        channels=tuple(stored.channels),
    )


async def list_policies(session: AsyncSession) -> list[CaseType]:
    """Every registered type's policy, stored ones applied."""
    stored = {p.type: p for p in await repository.list_policies(session)}
    names = sorted(set(registry.TYPES) | set(stored))
    return [
        _merge(registry.lookup(n), stored[n]) if n in stored else registry.lookup(n) for n in names
    ]


async def set_policy(session: AsyncSession, policy: CaseType, by: str) -> CaseType:
    """Store a type's policy (validated at the edge); later cases of the type follow it."""
    await repository.upsert_policy(
        session,
        {
            "type": policy.type,
            "sla_minutes": policy.sla_minutes,
            "warn_minutes": policy.warn_minutes,
            "owner_role": policy.owner_role,
            "severity": policy.severity,
            "evidence": policy.evidence,
            "escalate_to": policy.escalate_to,
            "escalate_after_minutes": policy.escalate_after_minutes,
            "notify_on_open": policy.notify_on_open,
            "channels": list(policy.channels),
            "updated_at": clock.now(),
            "updated_by": by,
        },
    )
    return await policy_of(session, policy.type)


async def edit_policy(
    session: AsyncSession, case_type: str, values: dict[str, Any], by: str
) -> CaseType:
    """Store a registered type's policy with these fields changed (validated at the edge);
    UnknownCaseType for a type the registry does not know."""
    if not registry.is_registered(case_type):
        raise UnknownCaseType(f"no case type {case_type!r}", type=case_type)
    current = await policy_of(session, case_type)
    known = {k: v for k, v in values.items() if k in _EDITABLE}
    if "channels" in known:
        known["channels"] = tuple(known["channels"])
    return await set_policy(session, replace(current, **known), by)


_EDITABLE = frozenset(
    {
        "sla_minutes",
        "warn_minutes",
        "owner_role",
        "severity",
        "evidence",
        "escalate_to",
        "escalate_after_minutes",
        "notify_on_open",
        "channels",
    }
)


# --- opening ------------------------------------------------------------------------------------


async def open_case(
    session: AsyncSession,
    *,
    order_id: int | None,
    category: str,
    type: str,
    blocking: bool,
    detail: dict[str, Any],
) -> int:
    """Open an exception case (a hold when blocking); returns its id."""
    case = await open_case_record(
        session,
        order_id=order_id,
        category=category,
        type=type,
        blocking=blocking,
        detail=detail,
    )
    return case.id


async def open_case_record(
    session: AsyncSession,
    *,
    order_id: int | None,
    category: str,
    type: str,
    blocking: bool,
    detail: dict[str, Any],
    by: Who | None = None,
) -> ExceptionCase:
    """Open a case and return it as it now stands (without reading it back); a case on an
    order announces itself with `ExceptionCaseOpened` in the same transaction."""
    now = clock.now()
    policy = await policy_of(session, type)
    values: dict[str, Any] = {
        "order_id": order_id,
        "category": category,
        "type": type,
        "status": "open",
        "blocking": blocking,
        "detail": detail,
        "created_at": now,
        "side": policy.side,
        "severity": policy.severity,
        "owner_role": policy.owner_role,
        "due_at": now + timedelta(minutes=policy.sla_minutes),
        "updated_at": now,
    }
    case_id = await repository.add(session, **values)
    who = by or Who(SYSTEM)
    await repository.add_logs(
        session, [_log(case_id, "opened", who, now, None, {"owner_role": policy.owner_role})]
    )
    if order_id is not None:
        await outbox.publish(
            session,
            "ExceptionCaseOpened",
            ExceptionCaseOpened(
                case_id=case_id,
                order_id=order_id,
                category=category,
                type=type,
                blocking=blocking,
                occurred_at=now,
            ),
            aggregate_type="exception_case",
            aggregate_id=str(case_id),
        )
    return ExceptionCase(id=case_id, **values)


def _log(
    case_id: int, action: str, who: Who, at: datetime, note: str | None, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "action": action,
        "actor": who.name[:100],
        "source_ip": who.source_ip,
        "note": note[:2000] if note else None,
        "detail": detail,
        "at": at,
    }


# --- reading ------------------------------------------------------------------------------------


async def open_cases(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Active cases of an order."""
    return await repository.open_for_order(session, order_id)


async def cases_of_order(session: AsyncSession, order_id: int) -> list[ExceptionCase]:
    """Every case of an order."""
    return await repository.cases_of_order(session, order_id)


async def logs_of(session: AsyncSession, case_ids: list[int]) -> list[ExceptionLog]:
    """The log rows of some cases, oldest first."""
    return await repository.logs_of(session, case_ids)


async def has_hold(session: AsyncSession, order_id: int) -> bool:
    """Whether an active blocking case holds the order."""
    return await repository.count_blocking(session, order_id) > 0


async def held_orders(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """The orders among these that an active blocking case holds (one query)."""
    return await repository.held_among(session, order_ids)


async def get_case(session: AsyncSession, case_id: int) -> ExceptionCase:
    """A case by id, or NotFound."""
    case = await repository.get(session, case_id)
    if case is None:
        raise NotFound(f"exception case {case_id} does not exist")
    return case


async def orders_with_open_case(session: AsyncSession, case_type: str) -> list[int]:
    """Ids of the orders with an active case of a type."""
    return await repository.orders_with_open_case(session, case_type)


async def open_counts_by_type(session: AsyncSession) -> dict[str, int]:
    """Active cases per type (the dashboard)."""
    return await repository.open_counts_by_type(session)


# --- working a case -----------------------------------------------------------------------------


async def _act(
    session: AsyncSession,
    case_id: int,
    from_states: tuple[str, ...],
    values: dict[str, Any],
    action: str,
    who: Who,
    note: str | None = None,
    detail: dict[str, Any] | None = None,
) -> ExceptionCase:
    """Move a case out of `from_states` with `values` and log it, or refuse (nothing written)."""
    case = await get_case(session, case_id)
    now = clock.now()
    if not await repository.change(session, case_id, from_states, {**values, "updated_at": now}):
        raise CaseNotActive(
            f"exception case {case_id} is {case.status}; {action} needs one of {from_states}",
            case_id=case_id,
            status=case.status,
        )
    await repository.add_logs(session, [_log(case_id, action, who, now, note, detail or {})])
    await session.refresh(case)
    return case


async def assign(session: AsyncSession, case_id: int, assignee: str, who: Who) -> ExceptionCase:
    """Give a case to a person; an open case is then in progress."""
    case = await get_case(session, case_id)
    status = "in_progress" if case.status == "open" else case.status
    return await _act(
        session,
        case_id,
        ACTIVE,
        {"assignee": assignee, "status": status},
        "assigned",
        who,
        detail={"assignee": assignee},
    )


async def comment(
    session: AsyncSession, case_id: int, text: str, attachments: list[str], who: Who
) -> ExceptionCase:
    """Add a comment (and attachment references) to any case's log."""
    case = await get_case(session, case_id)
    await repository.add_logs(
        session,
        [_log(case_id, "commented", who, clock.now(), text, {"attachments": attachments})],
    )
    return case


async def hand_off(
    session: AsyncSession,
    case_id: int,
    to_role: str,
    evidence: dict[str, str],
    note: str | None,
    who: Who,
) -> ExceptionCase:
    """Hand a case to another role; refused (nothing written) without the evidence the
    policy asks of that role (finance: the refund approval; warehouse: the return receipt)."""
    case = await get_case(session, case_id)
    policy = await policy_of(session, case.type)
    missing = [key for key in policy.evidence.get(to_role, []) if not evidence.get(key)]
    if missing:
        raise EvidenceMissing(
            f"handing a {case.type} case to {to_role} needs: {', '.join(missing)}",
            case_id=case_id,
            to_role=to_role,
            missing=missing,
        )
    return await _act(
        session,
        case_id,
        ACTIVE,
        {"owner_role": to_role, "assignee": None, "status": "in_progress"},
        "handed_off",
        who,
        note,
        {"from_role": case.owner_role, "to_role": to_role, "evidence": evidence},
    )


async def resolve(
    session: AsyncSession,
    case_id: int,
    by: str,
    resolution: str,
    *,
    code: str | None = None,
    source_ip: str | None = None,
) -> ExceptionCase:
    """Resolve an active case, with a resolution code when the workbench gives one."""
    now = clock.now()
    case = await get_case(session, case_id)
    if not await repository.resolve(session, case_id, now, by, resolution):
        raise Conflict(f"exception case {case_id} is not open")
    await repository.change(
        session, case_id, ("resolved",), {"resolution_code": code, "updated_at": now}
    )
    await repository.add_logs(
        session, [_log(case_id, "resolved", Who(by, source_ip), now, resolution, {"code": code})]
    )
    await session.refresh(case)
    RESOLVE_SECONDS.labels(case.type).observe((now - clock.as_utc(case.created_at)).total_seconds())
    await _announce_closed(session, case, now)
    return case


async def _announce_closed(session: AsyncSession, case: ExceptionCase, now: datetime) -> None:
    """A case on an order that was resolved or cancelled publishes `ExceptionCaseClosed` in
    the same transaction (a blocking case's hold is lifted)."""
    if case.order_id is not None:
        await outbox.publish(
            session,
            "ExceptionCaseClosed",
            ExceptionCaseClosed(
                case_id=case.id,
                order_id=case.order_id,
                type=case.type,
                blocking=case.blocking,
                status=case.status,
                occurred_at=now,
            ),
            aggregate_type="exception_case",
            aggregate_id=str(case.id),
        )


async def reopen(session: AsyncSession, case_id: int, reason: str, who: Who) -> ExceptionCase:
    """Open a resolved, escalated or cancelled case again, with a fresh SLA clock."""
    case = await get_case(session, case_id)
    policy = await policy_of(session, case.type)
    now = clock.now()
    return await _act(
        session,
        case_id,
        ("resolved", "escalated", "cancelled"),
        {
            "status": "open",
            "resolved_at": None,
            "resolved_by": None,
            "resolution": None,
            "resolution_code": None,
            "due_at": now + timedelta(minutes=policy.sla_minutes),
            "warned_at": None,
            "breached_at": None,
            "escalated_at": None,
        },
        "reopened",
        who,
        reason,
    )


async def cancel(session: AsyncSession, case_id: int, reason: str, who: Who) -> ExceptionCase:
    """Cancel an active case (opened by mistake); a hold it was is lifted."""
    now = clock.now()
    case = await _act(
        session,
        case_id,
        ACTIVE,
        {"status": "cancelled", "resolved_at": now, "resolved_by": who.name},
        "cancelled",
        who,
        reason,
    )
    await _announce_closed(session, case, now)
    return case


async def log_event(
    session: AsyncSession, case_id: int, action: str, detail: dict[str, Any], who: Who
) -> None:
    """Append a log row that changes no state (a notification sent, a batch touched it)."""
    await repository.add_logs(session, [_log(case_id, action, who, clock.now(), None, detail)])


# --- SLA clocks ---------------------------------------------------------------------------------


async def due_for(
    session: AsyncSession,
    column: str,
    before: datetime,
    limit: int,
    types: list[str] | None = None,
) -> list[ExceptionCase]:
    """Active cases (of `types`, when given) due before `before` whose clock `column` has not
    fired yet."""
    return await repository.due_for(session, column, before, limit, types)


async def unannounced(session: AsyncSession, limit: int) -> list[ExceptionCase]:
    """Cases opened since the clock last looked."""
    return await repository.unannounced(session, limit)


async def fire_once(session: AsyncSession, case_id: int, column: str, at: datetime) -> bool:
    """Stamp a clock column once; True for the one caller that stamped it."""
    return await repository.stamp_once(session, case_id, column, at)


async def escalate(session: AsyncSession, case: ExceptionCase, to_role: str, at: datetime) -> bool:
    """Escalate an active case to a role once (the SLA job); False if it was not active."""
    done = await repository.change(
        session,
        case.id,
        ACTIVE,
        {"status": "escalated", "owner_role": to_role, "escalated_at": at, "updated_at": at},
    )
    if done:
        await repository.add_logs(
            session,
            [_log(case.id, "escalated", Who(SYSTEM), at, None, {"to_role": to_role})],
        )
    return done


async def breached(session: AsyncSession, now: datetime) -> tuple[int, list[int]]:
    """Active cases past their due time: how many, and the oldest few ids (doctor)."""
    return await repository.count_breached(session, now)


async def counts_by_type_state(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Active cases per (type, state) (the gauge)."""
    return await repository.counts_by_type_state(session)


async def counted(
    session: AsyncSession,
    type: str | None = None,
    side: str | None = None,
    status: str | None = None,
    owner_role: str | None = None,
) -> list[tuple[str, str, str, str, int]]:
    """Cases per (type, side, status, owner role) among those the values select, from the
    count ledger: a sum over a few hundred rows however many cases there are."""
    return await repository.counted(session, type, side, status, owner_role)


async def fold_case_counts(session: AsyncSession) -> int:
    """Fold the count ledger (the `case_counts_fold` job); returns the rows folded."""
    return await repository.fold_counts(session)


async def orders_with_open_cases(session: AsyncSession, order_ids: list[int]) -> set[int]:
    """Which of these orders have an open exception case (search's filter)."""
    return await repository.orders_with_open(session, order_ids)
