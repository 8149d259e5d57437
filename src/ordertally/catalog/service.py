"""Catalogue use cases: SKUs (with barcode check digits, change history and bundles),
categories, the facts an order line snapshots, and the expansion of bundles into components
that inventory reserves. Sits below orders and inventory: it imports neither."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import events as catalog_events  # noqa: F401  (registers the schema)
from ordertally.catalog import repository
from ordertally.catalog.errors import (
    BarcodeTaken,
    CategoryExists,
    CategoryNotFound,
    InactiveSku,
    InvalidBarcode,
    InvalidBundle,
    InvalidCategory,
    SkuExists,
    SkuNotFound,
    UnknownSku,
)
from ordertally.catalog.models import Category, Sku
from ordertally.core import clock
from ordertally.core.db import Database, Read
from ordertally.events import outbox

# Fields of a SKU a person may set (and the history records).
SKU_FIELDS = (
    "name",
    "name_en",
    "spec",
    "spec_text",
    "barcode",
    "unit",
    "weight_g",
    "length_mm",
    "width_mm",
    "height_mm",
    "category_id",
    "brand",
    "brand_en",
    "cost_minor",
    "min_price_minor",
    "currency",
    "image_ref",
    "active",
)
MAX_COMPONENTS = 50
# Fields whose change changes what an order for the SKU is found by (its words, brand, category).
SEARCH_FIELDS = frozenset({"name", "name_en", "spec_text", "brand", "brand_en", "category_id"})
# A catalogue word: a run of 2-16 Chinese characters (ASCII words segment by themselves).
WORD_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,16}")
RUN_ANY = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}")
EVENT_SKUS = 500
_FIELD_SET = frozenset(SKU_FIELDS)
# Every column of a new SKU row, so that multi-row INSERTs share one statement.
_NEW_ROW: dict[str, Any] = {
    **dict.fromkeys(SKU_FIELDS),
    "name_en": "",
    "spec_text": "",
    "unit": "件",
    "active": True,
    "is_bundle": False,
}


# --- barcodes ----------------------------------------------------------------------------------


def gtin_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of a GTIN body (all digits but the last)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def check_barcode(barcode: str) -> str:
    """The barcode if it is a valid EAN-13 (69… in China), UPC-A or EAN-8; else InvalidBarcode."""
    if not barcode.isascii() or not barcode.isdigit() or len(barcode) not in (8, 12, 13):
        raise InvalidBarcode(
            f"barcode {barcode!r} must be 8 (EAN-8), 12 (UPC-A) or 13 (EAN-13) digits",
            barcode=barcode,
        )
    if gtin_check_digit(barcode[:-1]) != int(barcode[-1]):
        raise InvalidBarcode(
            f"barcode {barcode!r} has a wrong check digit "
            f"(expected {gtin_check_digit(barcode[:-1])})",
            barcode=barcode,
        )
    return barcode


# --- words and change events ------------------------------------------------------------------


def catalog_words(*texts: str | None) -> set[str]:
    """The catalogue words of some texts (names, brands, specs): each run of 2-16 Chinese
    characters; the search segmenter takes them as user-dictionary words."""
    found: set[str] = set()
    for t in texts:
        if t:
            found.update(WORD_RUN.findall(unicodedata.normalize("NFKC", t)))
    return found


def _sku_words(values: dict[str, Any]) -> set[str]:
    return catalog_words(values.get("name"), values.get("brand"), values.get("spec_text"))


async def _announce(
    session: AsyncSession,
    *,
    skus: Iterable[str] = (),
    categories: Iterable[str] = (),
    words: Iterable[str] = (),
) -> None:
    """In the caller's transaction: append the words the catalogue has not used before (moving
    the word revision: search's dictionary watcher re-indexes the orders they change), and
    publish CatalogChanged for existing SKUs and categories whose words, brand or category
    changed (search re-indexes their orders). New SKUs have no orders: no event."""
    candidates = sorted(set(words))
    new = sorted(set(candidates) - await repository.existing_words(session, candidates))
    if new:
        revision = await repository.bump_word_revision(session)
        await repository.add_words(session, new, revision)
    codes, cats = sorted(set(skus)), sorted(set(categories))
    rounds = max(-(-len(codes) // EVENT_SKUS), 1 if cats else 0)
    for i in range(rounds):
        await outbox.publish(
            session,
            "CatalogChanged",
            {
                "skus": codes[i * EVENT_SKUS : (i + 1) * EVENT_SKUS],
                "categories": cats if i == 0 else [],
            },
            aggregate_type="catalog",
            aggregate_id="catalog",
        )


async def word_revision(session: AsyncSession) -> tuple[str | None, int]:
    """(epoch, revision) of the catalogue's word list: one read of one row."""
    return await repository.word_revision(session)


async def word_revision_now(db: Database) -> tuple[str | None, int]:
    """(epoch, revision) of the catalogue's word list, read on its own (no session)."""
    return await repository.word_revision_now(db)


async def words_between(session: AsyncSession, after: int, upto: int) -> list[str]:
    """The catalogue words first used after revision `after`, up to `upto`."""
    return await repository.words_between(session, after, upto)


# --- categories --------------------------------------------------------------------------------


async def create_category(session: AsyncSession, values: dict[str, Any]) -> Category:
    """Create a category under an optional parent (by code)."""
    if await repository.category_by_code(session, values["code"]) is not None:
        raise CategoryExists(f"category {values['code']} exists", category=values["code"])
    parent = values.pop("parent", None)
    parent_id = (await get_category(session, parent)).id if parent else None
    await repository.add_category(
        session, {**values, "parent_id": parent_id, "created_at": clock.now()}
    )
    await _announce(session, words=catalog_words(values.get("name")))
    return await get_category(session, values["code"])


async def get_category(session: AsyncSession, code: str) -> Category:
    """A category by code, or CategoryNotFound."""
    category = await repository.category_by_code(session, code)
    if category is None:
        raise CategoryNotFound(f"category {code} does not exist", category=code)
    return category


async def list_categories(session: AsyncSession) -> list[Category]:
    """Every category."""
    return await repository.categories(session)


async def update_category(session: AsyncSession, code: str, values: dict[str, Any]) -> Category:
    """Rename or move a category (never under itself or its descendants)."""
    category = await get_category(session, code)
    if "parent" in values:
        parent = values.pop("parent")
        if parent is None:
            values["parent_id"] = None
        else:
            target = await get_category(session, parent)
            walk: Category | None = target
            while walk is not None:
                if walk.id == category.id:
                    raise InvalidCategory(f"category {code} cannot move under {parent}")
                walk = (
                    await repository.category_by_id(session, walk.parent_id)
                    if walk.parent_id
                    else None
                )
            values["parent_id"] = target.id
    if values:
        await repository.update_category(session, category.id, values)
        if {"name", "name_en", "parent_id"} & set(values):
            await _announce(session, categories=[code], words=catalog_words(values.get("name")))
    return await get_category(session, code)


async def delete_category(session: AsyncSession, code: str) -> None:
    """Delete a category no SKU and no child category uses."""
    category = await get_category(session, code)
    if await repository.category_in_use(session, category.id):
        raise InvalidCategory(f"category {code} has SKUs or child categories", category=code)
    await repository.delete_category(session, category.id)


async def subtree_ids(session: AsyncSession, code: str) -> list[int]:
    """The ids of a category and of every category below it."""
    root = await get_category(session, code)
    children: dict[int | None, list[int]] = defaultdict(list)
    for c in await repository.categories(session):
        children[c.parent_id].append(c.id)
    ids, stack = [], [root.id]
    while stack:
        current = stack.pop()
        ids.append(current)
        stack.extend(children.get(current, []))
    return sorted(ids)


# --- SKUs --------------------------------------------------------------------------------------


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {"from": before.get(k), "to": v} for k, v in sorted(after.items()) if before.get(k) != v
    }


def sku_values(sku: Sku) -> dict[str, Any]:
    """The settable fields of a SKU."""
    return {f: getattr(sku, f) for f in SKU_FIELDS}


async def _resolve(session: AsyncSession, values: dict[str, Any], code: str) -> dict[str, Any]:
    """Check barcode and category of new values; returns them with category_id."""
    if "category" in values:
        category = values.pop("category")
        values["category_id"] = (await get_category(session, category)).id if category else None
    if values.get("barcode"):
        check_barcode(values["barcode"])
        holder = (await repository.barcodes_taken(session, [values["barcode"]])).get(
            values["barcode"]
        )
        if holder is not None and holder != code:
            raise BarcodeTaken(
                f"barcode {values['barcode']} belongs to {holder}",
                barcode=values["barcode"],
                sku=holder,
            )
    return values


async def _check_components(
    session: AsyncSession, bundle: str, components: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not components:
        raise InvalidBundle(f"bundle {bundle} needs at least one component", sku=bundle)
    if len(components) > MAX_COMPONENTS:
        raise InvalidBundle(f"a bundle has at most {MAX_COMPONENTS} components", sku=bundle)
    merged: dict[str, int] = defaultdict(int)
    for c in components:
        if c["quantity"] <= 0:
            raise InvalidBundle("component quantities are positive", sku=bundle)
        merged[c["sku"]] += int(c["quantity"])
    if bundle in merged:
        raise InvalidBundle(f"bundle {bundle} cannot contain itself", sku=bundle)
    found = {s.code: s for s in await repository.skus_by_codes(session, sorted(merged))}
    missing = sorted(set(merged) - set(found))
    if missing:
        raise UnknownSku(f"unknown SKU code {', '.join(missing)}", skus=missing)
    nested = sorted(code for code, s in found.items() if s.is_bundle)
    if nested:
        raise InvalidBundle(
            f"a bundle cannot contain a bundle: {', '.join(nested)}", sku=bundle, skus=nested
        )
    return [{"bundle": bundle, "component": c, "quantity": q} for c, q in sorted(merged.items())]


async def create_sku(
    session: AsyncSession,
    values: dict[str, Any],
    actor: str,
    components: list[dict[str, Any]] | None = None,
) -> Sku:
    """Create a SKU (a bundle when `components` are given), recording it in the history."""
    code = values["code"]
    if await repository.sku_by_code(session, code) is not None:
        raise SkuExists(f"SKU {code} exists", sku=code)
    values = await _resolve(session, dict(values), code)
    rows = await _check_components(session, code, components) if components is not None else []
    now = clock.now()
    row = {
        "name_en": "",
        "spec_text": "",
        "unit": "件",
        "active": True,
        **values,
        "is_bundle": components is not None,
        "updated_at": now,
    }
    await repository.add_skus(session, [row])
    if rows:
        await repository.set_components(session, code, rows)
    created = {k: v for k, v in row.items() if k in SKU_FIELDS and v is not None}
    if rows:
        created["components"] = [[r["component"], r["quantity"]] for r in rows]
    await repository.add_changes(
        session,
        [{"sku": code, "actor": actor, "action": "create", "changes": created, "changed_at": now}],
    )
    await _announce(session, words=_sku_words(row))
    return await get_sku(session, code)


async def add_skus(
    session: AsyncSession, rows: list[dict[str, Any]], actor: str, *, announce: bool = True
) -> int:
    """Create many plain SKUs in two multi-row INSERTs (setup, seeds and imports); the caller
    has checked codes, barcodes and categories (see `import_rows` for a checked import).
    `announce=False`: the caller records the new words itself, last."""
    now = clock.now()
    full = [{**_NEW_ROW, **r, "is_bundle": False, "updated_at": now} for r in rows]
    await repository.add_skus(session, full)
    await repository.add_changes(
        session,
        [
            {
                "sku": r["code"],
                "actor": actor,
                "action": "create",
                "changes": {k: v for k, v in r.items() if k in _FIELD_SET and v is not None},
                "changed_at": now,
            }
            for r in full
        ],
    )
    if announce:
        await _announce(session, words=set().union(*(_sku_words(r) for r in full)))
    return len(full)


@dataclass(slots=True)
class ImportOutcome:
    """What `import_rows` did with one chunk: codes created, updated, unchanged, and the rows
    refused (line number, code, reason)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, str, str]] | None = None


async def import_rows(
    session: AsyncSession, rows: list[tuple[int, dict[str, Any]]], actor: str
) -> ImportOutcome:
    """Create or update SKUs from (line number, values) rows already checked for shape: one
    read each for existing codes, barcode holders and categories, then multi-row INSERTs and
    UPDATEs with history rows. Rows naming an unknown category or component, a taken barcode or
    a bundle change are refused with their reason; the others are stored."""
    outcome = ImportOutcome(refused=[])
    assert outcome.refused is not None
    codes = [v["code"] for _, v in rows]
    existing = {s.code: s for s in await repository.skus_by_codes(session, sorted(set(codes)))}
    categories = {c.code: c.id for c in await repository.categories(session)}
    barcodes = await repository.barcodes_taken(
        session, sorted({v["barcode"] for _, v in rows if v.get("barcode")})
    )
    boms = await components_of(
        session, [v["code"] for _, v in rows if v.get("components") and v["code"] in existing]
    )
    new: list[dict[str, Any]] = []
    bundles: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []
    changed: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    now = clock.now()
    for line, raw in rows:
        values = dict(raw)
        code = values["code"]
        components = values.pop("components", None)
        category = values.pop("category", None)
        if category:
            if category not in categories:
                outcome.refused.append((line, code, f"unknown category {category}"))
                continue
            values["category_id"] = categories[category]
        barcode = values.get("barcode")
        if barcode and barcodes.get(barcode, code) != code:
            outcome.refused.append(
                (line, code, f"barcode {barcode} belongs to {barcodes[barcode]}")
            )
            continue
        if barcode:
            barcodes[barcode] = code
        sku = existing.get(code)
        if sku is None and components:
            bundles.append((line, values, components))
            continue
        if sku is None:
            new.append(values)
            continue
        if components and sorted((c["sku"], c["quantity"]) for c in components) != boms.get(
            code, []
        ):
            outcome.refused.append((line, code, "bundle components change through the API"))
            continue
        diff = _changes(sku_values(sku), values)
        diff.pop("code", None)
        if not diff:
            outcome.unchanged += 1
            continue
        changed.append(
            {"id": sku.id, **{k: v for k, v in values.items() if k != "code"}, "updated_at": now}
        )
        history.append(
            {"sku": code, "actor": actor, "action": "import", "changes": diff, "changed_at": now}
        )
    if new:
        outcome.created += await add_skus(session, new, actor, announce=False)
    if changed:
        await repository.update_skus(session, changed)
        await repository.add_changes(session, history)
        outcome.updated += len(changed)
    if bundles:
        outcome.created += await _import_bundles(session, bundles, actor, outcome.refused)
    # Last, once every SKU row of the chunk is written: the word revision's row lock is taken
    # after the SKU rows' locks, as in every other catalogue write (no lock-order deadlock).
    refused = {line for line, _, _ in outcome.refused}
    stored = [*new, *changed, *(values for line, values, _ in bundles if line not in refused)]
    await _announce(
        session,
        skus=[h["sku"] for h in history if SEARCH_FIELDS & set(h["changes"])],
        words=set().union(*(_sku_words(r) for r in stored)),
    )
    return outcome


async def _import_bundles(
    session: AsyncSession,
    bundles: list[tuple[int, dict[str, Any], list[dict[str, Any]]]],
    actor: str,
    refused: list[tuple[int, str, str]],
) -> int:
    """New bundles of an import chunk: one read of their components, then multi-row INSERTs
    of the bundle rows, their components and their history."""
    wanted = sorted({c["sku"] for _, _, comps in bundles for c in comps})
    found = {s.code: s.is_bundle for s in await repository.skus_by_codes(session, wanted)}
    skus: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    now = clock.now()
    for line, values, comps in bundles:
        code = values["code"]
        merged: dict[str, int] = defaultdict(int)
        for c in comps:
            merged[c["sku"]] += int(c["quantity"])
        missing = sorted(c for c in merged if c not in found)
        nested = sorted(c for c in merged if found.get(c))
        if code in merged:
            refused.append((line, code, f"bundle {code} cannot contain itself"))
        elif missing:
            refused.append((line, code, f"unknown SKU code {', '.join(missing)}"))
        elif nested:
            refused.append((line, code, f"a bundle cannot contain a bundle: {', '.join(nested)}"))
        else:
            row = {**_NEW_ROW, **values}
            skus.append({**row, "is_bundle": True, "updated_at": now})
            parts.extend(
                {"bundle": code, "component": c, "quantity": q} for c, q in sorted(merged.items())
            )
            changes = {k: v for k, v in row.items() if k in SKU_FIELDS and v is not None}
            changes["components"] = [[c, q] for c, q in sorted(merged.items())]
            history.append(
                {
                    "sku": code,
                    "actor": actor,
                    "action": "create",
                    "changes": changes,
                    "changed_at": now,
                }
            )
    if skus:
        await repository.add_skus(session, skus)
        await repository.add_components(session, parts)
        await repository.add_changes(session, history)
    return len(skus)


async def export_page(
    session: AsyncSession, after: str | None, limit: int
) -> list[tuple[Sku, list[tuple[str, int]]]]:
    """A page of every SKU by code with its components (bundles), for exports."""
    page = await repository.all_skus(session, after, limit)
    bom = await components_of(session, [s.code for s in page if s.is_bundle])
    return [(s, bom.get(s.code, [])) for s in page]


async def update_sku(
    session: AsyncSession,
    code: str,
    values: dict[str, Any],
    actor: str,
    components: list[dict[str, Any]] | None = None,
) -> Sku:
    """Change the given fields of a SKU (and a bundle's components); history records the diff."""
    sku = await get_sku(session, code)
    before = sku_values(sku)
    values = await _resolve(session, dict(values), code)
    changes = _changes(before, values)
    if components is not None:
        if not sku.is_bundle:
            raise InvalidBundle(f"{code} is not a bundle", sku=code)
        rows = await _check_components(session, code, components)
        old = await components_of(session, [code])
        new = [(r["component"], r["quantity"]) for r in rows]
        if old.get(code, []) != new:
            await repository.set_components(session, code, rows)
            changes["components"] = {
                "from": [list(c) for c in old.get(code, [])],
                "to": [list(c) for c in new],
            }
    if changes:
        now = clock.now()
        await repository.update_sku(session, sku.id, {**values, "updated_at": now})
        await repository.add_changes(
            session,
            [
                {
                    "sku": code,
                    "actor": actor,
                    "action": "update",
                    "changes": changes,
                    "changed_at": now,
                }
            ],
        )
        if SEARCH_FIELDS & set(changes):
            await _announce(session, skus=[code], words=_sku_words({**before, **values}))
    return await get_sku(session, code)


async def deactivate_sku(session: AsyncSession, code: str, actor: str) -> Sku:
    """Stop selling a SKU (kept for history; orders and receipts refuse it from now on)."""
    return await update_sku(session, code, {"active": False}, actor)


async def get_sku(session: AsyncSession, code: str) -> Sku:
    """A SKU by code, or SkuNotFound."""
    sku = await repository.sku_by_code(session, code)
    if sku is None:
        raise SkuNotFound(f"SKU {code} does not exist", sku=code)
    return sku


async def sku_by_barcode(session: AsyncSession, barcode: str) -> Sku:
    """The SKU a scanned barcode names, or SkuNotFound."""
    sku = await repository.sku_by_barcode(session, barcode)
    if sku is None:
        raise SkuNotFound(f"no SKU has barcode {barcode}", barcode=barcode)
    return sku


async def list_skus(
    session: AsyncSession,
    *,
    after: str | None = None,
    limit: int = 50,
    category: str | None = None,
    brand: str | None = None,
    active: bool | None = None,
    prefix: str | None = None,
) -> list[Sku]:
    """A page of SKUs by code, after the cursor `after`, with filters (a category includes its
    descendants; `prefix` matches the start of the code or of a name)."""
    category_ids = await subtree_ids(session, category) if category else None
    return await repository.list_skus(
        session,
        after=after,
        limit=limit,
        category_ids=category_ids,
        brand=brand,
        active=active,
        prefix=prefix,
    )


async def history(session: AsyncSession, code: str) -> list[dict[str, Any]]:
    """A SKU's change history, oldest first."""
    await get_sku(session, code)
    return [
        {
            "actor": c.actor,
            "action": c.action,
            "changes": c.changes,
            "changed_at": c.changed_at,
        }
        for c in await repository.changes_of(session, code)
    ]


async def category_codes(session: AsyncSession) -> dict[int, str]:
    """id -> code of every category."""
    return {c.id: c.code for c in await repository.categories(session)}


# --- what other domains ask --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineFacts:
    """What an order line keeps of its SKU at order time."""

    name: str
    name_en: str
    spec: str
    barcode: str | None
    active: bool
    is_bundle: bool = False


async def line_facts(session: AsyncSession, codes: Iterable[str]) -> dict[str, LineFacts]:
    """code -> facts of the known codes among these, in one query per 500 codes."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    return _facts(await repository.line_facts(session, wanted))


def line_facts_read(session: AsyncSession, codes: Iterable[str]) -> Read[dict[str, LineFacts]]:
    """`line_facts` as a read that can ride with others (`read_together`)."""
    wanted = sorted(set(codes))
    if not wanted:
        return Read.known({})
    return repository.line_facts_read(session, wanted).map(_facts)


def _facts(rows: Iterable[Any]) -> dict[str, LineFacts]:
    return {
        code: LineFacts(name, name_en, spec_text, barcode, bool(active), bool(is_bundle))
        for code, name, name_en, spec_text, barcode, active, is_bundle in rows
    }


async def known_codes(session: AsyncSession, codes: Iterable[str]) -> set[str]:
    """Which of these codes the catalogue knows."""
    wanted = sorted(set(codes))
    return await repository.known_codes(session, wanted) if wanted else set()


async def require_sellable(session: AsyncSession, code: str) -> None:
    """Refuse a code that cannot be sold: unknown (UnknownSku) or deactivated (InactiveSku).
    A bundle is sellable (its components are reserved)."""
    sku = await repository.sku_by_code(session, code)
    if sku is None:
        raise UnknownSku(f"unknown SKU code {code}", skus=[code])
    if not sku.active:
        raise InactiveSku(f"SKU {code} is no longer sold", skus=[code])


async def require_stockable(session: AsyncSession, code: str) -> None:
    """Refuse a code stock cannot be recorded for: unknown (UnknownSku) or a bundle."""
    sku = await repository.sku_by_code(session, code)
    if sku is None:
        raise UnknownSku(f"unknown SKU code {code}", skus=[code])
    if sku.is_bundle:
        raise InvalidBundle(
            f"{code} is a bundle: it has no stock of its own, receive its components", sku=code
        )


async def components_of(
    session: AsyncSession, codes: Iterable[str]
) -> dict[str, list[tuple[str, int]]]:
    """bundle code -> [(component code, units per bundle)] for the bundles among these codes,
    in one query per 500 codes; plain SKUs are absent."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row in await repository.components_of(session, wanted):
        found[row.bundle].append((row.component, row.quantity))
    return dict(found)


def expand(demand: dict[str, int], bom: dict[str, list[tuple[str, int]]]) -> dict[str, int]:
    """Units per stocked code of a demand (sku -> units), bundles replaced by components."""
    out: dict[str, int] = defaultdict(int)
    for code, units in demand.items():
        for component, per in bom.get(code, [(code, 1)]):
            out[component] += units * per
    return dict(out)


def bundle_availability(
    bom: list[tuple[str, int]], available: dict[str, int]
) -> tuple[int, list[dict[str, Any]]]:
    """A bundle's availability: min over components of floor(available / units per bundle)."""
    parts: list[dict[str, Any]] = [
        {
            "sku": c,
            "quantity": q,
            "available": available.get(c, 0),
            "bundles": max(available.get(c, 0), 0) // q,
        }
        for c, q in bom
    ]
    return (min(int(p["bundles"]) for p in parts) if parts else 0), parts


@dataclass(frozen=True, slots=True)
class SearchFacts:
    """What search indexes of a SKU from the live catalogue (not the line snapshot): its
    brand (zh, en) and the names (zh, en) of its category and the categories above it."""

    brands: tuple[str, ...]
    categories: tuple[str, ...]


async def search_facts(session: AsyncSession, codes: Iterable[str]) -> dict[str, SearchFacts]:
    """code -> brand and category names of the known codes among these (one query per 500
    codes, and one for the category tree)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await repository.search_facts(session, wanted)
    tree: dict[int, Category] = {}
    if any(r.category_id for r in rows):
        tree = {c.id: c for c in await repository.categories(session)}
    found: dict[str, SearchFacts] = {}
    for r in rows:
        names: list[str] = []
        walk = tree.get(r.category_id) if r.category_id else None
        seen: set[int] = set()
        while walk is not None and walk.id not in seen:
            seen.add(walk.id)
            names.extend(n for n in (walk.name, walk.name_en) if n)
            walk = tree.get(walk.parent_id) if walk.parent_id else None
        brands = tuple(b for b in (r.brand, r.brand_en) if b)
        found[r.code] = SearchFacts(brands, tuple(dict.fromkeys(names)))
    return found


async def codes_in_categories(session: AsyncSession, categories: Iterable[str]) -> list[str]:
    """The codes of the SKUs in these categories and every category below them."""
    ids: set[int] = set()
    for code in set(categories):
        if await repository.category_by_code(session, code) is not None:
            ids.update(await subtree_ids(session, code))
    return await repository.codes_in_categories(session, sorted(ids)) if ids else []


async def codes_using_words(session: AsyncSession, words: Iterable[str]) -> list[str]:
    """The codes of the SKUs whose name, spec or brand contains one of these words (a page of
    2,000 SKUs per query; each text's Chinese runs are cut into every substring of 2-16
    characters and looked up, so the cost does not grow with the number of words)."""
    wanted = set(words)
    found: list[str] = []
    after: str | None = None
    while wanted:
        page = await repository.sku_texts(session, after, 2_000)
        if not page:
            break
        for row in page:
            if any(_has_any(run, wanted) for run in _runs(row.name, row.spec_text, row.brand)):
                found.append(row.code)
        after = page[-1].code
    return found


def _runs(*texts: str | None) -> list[str]:
    out: list[str] = []
    for t in texts:
        if t:
            out.extend(RUN_ANY.findall(unicodedata.normalize("NFKC", t)))
    return out


def _has_any(run: str, words: set[str]) -> bool:
    n = len(run)
    return any(run[i : i + k] in words for i in range(n - 1) for k in range(2, min(16, n - i) + 1))
