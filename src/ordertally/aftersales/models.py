"""After-sales tables: cases and their lines, the case audit trail, each order's refund
ledger row, refunds, returned parcels (matched to a case or not yet: 无主件), and the inbox of
platform after-sale records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.aftersales.state_machine import (
    CASE_STATUSES,
    CASE_TYPES,
    GOODS_STATUSES,
    RESPONSIBILITIES,
)
from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

REFUND_STATES = ("pending", "sent", "succeeded", "failed")
REFUND_SOURCES = ("provider", "platform")
# pending: stored, not applied yet; applied: a case (or a duplicate of one); unknown_order: no
# order of ours; refused: the case could not be opened (outcome says why).
RECORD_STATUSES = ("pending", "applied", "unknown_order", "refused")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AftersaleCase(Base):
    """One 售后单: what the buyer asked for, about which order, and where it stands."""

    __tablename__ = "aftersale_case"
    __table_args__ = (
        UniqueConstraint("channel", "platform_refund_id"),
        CheckConstraint(_in("type", CASE_TYPES), name="type_known"),
        CheckConstraint(_in("status", CASE_STATUSES), name="status_known"),
        CheckConstraint(_in("goods_status", GOODS_STATUSES), name="goods_status_known"),
        CheckConstraint(
            f"responsibility IS NULL OR {_in('responsibility', RESPONSIBILITIES)}",
            name="responsibility_known",
        ),
        CheckConstraint(
            "refund_goods_minor >= 0 AND refund_postage_minor >= 0 AND refund_other_minor >= 0",
            name="amounts_non_negative",
        ),
        Index("ix_aftersale_case_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(String(32), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), index=True)
    order_no: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    # The platform's refund / after-sale id (dedupe of platform records); None for our own.
    platform_refund_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    reason_code: Mapped[str] = mapped_column(String(32))
    responsibility: Mapped[str | None] = mapped_column(String(16), nullable=True)
    goods_status: Mapped[str] = mapped_column(String(24))
    # References only: photo ids/URLs, buyer message ids (never the files themselves).
    evidence: Mapped[list[str]] = mapped_column(JsonDoc)
    # The buyer's words, sealed with the PII key (`service.seal_message`); rows written before
    # migration 0033 may hold them in clear (read as they are).
    buyer_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    refund_goods_minor: Mapped[int] = mapped_column(BigId)
    refund_postage_minor: Mapped[int] = mapped_column(BigId)
    refund_other_minor: Mapped[int] = mapped_column(BigId)
    return_carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    return_waybill_no: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    @property
    def refund_minor(self) -> int:
        """What the case refunds in all (goods + postage + other)."""
        return self.refund_goods_minor + self.refund_postage_minor + self.refund_other_minor


class AftersaleLine(Base):
    """One order line of a case, with its quantities as the goods come back."""

    __tablename__ = "aftersale_line"
    __table_args__ = (
        UniqueConstraint("case_id", "line_no"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "restocked_quantity + written_off_quantity <= received_quantity"
            " AND received_quantity <= quantity",
            name="quantities_add_up",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("aftersale_case.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    received_quantity: Mapped[int] = mapped_column(Integer, default=0)
    restocked_quantity: Mapped[int] = mapped_column(Integer, default=0)
    written_off_quantity: Mapped[int] = mapped_column(Integer, default=0)


class AftersaleEvent(Base):
    """The audit trail of a case: one row per change, never updated or deleted."""

    __tablename__ = "aftersale_event"
    __table_args__ = (UniqueConstraint("case_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("aftersale_case.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AftersaleMoney(Base):
    """An order's refund ledger row, the one row every refund of the order is counted against
    (locked by a conditional update, so concurrent refunds never exceed what was paid)."""

    __tablename__ = "aftersale_money"
    __table_args__ = (
        CheckConstraint("committed_minor <= paid_minor", name="committed_within_paid"),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= committed_minor", name="refunded_committed"
        ),
    )

    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    paid_minor: Mapped[int] = mapped_column(BigId)
    # Refunds requested and not failed (pending, sent, succeeded), and those confirmed.
    committed_minor: Mapped[int] = mapped_column(BigId)
    refunded_minor: Mapped[int] = mapped_column(BigId)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AftersaleRefund(Base):
    """One refund: sent to the payment provider (claim → call → record, confirmed by
    notification or query) or recorded from the platform that made it."""

    __tablename__ = "aftersale_refund"
    __table_args__ = (
        CheckConstraint(_in("state", REFUND_STATES), name="state_known"),
        CheckConstraint(_in("source", REFUND_SOURCES), name="source_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        Index("ix_aftersale_refund_state_next_at", "state", "next_at"),
        Index("ix_aftersale_refund_confirmed_at", "confirmed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("aftersale_case.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), index=True)
    order_no: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))  # wechatpay, alipay, or the channel
    out_trade_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    paid_total_minor: Mapped[int] = mapped_column(BigId)  # the payment refunded (WeChat asks)
    # Our refund number: the provider's idempotency key, the same on every attempt.
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    provider_refund_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    amount_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the job looks at it next (send, or ask); a claim moves it past the lease.
    next_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ReturnParcel(Base):
    """A parcel that came back to a warehouse: matched to a case, or not yet (无主件)."""

    __tablename__ = "return_receipt"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    warehouse_code: Mapped[str] = mapped_column(String(32))
    carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    waybill_no: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("aftersale_case.id"), nullable=True, index=True
    )
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_by: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    matched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AftersalePlatformRecord(Base):
    """The after-sales inbox: a platform's after-sale record (a Pinduoduo refund list item) as
    the platform sent it, sealed at rest (ADR 0006, ADR 0030), stored before it is applied
    and emptied once applied and past the inbox retention period."""

    __tablename__ = "aftersale_platform_record"
    __table_args__ = (
        UniqueConstraint("channel", "platform_refund_id"),
        CheckConstraint(_in("status", RECORD_STATUSES), name="status_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    platform_refund_id: Mapped[str] = mapped_column(String(64))
    # "aesgcm:" + the sealed JSON item, bound to this table and (channel, platform refund id);
    # "" once purged.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(300), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)


class AftersalePullState(Base):
    """Where the pull of one channel account's after-sale records stands (Pinduoduo's
    pdd.refund.list.increment.get): the cursor over the platform's update time moves only
    after every page of a window is stored, like the order pull's."""

    __tablename__ = "aftersale_pull_state"

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_count: Mapped[int] = mapped_column(Integer)
    backoff_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    records_seen: Mapped[int] = mapped_column(BigId)  # items read over the account's life
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
