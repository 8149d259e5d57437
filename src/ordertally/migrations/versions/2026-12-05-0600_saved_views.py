"""orders + channels: saved views of the orders screen; order files uploaded from the back
office (issue 20)

A search and its filters kept under a name, per user, or shared by an admin; an uploaded
platform order file, kept until the worker has imported it, with its progress and the
rejected rows' report.

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-05 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0030"
down_revision: str | None = "0028"
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
    op.create_table(
        "channel_file_import",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=16), nullable=True),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=True),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("rejected_rows", sa.Integer(), nullable=False),
        sa.Column("report", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(), nullable=False),
        sa.Column("started_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.Column("beat_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.Column("finished_at", ordertally.core.db.UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed')",
            name=op.f("ck_channel_file_import_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_file_import")),
    )
    op.create_index(
        "ix_channel_file_import_state", "channel_file_import", ["state", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_channel_file_import_state", table_name="channel_file_import")
    op.drop_table("channel_file_import")
    op.drop_index("ix_saved_view_shared", table_name="saved_view")
    op.drop_table("saved_view")
