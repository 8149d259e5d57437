"""The product master: categories (a tree), SKUs (the merchant's codes; `sku` is the one SKU
table, read by inventory and orders), bundle components, the change history of SKUs, and the
catalogue's words (the search segmenter's user dictionary) with their revision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId, JsonDoc, UtcDateTime


class Category(Base):
    __tablename__ = "category"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("category.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Sku(Base):
    """A sellable code: a product (stocked) or a bundle of products (not stocked)."""

    __tablename__ = "sku"
    __table_args__ = (
        CheckConstraint("weight_g IS NULL OR weight_g >= 0", name="weight_non_negative"),
        CheckConstraint("cost_minor IS NULL OR cost_minor >= 0", name="cost_non_negative"),
        CheckConstraint(
            "min_price_minor IS NULL OR min_price_minor >= 0", name="min_price_non_negative"
        ),
        Index("ix_sku_barcode", "barcode", unique=True),
        Index("ix_sku_category_id", "category_id"),
        Index("ix_sku_brand", "brand"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    spec_text: Mapped[str] = mapped_column(String(200), server_default=text("''"))
    barcode: Mapped[str | None] = mapped_column(String(14), nullable=True)
    unit: Mapped[str] = mapped_column(String(16), server_default=text("'件'"))
    weight_g: Mapped[int | None] = mapped_column(Integer, nullable=True)
    length_mm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    width_mm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height_mm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    category_id: Mapped[int | None] = mapped_column(ForeignKey("category.id"), nullable=True)
    brand: Mapped[str | None] = mapped_column(String(100), nullable=True)
    brand_en: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cost_minor: Mapped[int | None] = mapped_column(BigId, nullable=True)
    min_price_minor: Mapped[int | None] = mapped_column(BigId, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    image_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    is_bundle: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class BundleComponent(Base):
    """`quantity` units of `component` in one unit of `bundle` (never itself a bundle)."""

    __tablename__ = "bundle_component"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    bundle: Mapped[str] = mapped_column(
        String(64), ForeignKey("sku.code", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(
        String(64), ForeignKey("sku.code"), primary_key=True, index=True
    )
    quantity: Mapped[int] = mapped_column(Integer)


class SkuChange(Base):
    """Who changed which fields of a SKU when, from what to what."""

    __tablename__ = "sku_change"
    __table_args__ = (Index("ix_sku_change_sku_at", "sku", "changed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))
    changes: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CatalogWord(Base):
    """A word the catalogue has ever used (a Chinese run of a SKU's name, brand or spec, or of a
    category's name), appended at the revision that first used it and never removed: order lines
    keep old names, so old words must still segment the same way (ADR 0029, addendum)."""

    __tablename__ = "catalog_word"
    __table_args__ = (Index("ix_catalog_word_revision", "revision"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    word: Mapped[str] = mapped_column(String(64), unique=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class CatalogRevision(Base):
    """One row: the catalogue's word revision, moved (under its row lock, so revisions commit
    in order) by every transaction that adds words, and the epoch of this database's word list
    (a new epoch when the row is created again: a restored or emptied database)."""

    __tablename__ = "catalog_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32))
    revision: Mapped[int] = mapped_column(BigInteger)
