"""HTTP routes of the notify domain: the send log, requeueing a dead message, a test send."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.http import database, json_response
from ordertally.notify import service
from ordertally.notify.models import Notification
from ordertally.notify.schemas import NotificationOut, NotificationsOut, Status, TestIn

router = APIRouter(prefix="/api/v1", tags=["notify"])


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def notification_doc(n: Notification) -> dict[str, Any]:
    """A send log row's JSON (the recipient only ever masked)."""
    return {
        "id": n.id,
        "event_id": n.event_id,
        "event_type": n.event_type,
        "order_no": n.order_no,
        "target_kind": n.target_kind,
        "target_key": n.target_key,
        "recipient": n.recipient_masked,
        "lang": n.lang,
        "title": n.title,
        "body": n.body,
        "sms": n.sms,
        "status": n.status,
        "attempts": n.attempts,
        "next_attempt_at": _iso(n.next_attempt_at),
        "last_error": n.last_error,
        "provider_message_id": n.provider_message_id,
        "created_at": _iso(n.created_at),
        "sent_at": _iso(n.sent_at),
    }


@router.get(
    "/notifications",
    response_model=NotificationsOut,
    summary="The notification send log, newest first",
)
async def list_notifications(
    request: Request,
    _: Annotated[Principal, Depends(require("notify.read"))],
    order_no: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Filter by order and status; page with `before_id` = the last id of the previous page."""
    async with database(request).transaction(write=False) as session:
        rows = await service.list_notifications(
            session, order_no=order_no, status=status, limit=limit, before_id=before_id
        )
    return json_response(
        {
            "notifications": [notification_doc(n) for n in rows],
            "next_before_id": rows[-1].id if len(rows) == limit else None,
        }
    )


@router.post(
    "/notifications/{notification_id}/retry",
    response_model=NotificationOut,
    summary="Requeue a dead notification (fresh attempts, due now)",
)
async def retry_notification(
    request: Request,
    notification_id: int,
    _: Annotated[Principal, Depends(require("notify.manage"))],
) -> Response:
    """Only a dead message can be requeued; a sent one is never sent again."""
    async with database(request).transaction() as session:
        row = await service.requeue(session, notification_id)
    return json_response(notification_doc(row))


@router.post(
    "/notifications/test",
    status_code=201,
    response_model=NotificationOut,
    summary="Send a test message to one configured target now",
)
async def test_notification(
    request: Request,
    body: TestIn,
    _: Annotated[Principal, Depends(require("notify.manage"))],
) -> Response:
    """Sent at once and logged with its outcome (`sent` or `dead` with the error)."""
    row = await service.send_test(database(request), body.target, lang=body.lang, phone=body.phone)
    return json_response(notification_doc(row), 201)
