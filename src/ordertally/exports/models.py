"""The export audit (one row per export: who, what, progress, manifest) and saved templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

EXPORT_STATES = ("queued", "running", "done", "failed", "expired")
EXPORT_FORMATS = ("csv", "xlsx")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class ExportAudit(Base):
    """One export: its request, who asked from where, its progress and its manifest."""

    __tablename__ = "export_audit"
    __table_args__ = (
        CheckConstraint(_in("state", EXPORT_STATES), name="state_known"),
        CheckConstraint(_in("format", EXPORT_FORMATS), name="format_known"),
        Index("ix_export_audit_state_created_at", "state", "created_at"),
        Index("ix_export_audit_state_expires_at", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    export_no: Mapped[str] = mapped_column(String(40), unique=True)
    template: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    columns: Mapped[list[str]] = mapped_column(JsonDoc)
    filters: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    timezone: Mapped[str] = mapped_column(String(64))
    # Personal data in clear: only for roles that may see it, and then this row is the log of
    # that access (with its reason).
    pii_unmasked: Mapped[bool] = mapped_column(Boolean)
    pii_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    actor_id: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    rows_total: Mapped[int | None] = mapped_column(BigId, nullable=True)
    rows_done: Mapped[int] = mapped_column(BigId)
    snapshot_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The manifest: row count, sums per currency, the body's and the file's SHA-256.
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    file_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ExportTemplate(Base):
    """A saved custom template: a built-in template's source with a chosen list of columns."""

    __tablename__ = "export_template"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    base: Mapped[str] = mapped_column(String(64))
    columns: Mapped[list[str]] = mapped_column(JsonDoc)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
