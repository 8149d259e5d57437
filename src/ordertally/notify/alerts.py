"""Alerts that are not about one outbox event (a rule's firing): one message to one named
operations target, planned in the caller's transaction and sent by the usual send job."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import Settings, get_settings
from ordertally.notify import repository, targets
from ordertally.notify.errors import TargetNotFound
from ordertally.notify.metrics import PLANNED

ALERT_EVENT = "RuleFired"


def target_keys(settings: Settings | None = None) -> list[str]:
    """The keys of the configured operations targets (`ops:<name>` for a named one)."""
    return [t.key for t in targets.ops_targets(settings or get_settings())]


async def plan_alert(
    session: AsyncSession,
    *,
    alert_id: str,
    target_key: str,
    title: str,
    body: str,
    order_no: str | None = None,
    settings: Settings | None = None,
) -> bool:
    """Plan one message to the operations target `target_key` (`alert_id`, at most 36
    characters, makes a repeat a no-op); True when planned now, TargetNotFound when no such
    target is configured."""
    settings = settings or get_settings()
    found = {t.key: t for t in targets.ops_targets(settings)}.get(target_key)
    if found is None:
        raise TargetNotFound(f"no operations target {target_key!r} is configured")
    now = clock.now()
    added = await repository.add_planned(
        session,
        [
            {
                "event_id": alert_id,
                "event_type": ALERT_EVENT,
                "order_no": order_no,
                "target_kind": found.kind,
                "target_key": found.key,
                "recipient_masked": None,
                "lang": found.lang,
                "sms": None,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": None,
                "provider_message_id": None,
                "created_at": now,
                "sent_at": None,
                "title": title[:200],
                "body": body,
            }
        ],
    )
    if added:
        PLANNED.labels(ALERT_EVENT, found.kind).inc()
    return added > 0
