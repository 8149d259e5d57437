"""aftersales: the buyer's message is stored sealed (issue 14 follow-up)

`aftersale_case.buyer_message` held the buyer's own words in clear; it now holds them sealed
with the PII key (AES-GCM bound to the column and the case number), which no longer fits 500
characters: the column becomes TEXT. Rows written before stay readable as they are (the
service reads a value without the sealed prefix as clear text).

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("aftersale_case") as batch:
        batch.alter_column(
            "buyer_message", existing_type=sa.String(500), type_=sa.Text(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("aftersale_case") as batch:
        batch.alter_column(
            "buyer_message", existing_type=sa.Text(), type_=sa.String(500), existing_nullable=True
        )
