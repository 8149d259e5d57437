"""catalog: the product master (categories, SKU attributes, bundles, change history); every SKU
code already seen in stock, ledger, reservations, order lines or channel mappings gets a row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ordertally.core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "category",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("parent_id", BigId, nullable=True),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["category.id"], name=op.f("fk_category_parent_id_category")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_category")),
        sa.UniqueConstraint("code", name=op.f("uq_category_code")),
    )
    with op.batch_alter_table("sku") as batch_op:
        batch_op.add_column(sa.Column("spec", Json, nullable=True))
        batch_op.add_column(
            sa.Column(
                "spec_text", sa.String(length=200), server_default=sa.text("''"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("barcode", sa.String(length=14), nullable=True))
        batch_op.add_column(
            sa.Column("unit", sa.String(length=16), server_default=sa.text("'件'"), nullable=False)
        )
        batch_op.add_column(sa.Column("weight_g", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("length_mm", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("width_mm", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("height_mm", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("category_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("brand", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("cost_minor", BigId, nullable=True))
        batch_op.add_column(sa.Column("min_price_minor", BigId, nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("image_ref", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("is_bundle", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("updated_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_sku_category_id_category"), "category", ["category_id"], ["id"]
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_sku_weight_non_negative"), "weight_g IS NULL OR weight_g >= 0"
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_sku_cost_non_negative"), "cost_minor IS NULL OR cost_minor >= 0"
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_sku_min_price_non_negative"),
            "min_price_minor IS NULL OR min_price_minor >= 0",
        )
        batch_op.create_index("ix_sku_barcode", ["barcode"], unique=True)
        batch_op.create_index("ix_sku_category_id", ["category_id"], unique=False)
        batch_op.create_index("ix_sku_brand", ["brand"], unique=False)
    op.create_table(
        "bundle_component",
        sa.Column("bundle", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_bundle_component_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["bundle"],
            ["sku.code"],
            name=op.f("fk_bundle_component_bundle_sku"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["component"], ["sku.code"], name=op.f("fk_bundle_component_component_sku")
        ),
        sa.PrimaryKeyConstraint("bundle", "component", name=op.f("pk_bundle_component")),
    )
    op.create_index(
        op.f("ix_bundle_component_component"), "bundle_component", ["component"], unique=False
    )
    op.create_table(
        "sku_change",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("changes", Json, nullable=False),
        sa.Column("changed_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sku_change")),
    )
    op.create_index("ix_sku_change_sku_at", "sku_change", ["sku", "changed_at"], unique=False)
    with op.batch_alter_table("order_line") as batch_op:
        batch_op.add_column(sa.Column("sku_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("sku_name_en", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("sku_spec", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("sku_barcode", sa.String(length=14), nullable=True))
    # The catalogue becomes the one SKU list: every code already in use gets a row named by its
    # code (the merchant renames it later); the history records the migration.
    op.execute(
        """
        INSERT INTO sku (code, name, name_en, active, spec_text, unit, is_bundle)
        SELECT code, code, code, true, '', '件', false FROM (
            SELECT sku AS code FROM stock
            UNION SELECT sku FROM stock_movement
            UNION SELECT sku FROM reservation
            UNION SELECT sku FROM order_line
            UNION SELECT sku FROM channel_sku_mapping
        ) AS seen
        WHERE code NOT IN (SELECT code FROM sku)
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("order_line") as batch_op:
        batch_op.drop_column("sku_barcode")
        batch_op.drop_column("sku_spec")
        batch_op.drop_column("sku_name_en")
        batch_op.drop_column("sku_name")
    op.drop_index("ix_sku_change_sku_at", table_name="sku_change")
    op.drop_table("sku_change")
    op.drop_index(op.f("ix_bundle_component_component"), table_name="bundle_component")
    op.drop_table("bundle_component")
    with op.batch_alter_table("sku") as batch_op:
        batch_op.drop_index("ix_sku_brand")
        batch_op.drop_index("ix_sku_category_id")
        batch_op.drop_index("ix_sku_barcode")
        batch_op.drop_constraint(batch_op.f("ck_sku_min_price_non_negative"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_sku_cost_non_negative"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_sku_weight_non_negative"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_sku_category_id_category"), type_="foreignkey")
        for column in (
            "updated_at",
            "is_bundle",
            "image_ref",
            "currency",
            "min_price_minor",
            "cost_minor",
            "brand",
            "category_id",
            "height_mm",
            "width_mm",
            "length_mm",
            "weight_g",
            "unit",
            "spec_text",
            "barcode",
            "spec",
        ):
            batch_op.drop_column(column)
    op.drop_table("category")
