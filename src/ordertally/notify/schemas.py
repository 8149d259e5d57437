"""Request and response shapes of the notify API; unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ordertally.core.inputs import Line

Status = Literal["pending", "sent", "failed", "dead"]


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A target key as the send log names it: "ops:<name>", "<scheme>:<hash>" or "sms:aliyun".
    target: Annotated[str, Field(min_length=1, max_length=80)]
    lang: Literal["zh", "en"] | None = None
    # Only for an SMS target: where the test message goes (never stored in clear).
    phone: Annotated[Line | None, Field(max_length=32)] = None


class NotificationOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    order_no: str | None
    target_kind: str
    target_key: str
    recipient: str | None
    lang: str
    title: str
    body: str
    sms: dict[str, object] | None
    status: str
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    provider_message_id: str | None
    created_at: str
    sent_at: str | None


class NotificationsOut(BaseModel):
    notifications: list[NotificationOut]
    next_before_id: int | None
