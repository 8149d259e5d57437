"""aftersales: the pull state of platform after-sale records per channel account (issue 18)

Pinduoduo refunds are pulled with pdd.refund.list.increment.get by update-time window, like
orders; each account's cursor lives here, apart from the order pull's.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ordertally.core.db

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aftersale_pull_state",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("cursor_at", ordertally.core.db.UtcDateTime(), nullable=False),
        sa.Column("last_attempt_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.Column("last_success_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("backoff_until", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.Column(
            "records_seen", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_aftersale_pull_state")),
    )


def downgrade() -> None:
    op.drop_table("aftersale_pull_state")
