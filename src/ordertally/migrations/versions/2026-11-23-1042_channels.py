"""channels

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 10:42:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_account",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("shop_id", sa.String(length=100), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("credentials_enc", sa.Text(), nullable=True),
        sa.Column("sync_interval_seconds", sa.Integer(), nullable=False),
        sa.Column("overlap_seconds", sa.Integer(), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.Column("rate_limit_per_second", sa.Float(), nullable=False),
        sa.Column("rate_limit_burst", sa.Integer(), nullable=False),
        sa.Column("empty_streak_threshold", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "platform IN ('shopify', 'amazon', 'pinduoduo', 'douyin', 'jd', 'taobao', 'file')",
            name=op.f("ck_channel_account_platform_known"),
        ),
        sa.CheckConstraint(
            "overlap_seconds >= 0", name=op.f("ck_channel_account_overlap_non_negative")
        ),
        sa.CheckConstraint("page_size > 0", name=op.f("ck_channel_account_page_size_positive")),
        sa.CheckConstraint(
            "sync_interval_seconds > 0", name=op.f("ck_channel_account_interval_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_account")),
        sa.UniqueConstraint("code", name=op.f("uq_channel_account_code")),
    )
    op.create_table(
        "channel_sku_mapping",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("account_code", sa.String(length=32), nullable=False),
        sa.Column("platform_sku", sa.String(length=128), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_sku_mapping")),
        sa.UniqueConstraint(
            "platform",
            "account_code",
            "platform_sku",
            name=op.f("uq_channel_sku_mapping_platform_account_code_platform_sku"),
        ),
    )
    op.create_table(
        "channel_order_link",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column(
            "platform_updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("raw_status", sa.String(length=32), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("first_via", sa.String(length=16), nullable=False),
        sa.Column("last_via", sa.String(length=16), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["channel_account.id"],
            name=op.f("fk_channel_order_link_account_id_channel_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_channel_order_link_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_order_link")),
        sa.UniqueConstraint(
            "account_id", "external_id", name=op.f("uq_channel_order_link_account_id_external_id")
        ),
    )
    with op.batch_alter_table("channel_order_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channel_order_link_order_id"), ["order_id"], unique=False
        )

    op.create_table(
        "channel_sync_state",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("cursor_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_order_seen_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("empty_streak", sa.Integer(), nullable=False),
        sa.Column(
            "orders_seen", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("lag_seconds", sa.Float(), nullable=True),
        sa.Column("backoff_until", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["channel_account.id"],
            name=op.f("fk_channel_sync_state_account_id_channel_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_channel_sync_state")),
    )
    op.create_table(
        "channel_webhook",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("webhook_id", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["channel_account.id"],
            name=op.f("fk_channel_webhook_account_id_channel_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_webhook")),
        sa.UniqueConstraint(
            "account_id", "webhook_id", name=op.f("uq_channel_webhook_account_id_webhook_id")
        ),
    )
    with op.batch_alter_table("channel_webhook", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channel_webhook_status_received_at"),
            ["status", "received_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("channel_webhook", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_webhook_status_received_at"))

    op.drop_table("channel_webhook")
    op.drop_table("channel_sync_state")
    with op.batch_alter_table("channel_order_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_order_link_order_id"))

    op.drop_table("channel_order_link")
    op.drop_table("channel_sku_mapping")
    op.drop_table("channel_account")
