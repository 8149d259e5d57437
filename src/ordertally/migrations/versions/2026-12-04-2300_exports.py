"""exports: the export audit (request, progress, manifest) and saved templates

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "export_audit",
        sa.Column("id", BIG, autoincrement=True, nullable=False),
        sa.Column("export_no", sa.String(length=40), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("columns", JSON, nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("pii_unmasked", sa.Boolean(), nullable=False),
        sa.Column("pii_reason", sa.String(length=200), nullable=True),
        sa.Column("actor_id", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rows_total", BIG, nullable=True),
        sa.Column("rows_done", BIG, nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manifest", JSON, nullable=True),
        sa.Column("file_name", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'expired')",
            name=op.f("ck_export_audit_state_known"),
        ),
        sa.CheckConstraint("format IN ('csv', 'xlsx')", name=op.f("ck_export_audit_format_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_audit")),
        sa.UniqueConstraint("export_no", name=op.f("uq_export_audit_export_no")),
    )
    op.create_index(
        "ix_export_audit_state_created_at", "export_audit", ["state", "created_at"], unique=False
    )
    op.create_index(
        "ix_export_audit_state_expires_at", "export_audit", ["state", "expires_at"], unique=False
    )
    op.create_table(
        "export_template",
        sa.Column("id", BIG, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("base", sa.String(length=64), nullable=False),
        sa.Column("columns", JSON, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_template")),
        sa.UniqueConstraint("name", name=op.f("uq_export_template_name")),
    )


def downgrade() -> None:
    op.drop_table("export_template")
    op.drop_index("ix_export_audit_state_expires_at", table_name="export_audit")
    op.drop_index("ix_export_audit_state_created_at", table_name="export_audit")
    op.drop_table("export_audit")
