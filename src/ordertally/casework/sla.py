"""The SLA clock: notify on open (per the type's policy), warn before the due time, mark the
breach at it and escalate after the policy's time, each exactly once per case: a clock column
is stamped by a conditional update and the message is planned in that same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.casework import cards, repository
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.exceptions.service import Who
from ordertally.notify import service as notify_service

BREACHES = Counter("ordertally_case_sla_breaches_total", "Exception cases past their SLA", ["type"])
BATCH = 200
# The longest warning lead any policy may set; candidates are read this far ahead.
MAX_WARN = timedelta(days=2)


async def tick(db: Database, now: datetime, base_url: str = "") -> dict[str, Any]:
    """One pass of the clock over every active case that has something due."""
    out = {"opened": 0, "warned": 0, "breached": 0, "escalated": 0}
    async with db.transaction() as session:
        for case in await exceptions_service.unannounced(session, BATCH):
            if await exceptions_service.fire_once(session, case.id, "announced_at", now):
                out["opened"] += int(await notify_open(session, case, now, base_url))
        for case in await exceptions_service.due_for(session, "warned_at", now + MAX_WARN, BATCH):
            policy = await exceptions_service.policy_of(session, case.type)
            if case.due_at is None or case.due_at - timedelta(minutes=policy.warn_minutes) > now:
                continue
            if await exceptions_service.fire_once(session, case.id, "warned_at", now):
                await _notify(session, case, "CaseSlaWarning", now, base_url, policy.channels)
                out["warned"] += 1
        for case in await exceptions_service.due_for(session, "breached_at", now, BATCH):
            if await exceptions_service.fire_once(session, case.id, "breached_at", now):
                BREACHES.labels(case.type).inc()
                policy = await exceptions_service.policy_of(session, case.type)
                await _notify(session, case, "CaseSlaBreached", now, base_url, policy.channels)
                out["breached"] += 1
        # Only types that escalate: the others' cases would fill every batch forever.
        escalating = [
            p.type
            for p in await exceptions_service.list_policies(session)
            if p.escalate_to and p.escalate_after_minutes
        ]
        late = await exceptions_service.due_for(session, "escalated_at", now, BATCH, escalating)
        for case in late:
            policy = await exceptions_service.policy_of(session, case.type)
            if policy.escalate_to is None or policy.escalate_after_minutes is None:
                continue
            at = clock.as_utc(case.created_at) + timedelta(minutes=policy.escalate_after_minutes)
            if at > now:
                continue
            if await exceptions_service.escalate(session, case, policy.escalate_to, now):
                await _notify(session, case, "CaseEscalated", now, base_url, policy.channels)
                out["escalated"] += 1
    return out


async def notify_open(
    session: AsyncSession, case: ExceptionCase, now: datetime, base_url: str = ""
) -> bool:
    """Tell the type's channels about a new case when its policy says so (once per case)."""
    policy = await exceptions_service.policy_of(session, case.type)
    if not policy.notify_on_open:
        return False
    await _notify(session, case, "CaseOpened", now, base_url, policy.channels)
    return True


async def _notify(
    session: AsyncSession,
    case: ExceptionCase,
    event_type: str,
    now: datetime,
    base_url: str,
    channels: tuple[str, ...],
) -> None:
    nos = await repository.order_nos(session, [case.order_id] if case.order_id else [])
    order_no = nos.get(case.order_id) if case.order_id else None
    card = cards.render(case, event_type, order_no, now, base_url)
    added = await notify_service.plan_case_notice(
        session,
        key=f"case:{case.id}:{event_type}",
        event_type=event_type,
        order_no=order_no,
        title=card.title,
        body=card.markdown,
        card=card.facts,
        sms="sms" in channels and event_type == "CaseOpened",
    )
    if added:
        await exceptions_service.log_event(
            session, case.id, "notified", {"event": event_type, "messages": added}, Who("system")
        )
