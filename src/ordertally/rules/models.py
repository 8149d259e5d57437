"""Tables of the rules domain: rules and their saved versions, the firing log, purchase plans
and their audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime


class Rule(Base):
    """The current version of a rule; earlier versions are kept in rule_version."""

    __tablename__ = "rule"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(32))
    condition: Mapped[str] = mapped_column(Text)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    enabled: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RuleVersion(Base):
    """Every saved version of a rule, as it was saved (who, when, what)."""

    __tablename__ = "rule_version"

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("rule.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(32))
    condition: Mapped[str] = mapped_column(Text)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    enabled: Mapped[bool] = mapped_column(Boolean)
    saved_by: Mapped[str] = mapped_column(String(100))
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RuleHit(Base):
    """One firing of a rule: the facts it saw and what its actions did. (rule, dedupe key) is
    unique, so an event delivered twice, or a schedule tick run twice, fires once."""

    __tablename__ = "rule_hit"
    __table_args__ = (
        UniqueConstraint("rule_id", "dedupe_key"),
        Index("ix_rule_hit_rule_fired", "rule_id", "fired_at"),
        Index("ix_rule_hit_order", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rule.id", ondelete="CASCADE"))
    rule_version: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(120))  # order no., sku@warehouse, channel
    order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    outcomes: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    fired_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PurchasePlan(Base):
    """An expected receipt: so many units of a SKU due at a warehouse on a date."""

    __tablename__ = "purchase_plan"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        UniqueConstraint("sku", "warehouse_code", "expected_date", "reference"),
        Index("ix_purchase_plan_sku_date", "sku", "expected_date"),
        # The back office lists plans by date in keyset pages of (expected_date, id).
        Index("ix_purchase_plan_date_id", "expected_date", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(64))
    warehouse_code: Mapped[str] = mapped_column(String(32))
    expected_date: Mapped[date] = mapped_column(Date)
    quantity: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(64))  # the purchase order no., "" if none
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


PLAN_ACTIONS = ("added", "imported", "deleted")


class PurchasePlanEvent(Base):
    """The audit trail of purchase plans: who added, imported or deleted which plan, and when
    (the plan's values are copied: a deleted plan's row is gone)."""

    __tablename__ = "purchase_plan_event"
    __table_args__ = (
        CheckConstraint("action IN ('added', 'imported', 'deleted')", name="action_known"),
        Index("ix_purchase_plan_event_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    plan_id: Mapped[int] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(16))
    sku: Mapped[str] = mapped_column(String(64))
    warehouse_code: Mapped[str] = mapped_column(String(32))
    expected_date: Mapped[date] = mapped_column(Date)
    quantity: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
