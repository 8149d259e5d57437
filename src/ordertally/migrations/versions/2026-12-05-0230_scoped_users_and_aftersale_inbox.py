"""auth + aftersales: users scoped to warehouses and channels; the after-sales record inbox
(issue 14)

Back-office users get the same scope columns as API keys (0018), and platform after-sale
records (Pinduoduo refund list items) get an inbox whose bodies are sealed at rest and emptied
after the retention period once applied.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.add_column(sa.Column("warehouses", _json(), nullable=True))
        batch.add_column(sa.Column("channels", _json(), nullable=True))
    op.create_table(
        "aftersale_platform_record",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("platform_refund_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=300), nullable=True),
        sa.Column("received_at", ordertally.core.db.UtcDateTime(), nullable=False),
        sa.Column("applied_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'applied', 'unknown_order', 'refused')",
            name=op.f("ck_aftersale_platform_record_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aftersale_platform_record")),
        sa.UniqueConstraint(
            "channel",
            "platform_refund_id",
            name=op.f("uq_aftersale_platform_record_channel_platform_refund_id"),
        ),
    )
    op.create_index(
        op.f("ix_aftersale_platform_record_applied_at"),
        "aftersale_platform_record",
        ["applied_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_aftersale_platform_record_applied_at"), table_name="aftersale_platform_record"
    )
    op.drop_table("aftersale_platform_record")
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("channels")
        batch.drop_column("warehouses")
