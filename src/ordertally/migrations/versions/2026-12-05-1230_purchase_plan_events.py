"""rules: the purchase plans' audit trail (who added, imported or deleted which plan) and the
index the back office's purchase-plans screen pages by (issue 20)

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-05 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ordertally.core.db

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purchase_plan_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("warehouse_code", sa.String(length=32), nullable=False),
        sa.Column("expected_date", sa.Date(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('added', 'imported', 'deleted')",
            name=op.f("ck_purchase_plan_event_action_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_plan_event")),
    )
    op.create_index("ix_purchase_plan_event_at", "purchase_plan_event", ["at"])
    op.create_index("ix_purchase_plan_date_id", "purchase_plan", ["expected_date", "id"])


def downgrade() -> None:
    op.drop_index("ix_purchase_plan_date_id", table_name="purchase_plan")
    op.drop_index("ix_purchase_plan_event_at", table_name="purchase_plan_event")
    op.drop_table("purchase_plan_event")
