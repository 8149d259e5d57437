"""auth: key warehouse scope and the auth revision row (revocation seen by every process)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(
            sa.Column(
                "warehouses",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=True,
            )
        )
    op.create_table(
        "auth_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_revision")),
    )
    op.execute("INSERT INTO auth_revision (id, revision) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("auth_revision")
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("warehouses")
