"""rules: rules and their versions, the firing log, purchase plans; the built-in templates

Revision ID: 0015
Revises: 0012
Create Date: 2026-12-04 23:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rule",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("actions", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_rule_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule")),
        sa.UniqueConstraint("code", name=op.f("uq_rule_code")),
    )
    op.create_table(
        "rule_version",
        sa.Column("rule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("actions", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("saved_by", sa.String(length=100), nullable=False),
        sa.Column("saved_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rule.id"], name=op.f("fk_rule_version_rule_id_rule"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rule_id", "version", name=op.f("pk_rule_version")),
    )
    op.create_table(
        "rule_hit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=120), nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("facts", JSON, nullable=False),
        sa.Column("outcomes", JSON, nullable=False),
        sa.Column("fired_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rule.id"], name=op.f("fk_rule_hit_rule_id_rule"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_hit")),
        sa.UniqueConstraint("rule_id", "dedupe_key", name=op.f("uq_rule_hit_rule_id_dedupe_key")),
    )
    op.create_index("ix_rule_hit_rule_fired", "rule_hit", ["rule_id", "fired_at"])
    op.create_index("ix_rule_hit_order", "rule_hit", ["order_id"])
    op.create_table(
        "purchase_plan",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("warehouse_code", sa.String(length=32), nullable=False),
        sa.Column("expected_date", sa.Date(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_purchase_plan_quantity_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_plan")),
        sa.UniqueConstraint(
            "sku",
            "warehouse_code",
            "expected_date",
            "reference",
            name=op.f("uq_purchase_plan_sku_warehouse_code_expected_date_reference"),
        ),
    )
    op.create_index("ix_purchase_plan_sku_date", "purchase_plan", ["sku", "expected_date"])


def downgrade() -> None:
    op.drop_index("ix_purchase_plan_sku_date", table_name="purchase_plan")
    op.drop_table("purchase_plan")
    op.drop_index("ix_rule_hit_order", table_name="rule_hit")
    op.drop_index("ix_rule_hit_rule_fired", table_name="rule_hit")
    op.drop_table("rule_hit")
    op.drop_table("rule_version")
    op.drop_table("rule")
