"""sales_order: shipping, tax and fee parts of the total, and the total in the base currency

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ordertally.core import money

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ADDS_UP = "total_minor = subtotal_minor - discount_minor + shipping_minor + tax_minor + fee_minor"


def upgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "shipping_minor",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default="0",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "tax_minor",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default="0",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "fee_minor",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                server_default="0",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "base_total_minor",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.drop_constraint(op.f("ck_sales_order_total_adds_up"), type_="check")
        batch_op.create_check_constraint(op.f("ck_sales_order_total_adds_up"), _ADDS_UP)
        batch_op.create_check_constraint(
            op.f("ck_sales_order_charges_non_negative"),
            "shipping_minor >= 0 AND tax_minor >= 0 AND fee_minor >= 0",
        )
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE sales_order SET base_total_minor = total_minor WHERE currency = base_currency"
        )
    )
    foreign = bind.execute(
        sa.text(
            "SELECT id, total_minor, currency, fx_rate, base_currency FROM sales_order "
            "WHERE currency <> base_currency"
        )
    ).all()
    for row in foreign:
        bind.execute(
            sa.text("UPDATE sales_order SET base_total_minor = :v WHERE id = :id"),
            {"v": money.convert_minor(row[1], row[2], row[3], row[4]), "id": row[0]},
        )


def downgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_sales_order_charges_non_negative"), type_="check")
        batch_op.drop_constraint(op.f("ck_sales_order_total_adds_up"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_sales_order_total_adds_up"), "total_minor = subtotal_minor - discount_minor"
        )
        batch_op.drop_column("base_total_minor")
        batch_op.drop_column("fee_minor")
        batch_op.drop_column("tax_minor")
        batch_op.drop_column("shipping_minor")
