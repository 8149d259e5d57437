"""search: one index row per order (blind tokens, filter columns, masked summary), synonyms,
and the engine per dialect: a stored tsvector + GIN on PostgreSQL, an FTS5 table on SQLite

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ordertally.core.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = ordertally.core.db.UtcDateTime(timezone=True)

# SQLite: an external-content FTS5 table over search_doc.tokens, kept by triggers (the
# tokens are ASCII, so unicode61 keeps each whole); rowid = order_id.
SQLITE_ENGINE = (
    "CREATE VIRTUAL TABLE hand_search_fts USING fts5("
    "tokens, content='search_doc', content_rowid='order_id', tokenize='unicode61', "
    "detail='none')",
    "CREATE TRIGGER hand_search_doc_ai AFTER INSERT ON search_doc BEGIN "
    "INSERT INTO hand_search_fts(rowid, tokens) VALUES (new.order_id, new.tokens); END",
    "CREATE TRIGGER hand_search_doc_ad AFTER DELETE ON search_doc BEGIN "
    "INSERT INTO hand_search_fts(hand_search_fts, rowid, tokens) "
    "VALUES ('delete', old.order_id, old.tokens); END",
    "CREATE TRIGGER hand_search_doc_au AFTER UPDATE OF tokens ON search_doc BEGIN "
    "INSERT INTO hand_search_fts(hand_search_fts, rowid, tokens) "
    "VALUES ('delete', old.order_id, old.tokens); "
    "INSERT INTO hand_search_fts(rowid, tokens) VALUES (new.order_id, new.tokens); END",
)
# PostgreSQL: the tokens parsed once into a stored tsvector (the `simple` configuration keeps
# each ASCII token as it is), searched through a GIN index (fastupdate off: a search never
# scans a pending list).
PG_ENGINE = (
    "ALTER TABLE search_doc ADD COLUMN hand_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, tokens)) STORED",
    "CREATE INDEX hand_search_doc_tsv ON search_doc USING gin (hand_tsv) WITH (fastupdate = off)",
)


def upgrade() -> None:
    op.create_table(
        "search_doc",
        sa.Column("order_id", BigId, autoincrement=False, nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("placed_date", sa.String(length=10), nullable=False),
        sa.Column("has_open_exception", sa.Boolean(), nullable=False),
        sa.Column("total_minor", BigId, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("customer_name_masked", sa.String(length=64), nullable=False),
        sa.Column("customer_phone_masked", sa.String(length=32), nullable=False),
        sa.Column("ship_city", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("source_at", Utc, nullable=False),
        sa.Column("indexed_at", Utc, nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_search_doc_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_search_doc")),
    )
    op.create_index("ix_search_doc_placed_date", "search_doc", ["placed_date"], unique=False)
    op.create_table(
        "search_synonym",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("synonym", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_synonym")),
        sa.UniqueConstraint("term", "synonym", name=op.f("uq_search_synonym_term_synonym")),
    )
    statements = SQLITE_ENGINE if op.get_bind().dialect.name == "sqlite" else PG_ENGINE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("hand_search_doc_ai", "hand_search_doc_ad", "hand_search_doc_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS hand_search_fts")
    op.drop_table("search_synonym")
    op.drop_index("ix_search_doc_placed_date", table_name="search_doc")
    op.drop_table("search_doc")
