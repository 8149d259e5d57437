"""analytics: after-sales timelines, after-sales KPI rows and shipped denominators (issue 19,
ADR 0040)

`ordertally analytics rebuild` fills them from the event log (the after-sales stage rows go
into `stage_daily_stat`, which exists).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-05 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMPS = (
    "requested_at",
    "approved_at",
    "rejected_at",
    "decided_at",
    "returned_at",
    "inspected_at",
    "refunded_at",
    "resolved_at",
    "closed_at",
)


def upgrade() -> None:
    op.create_table(
        "aftersale_timeline",
        sa.Column("case_no", sa.String(length=32), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("responsibility", sa.String(length=16), nullable=False),
        sa.Column("day_date", sa.String(length=10), nullable=False),
        *(sa.Column(c, sa.DateTime(timezone=True), nullable=True) for c in STAMPS),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("refunded_minor", BIG, nullable=False),
        sa.Column("lines", JSON, nullable=False),
        sa.PrimaryKeyConstraint("case_no", name=op.f("pk_aftersale_timeline")),
    )
    op.create_index(
        "ix_aftersale_timeline_day_channel",
        "aftersale_timeline",
        ["day_date", "channel"],
        unique=False,
    )
    op.create_table(
        "aftersale_daily_stat",
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("day_date", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("dim_key", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("refund_minor", BIG, nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension",
            "channel",
            "day_date",
            "dim_key",
            "currency",
            name=op.f("pk_aftersale_daily_stat"),
        ),
    )
    op.create_table(
        "shipped_daily_stat",
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("day_date", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("dim_key", sa.String(length=64), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension", "channel", "day_date", "dim_key", name=op.f("pk_shipped_daily_stat")
        ),
    )


def downgrade() -> None:
    op.drop_table("shipped_daily_stat")
    op.drop_table("aftersale_daily_stat")
    op.drop_index("ix_aftersale_timeline_day_channel", table_name="aftersale_timeline")
    op.drop_table("aftersale_timeline")
