"""payments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:46:08.710685
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_nonce",
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "nonce", name=op.f("pk_payment_nonce")),
    )
    with op.batch_alter_table("payment_nonce", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_nonce_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "payment_notification",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=160), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.Column("provider_txn_id", sa.String(length=64), nullable=True),
        sa.Column("trade_state", sa.String(length=32), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "facts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("verification", sa.String(length=16), nullable=False),
        sa.Column("rejection_reason", sa.String(length=200), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("received_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint(
            "outcome IN ('pending', 'paid', 'duplicate', 'amount_mismatch', 'double_payment', 'paid_after_close', 'unknown_trade', 'not_paid', 'refund_recorded', 'refund_full', 'refund_exceeds_paid', 'ignored', 'rejected')",
            name=op.f("ck_payment_notification_outcome_known"),
        ),
        sa.CheckConstraint(
            "provider IN ('wechatpay', 'alipay')",
            name=op.f("ck_payment_notification_provider_known"),
        ),
        sa.CheckConstraint(
            "source IN ('callback', 'query', 'statement')",
            name=op.f("ck_payment_notification_source_known"),
        ),
        sa.CheckConstraint(
            "verification IN ('verified', 'rejected')",
            name=op.f("ck_payment_notification_verification_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_notification")),
        sa.UniqueConstraint(
            "provider", "dedupe_key", name=op.f("uq_payment_notification_provider_dedupe_key")
        ),
    )
    with op.batch_alter_table("payment_notification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_notification_out_trade_no"), ["out_trade_no"], unique=False
        )
        batch_op.create_index(
            "ix_payment_notification_outcome_received_at", ["outcome", "received_at"], unique=False
        )

    op.create_table(
        "payment_reconciliation",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("window_from", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("window_to", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("run_by", sa.String(length=100), nullable=False),
        sa.Column("started_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "provider IN ('wechatpay', 'alipay')",
            name=op.f("ck_payment_reconciliation_provider_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_reconciliation")),
    )
    op.create_table(
        "manual_payment",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column(
            "amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("paid_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("requested_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.String(length=500), nullable=True),
        sa.Column("query_outcome", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending_approval', 'approved', 'rejected', 'superseded')",
            name=op.f("ck_manual_payment_state_known"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_manual_payment_amount_positive")),
        sa.CheckConstraint(
            "decided_by IS NULL OR decided_by <> requested_by",
            name=op.f("ck_manual_payment_two_people"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["sales_order.id"], name=op.f("fk_manual_payment_order_id_sales_order")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_payment")),
    )
    with op.batch_alter_table("manual_payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manual_payment_order_id"), ["order_id"], unique=False)

    op.create_table(
        "payment",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=False),
        sa.Column(
            "amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("provider_txn_id", sa.String(length=64), nullable=True),
        sa.Column(
            "paid_amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("paid_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("settles_order", sa.Boolean(), nullable=False),
        sa.Column(
            "refunded_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("deadline_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_query_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("query_count", sa.Integer(), nullable=False),
        sa.Column("last_query_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_query_state", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "provider IN ('wechatpay', 'alipay')", name=op.f("ck_payment_provider_known")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'paid', 'closed', 'failed', 'mismatch')",
            name=op.f("ck_payment_state_known"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_amount_positive")),
        sa.CheckConstraint(
            "refunded_minor <= COALESCE(paid_amount_minor, 0)",
            name=op.f("ck_payment_refund_within_paid"),
        ),
        sa.CheckConstraint("refunded_minor >= 0", name=op.f("ck_payment_refunded_non_negative")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["sales_order.id"], name=op.f("fk_payment_order_id_sales_order")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
        sa.UniqueConstraint("out_trade_no", name=op.f("uq_payment_out_trade_no")),
        sa.UniqueConstraint(
            "provider", "provider_txn_id", name=op.f("uq_payment_provider_provider_txn_id")
        ),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_payment_provider_paid_at", ["provider", "paid_at"], unique=False)
        batch_op.create_index(
            "ix_payment_state_next_query_at", ["state", "next_query_at"], unique=False
        )

    op.create_table(
        "payment_refund",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("out_refund_no", sa.String(length=64), nullable=False),
        sa.Column("refund_id", sa.String(length=64), nullable=True),
        sa.Column(
            "amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("refunded_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "notification_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('success', 'abnormal', 'closed')",
            name=op.f("ck_payment_refund_status_known"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_refund_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payment.id"], name=op.f("fk_payment_refund_payment_id_payment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_refund")),
        sa.UniqueConstraint(
            "provider", "out_refund_no", name=op.f("uq_payment_refund_provider_out_refund_no")
        ),
    )
    with op.batch_alter_table("payment_refund", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_refund_payment_id"), ["payment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_refund", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_refund_payment_id"))

    op.drop_table("payment_refund")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_state_next_query_at")
        batch_op.drop_index("ix_payment_provider_paid_at")
        batch_op.drop_index(batch_op.f("ix_payment_order_id"))

    op.drop_table("payment")
    with op.batch_alter_table("manual_payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manual_payment_order_id"))

    op.drop_table("manual_payment")
    op.drop_table("payment_reconciliation")
    with op.batch_alter_table("payment_notification", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_notification_outcome_received_at")
        batch_op.drop_index(batch_op.f("ix_payment_notification_out_trade_no"))

    op.drop_table("payment_notification")
    with op.batch_alter_table("payment_nonce", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_nonce_expires_at"))

    op.drop_table("payment_nonce")
