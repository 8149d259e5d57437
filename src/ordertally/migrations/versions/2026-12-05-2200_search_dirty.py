"""search: the dirty-order queue of the search lane (issue 16, ADR 0032 addendum, session 14)

`search_dirty` gets one row per business transaction that published an event the search index
reads (the order id, the event time), in that transaction; the search lane indexes the orders
and deletes the rows it claimed. The indexer no longer runs in the outbox chain, so the orders
whose indexed events are still undelivered when this runs (pending, or dead without the search
consumer's dedupe row) are queued here: their changes would otherwise be acknowledged by the
chain without reaching the index.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-05 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "search_dirty",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_dirty")),
    )
    # Every event search reads is published on the order's aggregate (aggregate_id: order_no).
    op.execute(
        "INSERT INTO search_dirty (order_id, since)"
        " SELECT o.id, min(e.occurred_at) FROM outbox e"
        " JOIN sales_order o ON o.order_no = e.aggregate_id"
        " WHERE e.status IN ('pending', 'dead') AND e.aggregate_type = 'order'"
        " AND NOT EXISTS (SELECT 1 FROM processed_event p"
        " WHERE p.consumer = 'search.index_order' AND p.event_id = e.event_id)"
        " GROUP BY o.id"
    )


def downgrade() -> None:
    op.drop_table("search_dirty")
