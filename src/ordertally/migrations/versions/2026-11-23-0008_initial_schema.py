"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:08:58.782077
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'ops', 'cs', 'finance', 'warehouse')",
            name=op.f("ck_api_key_role_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
    )
    op.create_table(
        "dead_letter",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
        sa.UniqueConstraint("event_id", "consumer", name=op.f("uq_dead_letter_event_id_consumer")),
    )
    op.create_table(
        "idempotency_key",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_key")),
    )
    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_key_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "job_run",
        sa.Column("job_name", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("worker_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_name", "slot", name=op.f("pk_job_run")),
    )
    op.create_table(
        "order_daily_tally",
        sa.Column("day_date", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("orders_count", sa.Integer(), nullable=False),
        sa.Column(
            "total_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "day_date", "channel", "currency", name=op.f("pk_order_daily_tally")
        ),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_version", sa.Integer(), nullable=False),
        sa.Column("aggregate_type", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'dead')", name=op.f("ck_outbox_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_status_available_at", ["status", "available_at", "id"], unique=False
        )

    op.create_table(
        "processed_event",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("processed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_processed_event")),
    )
    op.create_table(
        "sales_order",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "subtotal_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "discount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "total_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("base_currency", sa.String(length=3), nullable=False),
        sa.Column("fx_rate", sa.String(length=32), nullable=False),
        sa.Column("customer_name_enc", sa.Text(), nullable=False),
        sa.Column("customer_name_masked", sa.String(length=64), nullable=False),
        sa.Column("customer_phone_enc", sa.Text(), nullable=False),
        sa.Column("customer_phone_bidx", sa.String(length=64), nullable=False),
        sa.Column("customer_phone_masked", sa.String(length=32), nullable=False),
        sa.Column("customer_phone_last4", sa.String(length=4), nullable=False),
        sa.Column("shipping_address_enc", sa.Text(), nullable=False),
        sa.Column("ship_name_masked", sa.String(length=64), nullable=False),
        sa.Column("ship_phone_masked", sa.String(length=32), nullable=False),
        sa.Column("ship_province", sa.String(length=32), nullable=False),
        sa.Column("ship_city", sa.String(length=64), nullable=False),
        sa.Column("ship_district", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column(
            "payment_deadline_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending_payment', 'paid', 'allocated', 'fulfilling', 'shipped', 'delivered', 'completed', 'closed', 'refunded')",
            name=op.f("ck_sales_order_status_known"),
        ),
        sa.CheckConstraint(
            "discount_minor >= 0", name=op.f("ck_sales_order_discount_non_negative")
        ),
        sa.CheckConstraint(
            "subtotal_minor >= discount_minor", name=op.f("ck_sales_order_discount_within_subtotal")
        ),
        sa.CheckConstraint(
            "total_minor = subtotal_minor - discount_minor",
            name=op.f("ck_sales_order_total_adds_up"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_sales_order_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_order")),
        sa.UniqueConstraint(
            "channel", "external_id", name=op.f("uq_sales_order_channel_external_id")
        ),
        sa.UniqueConstraint("order_no", name=op.f("uq_sales_order_order_no")),
    )
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.create_index("ix_sales_order_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sales_order_customer_phone_last4"),
            ["customer_phone_last4"],
            unique=False,
        )
        batch_op.create_index(
            "ix_sales_order_fingerprint_created_at", ["fingerprint", "created_at"], unique=False
        )
        batch_op.create_index("ix_sales_order_phone_bidx", ["customer_phone_bidx"], unique=False)
        batch_op.create_index(
            "ix_sales_order_status_created_at", ["status", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_sales_order_status_deadline", ["status", "payment_deadline_at"], unique=False
        )

    op.create_table(
        "sku",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sku")),
        sa.UniqueConstraint("code", name=op.f("uq_sku_code")),
    )
    op.create_table(
        "warehouse",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("province", sa.String(length=32), nullable=False),
        sa.Column("city", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warehouse")),
        sa.UniqueConstraint("code", name=op.f("uq_warehouse_code")),
    )
    op.create_table(
        "exception_case",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=100), nullable=True),
        sa.Column("resolution", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'resolved')", name=op.f("ck_exception_case_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_exception_case_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exception_case")),
    )
    with op.batch_alter_table("exception_case", schema=None) as batch_op:
        batch_op.create_index(
            "ix_exception_case_order_status", ["order_id", "status"], unique=False
        )
        batch_op.create_index("ix_exception_case_status_type", ["status", "type"], unique=False)

    op.create_table(
        "order_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("actor_kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=100), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("evidence_ref", sa.String(length=200), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_order_event_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_event")),
        sa.UniqueConstraint("order_id", "version", name=op.f("uq_order_event_order_id_version")),
    )
    op.create_table(
        "order_line",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column(
            "unit_price_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "discount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "total_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.CheckConstraint("discount_minor >= 0", name=op.f("ck_order_line_discount_non_negative")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_line_quantity_positive")),
        sa.CheckConstraint(
            "total_minor = quantity * unit_price_minor - discount_minor",
            name=op.f("ck_order_line_total_adds_up"),
        ),
        sa.CheckConstraint("unit_price_minor >= 0", name=op.f("ck_order_line_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_order_line_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_line")),
        sa.UniqueConstraint("order_id", "line_no", name=op.f("uq_order_line_order_id_line_no")),
    )
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_line_sku"), ["sku"], unique=False)

    op.create_table(
        "pii_access",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("accessed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_pii_access_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pii_access")),
    )


def downgrade() -> None:
    op.drop_table("pii_access")
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_line_sku"))

    op.drop_table("order_line")
    op.drop_table("order_event")
    with op.batch_alter_table("exception_case", schema=None) as batch_op:
        batch_op.drop_index("ix_exception_case_status_type")
        batch_op.drop_index("ix_exception_case_order_status")

    op.drop_table("exception_case")
    op.drop_table("warehouse")
    op.drop_table("sku")
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_status_deadline")
        batch_op.drop_index("ix_sales_order_status_created_at")
        batch_op.drop_index("ix_sales_order_phone_bidx")
        batch_op.drop_index("ix_sales_order_fingerprint_created_at")
        batch_op.drop_index(batch_op.f("ix_sales_order_customer_phone_last4"))
        batch_op.drop_index("ix_sales_order_created_at_id")

    op.drop_table("sales_order")
    op.drop_table("processed_event")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_available_at")

    op.drop_table("outbox")
    op.drop_table("order_daily_tally")
    op.drop_table("job_run")
    with op.batch_alter_table("idempotency_key", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_key_expires_at")

    op.drop_table("idempotency_key")
    op.drop_table("dead_letter")
    op.drop_table("api_key")
