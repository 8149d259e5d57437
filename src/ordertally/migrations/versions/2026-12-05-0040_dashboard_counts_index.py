"""orders: a (created_at, status) index for the dashboard's last-day counts (issue 20)

The dashboard counts the last 24 hours' orders per status on every load and refresh. With
only (created_at, id) and (status, created_at), PostgreSQL scanned the whole of the second index
(78 ms at a million orders); this one answers the count from the day's index entries alone.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 00:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sales_order_created_at_status", "sales_order", ["created_at", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sales_order_created_at_status", table_name="sales_order")
