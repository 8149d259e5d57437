"""Exception cases: what needs a person's attention, attached to an order. A blocking case is
a hold: it stops the order's fulfilment transitions until it is resolved. Each case has a
category side (customer / system / supply chain), a type from `registry.py`, an owner role, an
SLA due time from its type's policy, and a log of everything done to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

# open -> in_progress -> resolved | escalated | cancelled; escalated and resolved cases reopen.
STATES = ("open", "in_progress", "resolved", "escalated", "cancelled")
# States in which a case still needs work (and a blocking one still holds its order).
ACTIVE = ("open", "in_progress", "escalated")
SIDES = ("customer", "system", "supply_chain")
SEVERITIES = ("low", "normal", "high", "critical")


class ExceptionCase(Base):
    __tablename__ = "exception_case"
    __table_args__ = (
        CheckConstraint(
            "status IN ('open', 'in_progress', 'resolved', 'escalated', 'cancelled')",
            name="status_known",
        ),
        CheckConstraint("side IN ('customer', 'system', 'supply_chain')", name="side_known"),
        Index("ix_exception_case_order_status", "order_id", "status"),
        Index("ix_exception_case_status_type", "status", "type"),
        # Breached / due-soon filters, with the facet columns carried so PostgreSQL counts the
        # matching cases from the index alone.
        Index(
            "ix_exception_case_status_due",
            "status",
            "due_at",
            postgresql_include=["owner_role", "type", "side"],
        ),
        Index("ix_exception_case_created_id", "created_at", "id"),
        Index("ix_exception_case_announced", "announced_at", "id"),
        # The workbench's facet counts, read from the index alone on PostgreSQL.
        Index("ix_exception_case_facets", "status", "type", "side", "owner_role"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("sales_order.id", ondelete="CASCADE"), nullable=True
    )
    # The producer's area (payment, channel, inventory...), as its caller names it.
    category: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    blocking: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The category (客户侧 / 系统侧 / 供应链), from the type's registry entry.
    side: Mapped[str] = mapped_column(String(16), default="system", server_default="system")
    severity: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    owner_role: Mapped[str] = mapped_column(String(20), default="ops", server_default="ops")
    assignee: Mapped[str | None] = mapped_column(String(100), nullable=True, default=None)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)
    # When the clock looked at the new case (and told its channels, if its policy says so).
    announced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)
    warned_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)
    breached_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)
    resolution_code: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, default=None)


class ExceptionLog(Base):
    """One row per thing done to a case: opened, assigned, commented, handed off, notified,
    escalated, resolved, reopened, cancelled, an attachment referenced. Never updated."""

    __tablename__ = "exception_log"
    __table_args__ = (Index("ix_exception_log_case_id", "case_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("exception_case.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class CasePolicy(Base):
    """A type's policy as data, editable through the API: SLA, owner, the evidence each
    hand-off needs, escalation and who is told. Types without a row use the registry's."""

    __tablename__ = "case_policy"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    sla_minutes: Mapped[int] = mapped_column(Integer)
    warn_minutes: Mapped[int] = mapped_column(Integer)
    owner_role: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(8))
    # role handed to -> evidence keys the hand-off must carry (finance: refund_approval).
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    escalate_to: Mapped[str | None] = mapped_column(String(20), nullable=True)
    escalate_after_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where a notification goes: "ops" (WeCom / DingTalk / email targets), "sms" (the buyer).
    notify_on_open: Mapped[bool] = mapped_column(Boolean)
    channels: Mapped[list[str]] = mapped_column(JsonDoc)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(100))


class CaseCountDelta(Base):
    """The workbench's facet counts as a ledger: database triggers on `exception_case` append
    +1/-1 per (type, side, status, owner_role) whenever a case is inserted, changes one of those
    columns or is deleted, and the `case_counts_compact` job folds the rows into one per
    combination. Counting every case is then a sum over a few hundred rows instead of a scan of
    every case (ADR 0033, addendum "Facet counts"). Appends never update a shared row, so
    concurrent case writers never wait on each other here."""

    __tablename__ = "case_count_delta"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    owner_role: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(Integer)
