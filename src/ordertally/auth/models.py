"""API keys: stored as a SHA-256 of a high-entropy secret, shown once; and the auth revision."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

ROLES = ("admin", "ops", "cs", "finance", "warehouse")


class ApiKey(Base):
    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role_known"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Warehouse codes the key is limited to; NULL = not scoped.
    warehouses: Mapped[list[str] | None] = mapped_column(JsonDoc, nullable=True)


class AuthRevision(Base):
    """One row whose counter moves whenever a key is revoked: every process's key cache is
    valid only for the revision it was filled at."""

    __tablename__ = "auth_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
