"""sales_order: shipping, tax and fee parts of the total, and the total in the base currency;
fx_rate: exchange rates with effective dates; channel_webhook: the case of a held webhook

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ordertally.core.db
from ordertally.core import money

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ADDS_UP = "total_minor = subtotal_minor - discount_minor + shipping_minor + tax_minor + fee_minor"


def upgrade() -> None:
    op.create_table(
        "fx_rate",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("base_currency", sa.String(length=3), nullable=False),
        sa.Column("rate", sa.String(length=32), nullable=False),
        sa.Column("effective_from", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", ordertally.core.db.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("currency <> base_currency", name=op.f("ck_fx_rate_not_the_base")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fx_rate")),
        sa.UniqueConstraint(
            "currency",
            "base_currency",
            "effective_from",
            name=op.f("uq_fx_rate_currency_base_currency_effective_from"),
        ),
    )
    with op.batch_alter_table("channel_webhook", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "held_case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
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
    with op.batch_alter_table("channel_webhook", schema=None) as batch_op:
        batch_op.drop_column("held_case_id")
    op.drop_table("fx_rate")
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
