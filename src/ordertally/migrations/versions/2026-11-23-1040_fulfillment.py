"""fulfillment

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ordertally.core.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shipment",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("warehouse_code", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=False),
        sa.Column("company", sa.String(length=32), nullable=False),
        sa.Column("waybill_no", sa.String(length=64), nullable=True),
        sa.Column("waybill_label", sa.String(length=200), nullable=False),
        sa.Column("waybill_attempts", sa.Integer(), nullable=False),
        sa.Column("next_waybill_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("confirmed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by", sa.String(length=100), nullable=False),
        sa.Column("shipped_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("shipped_by", sa.String(length=100), nullable=False),
        sa.Column("subscribed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("subscribe_attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_subscribe_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("tracking_state_code", sa.String(length=16), nullable=False),
        sa.Column("last_event_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_news_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("stale_flagged_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('planned', 'waybill_requested', 'ready', 'shipped', 'in_transit', 'out_for_delivery', 'delivered', 'returned', 'exception')",
            name=op.f("ck_shipment_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_shipment_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment")),
        sa.UniqueConstraint(
            "order_id",
            "warehouse_code",
            "seq",
            name=op.f("uq_shipment_order_id_warehouse_code_seq"),
        ),
    )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.create_index("ix_shipment_order", ["order_id"], unique=False)
        batch_op.create_index("ix_shipment_poll_due", ["status", "next_poll_at"], unique=False)
        batch_op.create_index(
            "ix_shipment_subscribe_due", ["status", "next_subscribe_at"], unique=False
        )
        batch_op.create_index("ix_shipment_waybill", ["waybill_no", "company"], unique=False)
        batch_op.create_index(
            "ix_shipment_waybill_due", ["status", "next_waybill_at"], unique=False
        )

    op.create_table(
        "shipment_line",
        sa.Column(
            "shipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "order_line_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_shipment_line_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_line_id"],
            ["order_line.id"],
            name=op.f("fk_shipment_line_order_line_id_order_line"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.id"],
            name=op.f("fk_shipment_line_shipment_id_shipment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("shipment_id", "order_line_id", name=op.f("pk_shipment_line")),
    )
    op.create_table(
        "tracking_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "shipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("company", sa.String(length=32), nullable=False),
        sa.Column("waybill_no", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("state_code", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("received_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.id"],
            name=op.f("fk_tracking_event_shipment_id_shipment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_event")),
        sa.UniqueConstraint(
            "company",
            "waybill_no",
            "occurred_at",
            "state_code",
            name=op.f("uq_tracking_event_company_waybill_no_occurred_at_state_code"),
        ),
    )
    with op.batch_alter_table("tracking_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tracking_event_shipment_time", ["shipment_id", "occurred_at"], unique=False
        )

    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("waybill_nos", sa.String(length=500), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_column("waybill_nos")

    with op.batch_alter_table("tracking_event", schema=None) as batch_op:
        batch_op.drop_index("ix_tracking_event_shipment_time")

    op.drop_table("tracking_event")
    op.drop_table("shipment_line")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_index("ix_shipment_waybill_due")
        batch_op.drop_index("ix_shipment_waybill")
        batch_op.drop_index("ix_shipment_subscribe_due")
        batch_op.drop_index("ix_shipment_poll_due")
        batch_op.drop_index("ix_shipment_order")

    op.drop_table("shipment")
