"""orders: the seller's remark (卖家备注), edited from the review queue (issue 17)

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 06:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sales_order") as batch:
        batch.add_column(sa.Column("remark", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sales_order") as batch:
        batch.drop_column("remark")
