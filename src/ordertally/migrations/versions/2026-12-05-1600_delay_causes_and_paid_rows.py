"""analytics: delay causes and the daily paid count kept by consumers (issue 19, ADR 0043)

`stage_delay_stat` holds the stage table's delay causes per day, channel, stage, dimension
value and exception case type; `order_timeline.exception_types` the case types each order's
rows were moved by; `order_daily_paid` the daily series' paid orders. The paid rows are filled
here from the timelines; `ordertally analytics rebuild --stages-only` fills the delay causes
(it reads every order's cases).

events: `processed_event` gets an index on `event_id`: the dispatcher asks, per batch, which
consumers already applied the claimed events, and the primary key leads with the consumer
(without it, every batch read the whole dedupe table).

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-05 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_timeline") as batch:
        batch.add_column(sa.Column("exception_types", sa.Text(), server_default="", nullable=False))
    op.create_table(
        "stage_delay_stat",
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("day_date", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("dim_key", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "dimension",
            "day_date",
            "channel",
            "stage",
            "dim_key",
            "type",
            name=op.f("pk_stage_delay_stat"),
        ),
    )
    op.create_table(
        "order_daily_paid",
        sa.Column("day_date", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day_date", "channel", "currency", name=op.f("pk_order_daily_paid")
        ),
    )
    op.create_index("ix_processed_event_event_id", "processed_event", ["event_id"], unique=False)
    op.execute(
        "INSERT INTO order_daily_paid (day_date, channel, currency, orders)"
        " SELECT day_date, channel, currency, count(*) FROM order_timeline"
        " WHERE day_date <> '' AND created_at IS NOT NULL AND paid_at IS NOT NULL"
        " GROUP BY day_date, channel, currency"
    )


def downgrade() -> None:
    op.drop_index("ix_processed_event_event_id", table_name="processed_event")
    op.drop_table("order_daily_paid")
    op.drop_table("stage_delay_stat")
    with op.batch_alter_table("order_timeline") as batch:
        batch.drop_column("exception_types")
