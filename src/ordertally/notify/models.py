"""Tables of the notify domain: the send log, one row per (event, target)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

# pending: waiting for its first attempt; sent: the channel accepted it; failed: the last
# attempt failed and another is scheduled at next_attempt_at; dead: given up (max attempts, or an
# error no retry can fix) until an operator requeues it.
STATUSES = ("pending", "sent", "failed", "dead")
TARGET_KINDS = ("wecombot", "dingtalk", "email", "json", "apprise", "sms")
LANGS = ("zh", "en")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Notification(Base):
    """One message for one target about one event: what was rendered and what became of it.

    (event_id, target_key) is unique, so an event dispatched twice plans its messages once.
    Secrets never land here: an Apprise target is named by its configured name or a hash of its
    URL, and a buyer's phone only appears masked (it is decrypted from the order at send time).
    """

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("event_id", "target_key"),
        CheckConstraint(_in("status", STATUSES), name="status_known"),
        CheckConstraint(_in("target_kind", TARGET_KINDS), name="target_kind_known"),
        CheckConstraint(_in("lang", LANGS), name="lang_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_notification_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notification_order_no_created_at", "order_no", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    order_no: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    target_key: Mapped[str] = mapped_column(String(80))
    recipient_masked: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lang: Mapped[str] = mapped_column(String(2))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    # SMS: {"template_code": ..., "template_param": {...}}; ops channels: null.
    sms: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
