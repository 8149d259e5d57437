"""Payment attempts, the notification inbox, refunds, manual recoveries, nonces and
reconciliation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime
from ordertally.payments.state_machine import MANUAL_STATES, PAYMENT_STATES

PROVIDERS = ("wechatpay", "alipay")
SOURCES = ("callback", "query", "statement")
# What applying a stored notification ended in ("pending" until a worker applied it).
OUTCOMES = (
    "pending",
    "paid",
    "duplicate",
    "amount_mismatch",
    "double_payment",
    "paid_after_close",
    "unknown_trade",
    "not_paid",
    "refund_recorded",
    "refund_full",
    "refund_exceeds_paid",
    "ignored",
    "rejected",
)
REFUND_STATES = ("success", "abnormal", "closed")
# Refund numbers after-sales sends carry this prefix; a full refund after shipment under one of
# them is the after-sales case's to account for, not an exception case of payments.
AFTERSALES_REFUND_PREFIX = "ASR"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Payment(Base):
    """One attempt to collect an order's total through one provider (one out_trade_no)."""

    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("provider", "provider_txn_id"),
        CheckConstraint(_in("provider", PROVIDERS), name="provider_known"),
        CheckConstraint(_in("state", PAYMENT_STATES), name="state_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("refunded_minor >= 0", name="refunded_non_negative"),
        CheckConstraint(
            "refunded_minor <= COALESCE(paid_amount_minor, 0)", name="refund_within_paid"
        ),
        Index("ix_payment_state_next_query_at", "state", "next_query_at"),
        Index("ix_payment_provider_paid_at", "provider", "paid_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), index=True)
    order_no: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(16))
    out_trade_no: Mapped[str] = mapped_column(String(64), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    provider_txn_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    paid_amount_minor: Mapped[int | None] = mapped_column(BigId, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # True for the attempt whose payment moved the order to paid.
    settles_order: Mapped[bool] = mapped_column(Boolean)
    refunded_minor: Mapped[int] = mapped_column(BigId)
    provider_params: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    # The order's payment deadline when the attempt opened: queries back off until then.
    deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    next_query_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    query_count: Mapped[int] = mapped_column(Integer)
    last_query_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_query_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PaymentNotification(Base):
    """The inbox: every verified message from a provider, raw, stored before it is answered.

    Callbacks, active-query answers and statement rows all land here and are applied by the
    same code; (provider, dedupe_key) makes a platform's resend a no-op.
    """

    __tablename__ = "payment_notification"
    __table_args__ = (
        UniqueConstraint("provider", "dedupe_key"),
        CheckConstraint(_in("provider", PROVIDERS), name="provider_known"),
        CheckConstraint(_in("source", SOURCES), name="source_known"),
        CheckConstraint(_in("verification", ("verified", "rejected")), name="verification_known"),
        CheckConstraint(_in("outcome", OUTCOMES), name="outcome_known"),
        Index("ix_payment_notification_outcome_received_at", "outcome", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str] = mapped_column(String(160))
    event_type: Mapped[str] = mapped_column(String(40))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    provider_txn_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    headers: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    body: Mapped[str] = mapped_column(Text)
    # The verified facts in our terms: amounts in minor units, times in UTC, refund fields.
    facts: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    verification: Mapped[str] = mapped_column(String(16))
    rejection_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(24))
    payment_id: Mapped[int | None] = mapped_column(BigId, nullable=True)


class PaymentRefund(Base):
    """Money returned to the buyer, as the provider reported it."""

    __tablename__ = "payment_refund"
    __table_args__ = (
        UniqueConstraint("provider", "out_refund_no"),
        CheckConstraint(_in("status", REFUND_STATES), name="status_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payment.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    out_refund_no: Mapped[str] = mapped_column(String(64))
    refund_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    amount_minor: Mapped[int] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16))
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    notification_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ManualPayment(Base):
    """补单: a payment finance vouches for, effective only once a second person approves it."""

    __tablename__ = "manual_payment"
    __table_args__ = (
        CheckConstraint(_in("state", MANUAL_STATES), name="state_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("decided_by IS NULL OR decided_by <> requested_by", name="two_people"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), index=True)
    order_no: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str] = mapped_column(String(128))
    paid_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decision_note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    query_outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)


class PaymentNonce(Base):
    """Nonces of signed notifications seen within the replay window."""

    __tablename__ = "payment_nonce"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class PaymentReconciliation(Base):
    """One statement checked against the database, with its counts per category."""

    __tablename__ = "payment_reconciliation"
    __table_args__ = (CheckConstraint(_in("provider", PROVIDERS), name="provider_known"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64))
    window_from: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    window_to: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rows: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    run_by: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
