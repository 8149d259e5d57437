"""Tables of the channels domain: accounts, sync state, order links, SKU mappings, webhooks,
and order files uploaded from the back office or over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime

PLATFORMS: tuple[str, ...] = ("shopify", "amazon", "pinduoduo", "douyin", "jd", "taobao", "file")
_PLATFORM_LIST = ", ".join(f"'{p}'" for p in PLATFORMS)


class ChannelAccount(Base):
    """One shop on one platform, with its (encrypted) credentials and sync settings."""

    __tablename__ = "channel_account"
    __table_args__ = (
        CheckConstraint(f"platform IN ({_PLATFORM_LIST})", name="platform_known"),
        CheckConstraint("sync_interval_seconds > 0", name="interval_positive"),
        CheckConstraint("overlap_seconds >= 0", name="overlap_non_negative"),
        CheckConstraint("page_size > 0", name="page_size_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    shop_id: Mapped[str] = mapped_column(String(100))
    # Non-secret platform settings: base_url, marketplace_id, client_id, region...
    config: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    # Secrets (webhook_secret, refresh_token, client_secret...) as one encrypted JSON document.
    credentials_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    sync_interval_seconds: Mapped[int] = mapped_column(Integer)
    overlap_seconds: Mapped[int] = mapped_column(Integer)
    page_size: Mapped[int] = mapped_column(Integer)
    rate_limit_per_second: Mapped[float] = mapped_column(Float)
    rate_limit_burst: Mapped[int] = mapped_column(Integer)
    empty_streak_threshold: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChannelSyncState(Base):
    """Where the pull of one account stands. The cursor only moves after a page is stored."""

    __tablename__ = "channel_sync_state"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("channel_account.id", ondelete="CASCADE"), primary_key=True
    )
    cursor_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_order_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_count: Mapped[int] = mapped_column(Integer)
    empty_streak: Mapped[int] = mapped_column(Integer)
    orders_seen: Mapped[int] = mapped_column(BigId)  # orders read over the account's life
    lag_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    backoff_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChannelOrderLink(Base):
    """(account, external order id) -> our order: the idempotent upsert key of every path."""

    __tablename__ = "channel_order_link"
    __table_args__ = (
        UniqueConstraint("account_id", "external_id"),
        Index("ix_channel_order_link_order_id", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"))
    order_no: Mapped[str] = mapped_column(String(32))
    platform_updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    raw_status: Mapped[str] = mapped_column(String(32))
    address_hash: Mapped[str] = mapped_column(String(64))
    first_via: Mapped[str] = mapped_column(String(16))
    last_via: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChannelSkuMapping(Base):
    """A platform SKU -> our SKU, for one account or ("" account) every account of a platform."""

    __tablename__ = "channel_sku_mapping"
    __table_args__ = (UniqueConstraint("platform", "account_code", "platform_sku"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))
    account_code: Mapped[str] = mapped_column(String(32))  # "" = every account of the platform
    platform_sku: Mapped[str] = mapped_column(String(128))
    sku: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChannelWebhook(Base):
    """A received webhook, stored before it is acknowledged (inbox) and deduped by its id."""

    __tablename__ = "channel_webhook"
    __table_args__ = (
        UniqueConstraint("account_id", "webhook_id"),
        Index("ix_channel_webhook_status_received_at", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_account.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(128))
    topic: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | applied | failed
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The open `order_not_created` case of a webhook that could not be applied (replayable).
    held_case_id: Mapped[int | None] = mapped_column(BigId, nullable=True)


FILE_IMPORT_STATES = ("queued", "running", "done", "failed")


class FileImport(Base):
    """A platform order file uploaded (back office or API): kept until the worker has imported
    it (so an accepted upload survives a restart; emptied once imported), with its progress,
    its outcome counts and the rejected rows' report (CSV with reasons)."""

    __tablename__ = "channel_file_import"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in FILE_IMPORT_STATES) + ")",
            name="state_known",
        ),
        Index("ix_channel_file_import_state", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(32))
    template: Mapped[str | None] = mapped_column(String(16), nullable=True)
    filename: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    state: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    total_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    rejected_rows: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Written with each progress report: a running import whose worker went quiet runs again.
    beat_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
