"""catalog: brand_en, the catalogue's words and their revision (issue 22: brand in search, the
segmenter's user dictionary fed from the catalogue)

Every Chinese run of 2-16 characters of a SKU's name, brand and spec and of a category's name
becomes a row of `catalog_word`, stamped with the revision that first used it; the API and the
worker add the words above the revision they last saw to their segmenter. This migration fills
the words of the catalogue as it stands, at revision 1.

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-05 02:30:00
"""

import re
import unicodedata
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The same rule as catalog.service.catalog_words (a migration keeps its own copy).
_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,16}")


def _words(*texts: str | None) -> set[str]:
    found: set[str] = set()
    for t in texts:
        if t:
            found.update(_RUN.findall(unicodedata.normalize("NFKC", t)))
    return found


def upgrade() -> None:
    with op.batch_alter_table("sku") as batch_op:
        batch_op.add_column(sa.Column("brand_en", sa.String(length=100), nullable=True))
    word = op.create_table(
        "catalog_word",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("word", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_word")),
        sa.UniqueConstraint("word", name=op.f("uq_catalog_word_word")),
    )
    op.create_index("ix_catalog_word_revision", "catalog_word", ["revision"], unique=False)
    rev = op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_revision")),
    )
    op.create_table(
        "search_word_watch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("revision", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_word_watch")),
    )
    bind = op.get_bind()
    found: set[str] = set()
    for name, brand, spec in bind.execute(sa.text("SELECT name, brand, spec_text FROM sku")):
        found |= _words(name, brand, spec)
    for (name,) in bind.execute(sa.text("SELECT name FROM category")):
        found |= _words(name)
    if found:
        op.bulk_insert(word, [{"word": w, "revision": 1} for w in sorted(found)])
    op.bulk_insert(rev, [{"id": 1, "epoch": uuid.uuid4().hex, "revision": 1 if found else 0}])


def downgrade() -> None:
    op.drop_table("search_word_watch")
    op.drop_table("catalog_revision")
    op.drop_index("ix_catalog_word_revision", table_name="catalog_word")
    op.drop_table("catalog_word")
    with op.batch_alter_table("sku") as batch_op:
        batch_op.drop_column("brand_en")
