"""Tables of the search domain: one index row per order, and the merchant's synonyms.

`search_doc.tokens` holds blind tokens only (search/tokens.py): no name, phone, address or id
in clear. The engine's own structures are hand-written per dialect in the migration and kept
out of autogenerate by their `hand_` prefix: on PostgreSQL a stored `hand_tsv` tsvector column
with a GIN index, on SQLite the FTS5 table `hand_search_fts` over `tokens`, kept by triggers.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, UtcDateTime


class SearchDoc(Base):
    """An order as search finds and lists it: its tokens, the filter columns and the masked
    summary a result shows (the same masked forms the order's JSON shows)."""

    __tablename__ = "search_doc"
    __table_args__ = (Index("ix_search_doc_placed_date", "placed_date"),)

    order_id: Mapped[int] = mapped_column(
        ForeignKey("sales_order.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    order_no: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    placed_date: Mapped[str] = mapped_column(String(10))  # merchant-local YYYY-MM-DD
    has_open_exception: Mapped[bool] = mapped_column(Boolean)
    total_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    customer_name_masked: Mapped[str] = mapped_column(String(64))
    customer_phone_masked: Mapped[str] = mapped_column(String(32))
    ship_city: Mapped[str] = mapped_column(String(64))
    tokens: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The newest event applied, and when: indexed_at - source_at is the index lag.
    source_at: Mapped[datetime] = mapped_column(UtcDateTime)
    indexed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SearchDirty(Base):
    """An order whose searchable data changed and whose index row is not yet rewritten: one
    row per business transaction that published an event search reads (written with it, by
    the publish hook), deleted by the search lane that indexed the order after the row was
    committed. Append-only for writers: inserting never waits for a lane (ADR 0032, session 14).
    No foreign key: an order deleted since is simply skipped."""

    __tablename__ = "search_dirty"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId)
    # The change's event time: the index lag is counted from it.
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class SearchSynonym(Base):
    """Two words the merchant says mean the same (iphone ~ 苹果手机); applied at query time,
    both ways, so editing one needs no re-index."""

    __tablename__ = "search_synonym"
    __table_args__ = (UniqueConstraint("term", "synonym"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    term: Mapped[str] = mapped_column(String(64))
    synonym: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SearchWordWatch(Base):
    """One row: the catalogue word revision (and epoch) whose words the index has taken in;
    the dictionary watcher re-indexes the orders that new words change, then moves it on."""

    __tablename__ = "search_word_watch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32))
    revision: Mapped[int] = mapped_column(BigId)
