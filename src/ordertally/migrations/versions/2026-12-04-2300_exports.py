"""exports and analytics: the export audit and saved templates; order timelines, business
events and fulfilment requirements

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
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

    op.create_table(
        "order_timeline",
        sa.Column("order_id", BIG, autoincrement=False, nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", BIG, nullable=False),
        sa.Column("day_date", sa.String(length=10), nullable=False),
        *[
            sa.Column(name, sa.DateTime(timezone=True), nullable=True)
            for name in (
                "created_at",
                "paid_at",
                "allocated_at",
                "picking_at",
                "shipped_at",
                "delivered_at",
                "completed_at",
                "fulfillment_start_at",
                "ship_by_at",
            )
        ],
        sa.Column("warehouse", sa.String(length=32), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_timeline")),
        sa.UniqueConstraint("order_no", name=op.f("uq_order_timeline_order_no")),
    )
    op.create_index("ix_order_timeline_day_channel", "order_timeline", ["day_date", "channel"])
    op.create_index("ix_order_timeline_created_at", "order_timeline", ["created_at"])
    op.create_table(
        "fulfillment_event",
        sa.Column("id", BIG, autoincrement=True, nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fulfillment_event")),
        sa.UniqueConstraint("order_no", "type", name=op.f("uq_fulfillment_event_order_no_type")),
    )
    op.create_table(
        "fulfillment_requirement",
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column("required", JSON, nullable=False),
        sa.Column("ship_by_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("set_by", sa.String(length=100), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_fulfillment_requirement")),
    )


def downgrade() -> None:
    op.drop_table("fulfillment_requirement")
    op.drop_table("fulfillment_event")
    op.drop_index("ix_order_timeline_created_at", table_name="order_timeline")
    op.drop_index("ix_order_timeline_day_channel", table_name="order_timeline")
    op.drop_table("order_timeline")
    op.drop_table("export_template")
    op.drop_index("ix_export_audit_state_expires_at", table_name="export_audit")
    op.drop_index("ix_export_audit_state_created_at", table_name="export_audit")
    op.drop_table("export_audit")
