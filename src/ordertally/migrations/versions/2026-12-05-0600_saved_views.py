"""orders: saved views of the orders screen (issue 20)

A search and its filters kept under a name, per user, or shared by an admin.

Revision ID: 0030
Revises: 0026
Create Date: 2026-12-05 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0030"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "saved_view",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column(
            "query", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_view")),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_saved_view_owner_name")),
    )
    op.create_index("ix_saved_view_shared", "saved_view", ["shared", "name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_saved_view_shared", table_name="saved_view")
    op.drop_table("saved_view")
