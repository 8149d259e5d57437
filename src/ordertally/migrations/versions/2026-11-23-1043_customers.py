"""customers

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 10:43:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name_masked", sa.String(length=64), nullable=False),
        sa.Column("phone_masked", sa.String(length=32), nullable=False),
        sa.Column(
            "merged_into_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["customer.id"],
            name=op.f("fk_customer_merged_into_id_customer"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_merged_into_id"), ["merged_into_id"], unique=False
        )
    op.create_table(
        "customer_flag",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('discount_over_limit', 'same_sku_burst')",
            name=op.f("ck_customer_flag_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_flag_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_flag")),
        sa.UniqueConstraint("order_id", "kind", name=op.f("uq_customer_flag_order_id_kind")),
    )
    with op.batch_alter_table("customer_flag", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_flag_customer_id"), ["customer_id"], unique=False
        )
    op.create_table(
        "customer_identity",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("masked", sa.String(length=64), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('phone_bidx', 'platform_buyer')", name=op.f("ck_customer_identity_kind_known")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_identity_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_identity")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_customer_identity_kind_value")),
    )
    with op.batch_alter_table("customer_identity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_identity_customer_id"), ["customer_id"], unique=False
        )
    op.create_table(
        "customer_order",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("placed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "skus",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "categories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("refunded_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_customer_order_amount_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_order_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_order")),
        sa.UniqueConstraint("order_id", name=op.f("uq_customer_order_order_id")),
    )
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customer_order_customer_placed_at", ["customer_id", "placed_at"], unique=False
        )
    op.create_table(
        "customer_profile",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("orders_90d", sa.Integer(), nullable=False),
        sa.Column(
            "spend_90d_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "aov_90d_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("returns_30d", sa.Integer(), nullable=False),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "favourite_categories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "risk_flags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_order_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_ageing_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("computed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_profile_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_profile")),
    )
    with op.batch_alter_table("customer_profile", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_profile_next_ageing_at"), ["next_ageing_at"], unique=False
        )
    op.create_table(
        "customer_tag",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_tag_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "tag", name=op.f("pk_customer_tag")),
    )
    with op.batch_alter_table("customer_tag", schema=None) as batch_op:
        batch_op.create_index("ix_customer_tag_tag", ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_tag", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_tag_tag")
    op.drop_table("customer_tag")
    with op.batch_alter_table("customer_profile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_profile_next_ageing_at"))
    op.drop_table("customer_profile")
    with op.batch_alter_table("customer_order", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_order_customer_placed_at")
    op.drop_table("customer_order")
    with op.batch_alter_table("customer_identity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_identity_customer_id"))
    op.drop_table("customer_identity")
    with op.batch_alter_table("customer_flag", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_flag_customer_id"))
    op.drop_table("customer_flag")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_merged_into_id"))
    op.drop_table("customer")
