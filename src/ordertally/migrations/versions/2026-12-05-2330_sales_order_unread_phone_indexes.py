"""orders: drop the two sales_order indexes nothing reads (issue 21, flat with data)

`ix_sales_order_phone_bidx` and `ix_sales_order_customer_phone_last4` served the phone look-ups of
orders before the search index (ADR 0032) took them over: no query of the code filters
`sales_order` by either column any more (customers are found through `customer_identity`, orders
by phone through `search_doc`'s blind tokens). Their keys are random, so every new order wrote a
leaf at a random place of both (522 MB at 10M orders): part of the PostgreSQL CPU per order that
grows with the table (docs/benchmarks.md, session 14, flat).

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-05 23:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_phone_bidx")
        batch_op.drop_index("ix_sales_order_customer_phone_last4")


def downgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sales_order_customer_phone_last4", ["customer_phone_last4"], unique=False
        )
        batch_op.create_index("ix_sales_order_phone_bidx", ["customer_phone_bidx"], unique=False)
