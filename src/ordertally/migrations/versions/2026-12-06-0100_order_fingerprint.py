"""orders: the duplicate check's fingerprints in a table of their own (issue 21, ADR 0056)

The keyless duplicate check only looks back `duplicate_window_seconds` (10 minutes by default),
but it read `ix_sales_order_fingerprint_created_at`, an index over every order's fingerprint
(a SHA-256: random keys). Each new order wrote a leaf at a random place of it, and with
millions of orders that is a leaf not touched since the last checkpoint: a full-page image in
the WAL per order (docs/benchmarks.md, h47). `order_fingerprint` keeps (fingerprint, created_at,
order_id) only for the window (`purge_order_fingerprints`), so its index stays small and hot;
the sales_order index goes. The column `sales_order.fingerprint` stays (unindexed).

The fingerprints of the last day's orders are copied, so the check sees the orders created
just before the upgrade (a window longer than a day misses older twins once).

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-06 01:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COPIED = timedelta(days=1)


def upgrade() -> None:
    op.create_table(
        "order_fingerprint",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("order_id", BigId, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint(
            "fingerprint", "created_at", "order_id", name=op.f("pk_order_fingerprint")
        ),
    )
    with op.batch_alter_table("order_fingerprint", schema=None) as batch_op:
        batch_op.create_index("ix_order_fingerprint_created_at", ["created_at"], unique=False)
    since = datetime.now(UTC) - COPIED
    if op.get_bind().dialect.name == "sqlite":
        since = since.replace(tzinfo=None)  # stored naive UTC there (core.db.UtcDateTime)
    op.get_bind().execute(
        sa.text(
            "INSERT INTO order_fingerprint (fingerprint, created_at, order_id)"
            " SELECT fingerprint, created_at, id FROM sales_order WHERE created_at >= :since"
        ).bindparams(sa.bindparam("since", since, type_=sa.DateTime(timezone=True)))
    )
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_fingerprint_created_at")


def downgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sales_order_fingerprint_created_at", ["fingerprint", "created_at"], unique=False
        )
    with op.batch_alter_table("order_fingerprint", schema=None) as batch_op:
        batch_op.drop_index("ix_order_fingerprint_created_at")
    op.drop_table("order_fingerprint")
