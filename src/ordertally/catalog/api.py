"""HTTP routes of the catalog domain: SKUs, bundles, barcode lookup and categories."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.catalog import service
from ordertally.catalog.models import Category, Sku
from ordertally.catalog.schemas import CategoryIn, CategoryPatch, SkuIn, SkuPatch, sku_fields
from ordertally.core.http import database, json_response

router = APIRouter(prefix="/api/v1/catalog", tags=["catalog"])


async def sku_doc(session: AsyncSession, sku: Sku, categories: dict[int, str]) -> dict[str, Any]:
    """A SKU's JSON (a bundle's with its components)."""
    doc: dict[str, Any] = {
        "code": sku.code,
        "name": sku.name,
        "name_en": sku.name_en,
        "spec": sku.spec or {},
        "spec_text": sku.spec_text,
        "barcode": sku.barcode,
        "unit": sku.unit,
        "weight_g": sku.weight_g,
        "dimensions_mm": [sku.length_mm, sku.width_mm, sku.height_mm],
        "category": categories.get(sku.category_id) if sku.category_id else None,
        "brand": sku.brand,
        "brand_en": sku.brand_en,
        "cost_minor": sku.cost_minor,
        "min_price_minor": sku.min_price_minor,
        "currency": sku.currency,
        "image_ref": sku.image_ref,
        "active": sku.active,
        "is_bundle": sku.is_bundle,
    }
    if sku.is_bundle:
        bom = await service.components_of(session, [sku.code])
        doc["components"] = [{"sku": c, "quantity": q} for c, q in bom.get(sku.code, [])]
    return doc


def category_doc(c: Category, codes: dict[int, str]) -> dict[str, Any]:
    """A category's JSON."""
    return {
        "code": c.code,
        "name": c.name,
        "name_en": c.name_en,
        "parent": codes.get(c.parent_id) if c.parent_id else None,
    }


@router.post("/skus", status_code=201, summary="Add a SKU or a bundle")
async def create_sku(
    request: Request,
    body: SkuIn,
    principal: Annotated[Principal, Depends(require("catalog.manage"))],
) -> Response:
    """Create a SKU (409 if the code or the barcode is taken); `components` makes a bundle."""
    values, components = sku_fields(body, exclude_unset=False)
    async with database(request).transaction() as session:
        sku = await service.create_sku(session, values, principal.name, components)
        doc = await sku_doc(session, sku, await service.category_codes(session))
    return json_response(doc, 201)


@router.get("/skus", summary="SKUs by code, filtered, keyset-paginated")
async def list_skus(
    request: Request,
    _: Annotated[Principal, Depends(require("catalog.read"))],
    barcode: Annotated[str | None, Query(pattern=r"^[0-9]{8,14}$")] = None,
    category: str | None = None,
    brand: str | None = None,
    active: bool | None = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """A page of SKUs after the cursor; `barcode` looks one SKU up (404 when none has it)."""
    async with database(request).transaction(write=False) as session:
        categories = await service.category_codes(session)
        if barcode is not None:
            sku = await service.sku_by_barcode(session, barcode)
            return json_response(await sku_doc(session, sku, categories))
        skus = await service.list_skus(
            session,
            after=after,
            limit=limit,
            category=category,
            brand=brand,
            active=active,
            prefix=q,
        )
        items = [await sku_doc(session, s, categories) for s in skus]
    return json_response(
        {"items": items, "next_after": skus[-1].code if len(skus) == limit else None}
    )


@router.get("/barcode/{barcode}", summary="The SKU a scanned barcode names")
async def by_barcode(
    request: Request, barcode: str, _: Annotated[Principal, Depends(require("catalog.read"))]
) -> Response:
    """Barcode lookup (404 when no SKU has it)."""
    async with database(request).transaction(write=False) as session:
        sku = await service.sku_by_barcode(session, barcode)
        doc = await sku_doc(session, sku, await service.category_codes(session))
    return json_response(doc)


@router.get("/skus/{code}", summary="One SKU")
async def get_sku(
    request: Request, code: str, _: Annotated[Principal, Depends(require("catalog.read"))]
) -> Response:
    """A SKU by code."""
    async with database(request).transaction(write=False) as session:
        sku = await service.get_sku(session, code)
        doc = await sku_doc(session, sku, await service.category_codes(session))
    return json_response(doc)


@router.get("/skus/{code}/history", summary="Who changed what of a SKU, when")
async def sku_history(
    request: Request, code: str, _: Annotated[Principal, Depends(require("catalog.read"))]
) -> Response:
    """The change history, oldest first."""
    async with database(request).transaction(write=False) as session:
        rows = await service.history(session, code)
    return json_response(rows)


@router.patch("/skus/{code}", summary="Change a SKU")
async def patch_sku(
    request: Request,
    code: str,
    body: SkuPatch,
    principal: Annotated[Principal, Depends(require("catalog.manage"))],
) -> Response:
    """Change the given fields only (recorded in the history)."""
    values, components = sku_fields(body, exclude_unset=True)
    async with database(request).transaction() as session:
        sku = await service.update_sku(session, code, values, principal.name, components)
        doc = await sku_doc(session, sku, await service.category_codes(session))
    return json_response(doc)


@router.post("/skus/{code}/deactivate", summary="Stop selling a SKU")
async def deactivate_sku(
    request: Request,
    code: str,
    principal: Annotated[Principal, Depends(require("catalog.manage"))],
) -> Response:
    """Mark a SKU inactive: new orders and receipts refuse it."""
    async with database(request).transaction() as session:
        sku = await service.deactivate_sku(session, code, principal.name)
        doc = await sku_doc(session, sku, await service.category_codes(session))
    return json_response(doc)


@router.post("/categories", status_code=201, summary="Add a category")
async def create_category(
    request: Request,
    body: CategoryIn,
    _: Annotated[Principal, Depends(require("catalog.manage"))],
) -> Response:
    """Create a category under an optional parent."""
    async with database(request).transaction() as session:
        category = await service.create_category(session, body.model_dump())
        doc = category_doc(category, await service.category_codes(session))
    return json_response(doc, 201)


@router.get("/categories", summary="Every category")
async def list_categories(
    request: Request, _: Annotated[Principal, Depends(require("catalog.read"))]
) -> Response:
    """The category tree as a flat list by code (each with its parent)."""
    async with database(request).transaction(write=False) as session:
        categories = await service.list_categories(session)
    codes = {c.id: c.code for c in categories}
    return json_response([category_doc(c, codes) for c in categories])


@router.patch("/categories/{code}", summary="Rename or move a category")
async def patch_category(
    request: Request,
    code: str,
    body: CategoryPatch,
    _: Annotated[Principal, Depends(require("catalog.manage"))],
) -> Response:
    """Change the given fields only."""
    async with database(request).transaction() as session:
        category = await service.update_category(session, code, body.model_dump(exclude_unset=True))
        doc = category_doc(category, await service.category_codes(session))
    return json_response(doc)


@router.delete("/categories/{code}", status_code=204, summary="Delete an unused category")
async def delete_category(
    request: Request, code: str, _: Annotated[Principal, Depends(require("catalog.manage"))]
) -> Response:
    """Delete a category without SKUs or children."""
    async with database(request).transaction() as session:
        await service.delete_category(session, code)
    return Response(status_code=204)
