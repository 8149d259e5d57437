"""Every query of the catalog domain."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog.models import (
    BundleComponent,
    CatalogRevision,
    CatalogWord,
    Category,
    Sku,
    SkuChange,
)
from ordertally.core.db import Database, Read, table_of, upsert_insert

_CHUNK = 500


# --- categories --------------------------------------------------------------------------------


async def add_category(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert a category."""
    await session.execute(insert(Category).values(**values))


async def category_by_code(session: AsyncSession, code: str) -> Category | None:
    """A category by code."""
    return await session.scalar(
        select(Category).where(Category.code == code).execution_options(populate_existing=True)
    )


async def category_by_id(session: AsyncSession, category_id: int) -> Category | None:
    """A category by id."""
    return await session.get(Category, category_id)


async def categories(session: AsyncSession) -> list[Category]:
    """Every category by code."""
    return list((await session.scalars(select(Category).order_by(Category.code))).all())


async def update_category(session: AsyncSession, category_id: int, values: dict[str, Any]) -> None:
    """Change a category."""
    await session.execute(update(Category).where(Category.id == category_id).values(**values))


async def category_in_use(session: AsyncSession, category_id: int) -> bool:
    """Whether a SKU or a child category points at this category."""
    sku = await session.scalar(select(Sku.id).where(Sku.category_id == category_id).limit(1))
    child = await session.scalar(
        select(Category.id).where(Category.parent_id == category_id).limit(1)
    )
    return sku is not None or child is not None


async def delete_category(session: AsyncSession, category_id: int) -> None:
    """Delete a category."""
    await session.execute(delete(Category).where(Category.id == category_id))


# --- SKUs --------------------------------------------------------------------------------------


async def add_skus(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert SKUs (one executemany; every row has the same keys)."""
    if rows:
        await session.execute(insert(table_of(Sku)), rows)


async def sku_by_code(session: AsyncSession, code: str) -> Sku | None:
    """A SKU by code, read fresh."""
    return await session.scalar(
        select(Sku).where(Sku.code == code).execution_options(populate_existing=True)
    )


async def sku_by_barcode(session: AsyncSession, barcode: str) -> Sku | None:
    """A SKU by barcode."""
    return await session.scalar(
        select(Sku).where(Sku.barcode == barcode).execution_options(populate_existing=True)
    )


async def skus_by_codes(session: AsyncSession, codes: list[str]) -> list[Sku]:
    """The SKUs among these codes (500 codes per query)."""
    found: list[Sku] = []
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        found.extend((await session.scalars(select(Sku).where(Sku.code.in_(part)))).all())
    return found


async def line_facts(session: AsyncSession, codes: list[str]) -> list[Any]:
    """(code, name, name_en, spec_text, barcode, active, is_bundle) of these codes: one query
    per 500."""
    rows: list[Any] = []
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        rows.extend(
            (
                await session.execute(
                    select(
                        Sku.code,
                        Sku.name,
                        Sku.name_en,
                        Sku.spec_text,
                        Sku.barcode,
                        Sku.active,
                        Sku.is_bundle,
                    ).where(Sku.code.in_(part))
                )
            ).all()
        )
    return rows


def line_facts_read(session: AsyncSession, codes: list[str]) -> Read[list[Any]]:
    """`line_facts` as a `read_together` read (PostgreSQL, one statement text whatever the
    number of codes): rows of (code, name, name_en, spec_text, barcode, active, is_bundle)."""
    return Read(
        "SELECT code, name, name_en, spec_text, barcode, active, is_bundle FROM sku"
        " WHERE code = ANY(CAST($1 AS text[]))",
        [codes],
        list,
        lambda: line_facts(session, codes),
    )


async def known_codes(session: AsyncSession, codes: list[str]) -> set[str]:
    """Which of these codes have a SKU row (500 codes per query)."""
    found: set[str] = set()
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        found.update(await session.scalars(select(Sku.code).where(Sku.code.in_(part))))
    return found


async def barcodes_taken(session: AsyncSession, barcodes: list[str]) -> dict[str, str]:
    """barcode -> code of the SKUs that hold these barcodes."""
    found: dict[str, str] = {}
    for start in range(0, len(barcodes), _CHUNK):
        part = barcodes[start : start + _CHUNK]
        rows = await session.execute(select(Sku.barcode, Sku.code).where(Sku.barcode.in_(part)))
        found.update({str(b): str(c) for b, c in rows.all()})
    return found


async def update_sku(session: AsyncSession, sku_id: int, values: dict[str, Any]) -> None:
    """Change a SKU."""
    await session.execute(update(Sku).where(Sku.id == sku_id).values(**values))


async def update_skus(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Change many SKUs by primary key (bulk UPDATE; each row carries `id`)."""
    if rows:
        await session.execute(update(Sku), rows)


async def list_skus(
    session: AsyncSession,
    *,
    after: str | None,
    limit: int,
    category_ids: list[int] | None,
    brand: str | None,
    active: bool | None,
    prefix: str | None,
) -> list[Sku]:
    """SKUs by code after `after` (keyset), filtered."""
    stmt = select(Sku).order_by(Sku.code).limit(limit)
    if after is not None:
        stmt = stmt.where(Sku.code > after)
    if category_ids is not None:
        stmt = stmt.where(Sku.category_id.in_(category_ids))
    if brand is not None:
        stmt = stmt.where(Sku.brand == brand)
    if active is not None:
        stmt = stmt.where(Sku.active.is_(active))
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = escaped + "%"
        stmt = stmt.where(
            Sku.code.like(pattern, escape="\\")
            | Sku.name.like(pattern, escape="\\")
            | func.lower(Sku.name_en).like(pattern.lower(), escape="\\")
        )
    return list((await session.scalars(stmt)).all())


async def all_skus(session: AsyncSession, after: str | None, limit: int) -> list[Sku]:
    """A page of every SKU by code (exports)."""
    stmt = select(Sku).order_by(Sku.code).limit(limit)
    if after is not None:
        stmt = stmt.where(Sku.code > after)
    return list((await session.scalars(stmt)).all())


# --- bundles -----------------------------------------------------------------------------------


async def components_of(session: AsyncSession, bundles: list[str]) -> list[BundleComponent]:
    """The component rows of these bundle codes (500 codes per query)."""
    found: list[BundleComponent] = []
    for start in range(0, len(bundles), _CHUNK):
        part = bundles[start : start + _CHUNK]
        found.extend(
            (
                await session.scalars(
                    select(BundleComponent)
                    .where(BundleComponent.bundle.in_(part))
                    .order_by(BundleComponent.bundle, BundleComponent.component)
                )
            ).all()
        )
    return found


async def bundles_among(session: AsyncSession, codes: list[str]) -> set[str]:
    """Which of these codes are bundles."""
    found: set[str] = set()
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        found.update(
            await session.scalars(select(Sku.code).where(Sku.code.in_(part), Sku.is_bundle))
        )
    return found


async def used_in_bundles(session: AsyncSession, code: str) -> list[str]:
    """The bundles that contain this code."""
    rows = await session.scalars(
        select(BundleComponent.bundle).where(BundleComponent.component == code)
    )
    return sorted(rows.all())


async def set_components(session: AsyncSession, bundle: str, rows: list[dict[str, Any]]) -> None:
    """Replace a bundle's components."""
    await session.execute(delete(BundleComponent).where(BundleComponent.bundle == bundle))
    if rows:
        await session.execute(insert(BundleComponent), rows)


async def add_components(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert bundle component rows (multi-row)."""
    if rows:
        await session.execute(insert(BundleComponent), rows)


# --- history -----------------------------------------------------------------------------------


async def add_changes(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append change-history rows (one executemany)."""
    if rows:
        await session.execute(insert(table_of(SkuChange)), rows)


async def changes_of(session: AsyncSession, code: str) -> list[SkuChange]:
    """A SKU's history, oldest first."""
    return list(
        (
            await session.scalars(
                select(SkuChange).where(SkuChange.sku == code).order_by(SkuChange.id)
            )
        ).all()
    )


# --- the catalogue's words (the search segmenter's user dictionary) ----------------------------


async def existing_words(session: AsyncSession, words: list[str]) -> set[str]:
    """Which of these words the catalogue already has (500 per query)."""
    found: set[str] = set()
    for start in range(0, len(words), _CHUNK):
        part = words[start : start + _CHUNK]
        found.update(
            await session.scalars(select(CatalogWord.word).where(CatalogWord.word.in_(part)))
        )
    return found


async def bump_word_revision(session: AsyncSession) -> int:
    """Move the word revision on and return it; the row stays locked until commit, so
    transactions that add words commit in revision order (a reader that sees revision R has
    every word of every revision up to R)."""
    statement = upsert_insert(session, CatalogRevision).values(
        id=1, epoch=uuid.uuid4().hex, revision=1
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"revision": CatalogRevision.revision + 1}
        )
    )
    value = await session.scalar(select(CatalogRevision.revision).where(CatalogRevision.id == 1))
    return int(value or 0)


async def add_words(session: AsyncSession, words: list[str], revision: int) -> None:
    """Append words at a revision (a word another transaction added meanwhile is kept as is)."""
    for start in range(0, len(words), _CHUNK):
        part = words[start : start + _CHUNK]
        statement = upsert_insert(session, CatalogWord).values(
            [{"word": w, "revision": revision} for w in part]
        )
        await session.execute(statement.on_conflict_do_nothing(index_elements=["word"]))


_WORD_REVISION = select(
    table_of(CatalogRevision).c.epoch, table_of(CatalogRevision).c.revision
).where(table_of(CatalogRevision).c.id == 1)


async def word_revision(session: AsyncSession) -> tuple[str | None, int]:
    """(epoch, revision) of the word list; (None, 0) before any word."""
    # Core, not the ORM: search reads it before every query it tokenises.
    connection = await session.connection()
    row = (await connection.execute(_WORD_REVISION)).first()
    return (None, 0) if row is None else (str(row[0]), int(row[1]))


async def word_revision_now(db: Database) -> tuple[str | None, int]:
    """(epoch, revision) of the word list read on its own, outside any unit of work (on
    PostgreSQL one statement through the driver: the search request's shared read)."""
    if db.is_sqlite:
        async with db.reads() as session:
            return await word_revision(session)
    rows = await db.fetch("SELECT epoch, revision FROM catalog_revision WHERE id = 1")
    return (None, 0) if not rows else (str(rows[0][0]), int(rows[0][1]))


async def words_between(session: AsyncSession, after: int, upto: int) -> list[str]:
    """The words of revisions after `after` up to `upto`, in no particular order (the
    segmenter takes them in any order to the same result)."""
    rows = await session.scalars(
        select(CatalogWord.word).where(CatalogWord.revision > after, CatalogWord.revision <= upto)
    )
    return list(rows.all())


async def search_facts(session: AsyncSession, codes: list[str]) -> list[Any]:
    """(code, brand, brand_en, category_id) of these codes: one query per 500."""
    rows: list[Any] = []
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        rows.extend(
            (
                await session.execute(
                    select(Sku.code, Sku.brand, Sku.brand_en, Sku.category_id).where(
                        Sku.code.in_(part)
                    )
                )
            ).all()
        )
    return rows


async def codes_in_categories(session: AsyncSession, category_ids: list[int]) -> list[str]:
    """The codes of the SKUs in these categories."""
    found: list[str] = []
    for start in range(0, len(category_ids), _CHUNK):
        part = category_ids[start : start + _CHUNK]
        found.extend(await session.scalars(select(Sku.code).where(Sku.category_id.in_(part))))
    return sorted(found)


async def sku_texts(session: AsyncSession, after: str | None, limit: int) -> list[Any]:
    """(code, name, name_en, spec_text, brand, brand_en) of a page of SKUs by code."""
    stmt = (
        select(Sku.code, Sku.name, Sku.name_en, Sku.spec_text, Sku.brand, Sku.brand_en)
        .order_by(Sku.code)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Sku.code > after)
    return list((await session.execute(stmt)).all())
