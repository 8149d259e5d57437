"""HTTP routes of the inventory domain."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.catalog import service as catalog_service
from ordertally.core.errors import Forbidden
from ordertally.core.http import database, json_response
from ordertally.idempotency import service as idempotency_service
from ordertally.idempotency.http import run_idempotent
from ordertally.inventory import service
from ordertally.inventory.models import Warehouse
from ordertally.inventory.schemas import (
    MovementIn,
    SimulateIn,
    StockSettingsIn,
    WarehouseIn,
    WarehouseOut,
    WarehousePatch,
)

router = APIRouter(prefix="/api/v1", tags=["inventory"])


def warehouse_doc(w: Warehouse) -> dict[str, Any]:
    """A warehouse's JSON."""
    return {
        "code": w.code,
        "name": w.name,
        "province": w.province,
        "city": w.city,
        "latitude": w.latitude,
        "longitude": w.longitude,
        "priority": w.priority,
        "cost_factor": w.cost_factor,
        "active": w.active,
    }


@router.post("/warehouses", status_code=201, response_model=WarehouseOut, summary="Add a warehouse")
async def create_warehouse(
    request: Request,
    body: WarehouseIn,
    _: Annotated[Principal, Depends(require("inventory.manage"))],
) -> Response:
    """Create a warehouse (409 if the code exists)."""
    async with database(request).transaction() as session:
        warehouse = await service.create_warehouse(session, body.model_dump())
    return json_response(warehouse_doc(warehouse), 201)


@router.get("/warehouses", response_model=list[WarehouseOut], summary="All warehouses")
async def list_warehouses(
    request: Request, _: Annotated[Principal, Depends(require("inventory.read"))]
) -> Response:
    """Every warehouse by code."""
    async with database(request).transaction(write=False) as session:
        warehouses = await service.list_warehouses(session)
    return json_response([warehouse_doc(w) for w in warehouses])


@router.get("/warehouses/{code}", response_model=WarehouseOut, summary="One warehouse")
async def get_warehouse(
    request: Request, code: str, _: Annotated[Principal, Depends(require("inventory.read"))]
) -> Response:
    """A warehouse by code."""
    async with database(request).transaction(write=False) as session:
        warehouse = await service.get_warehouse(session, code)
    return json_response(warehouse_doc(warehouse))


@router.patch("/warehouses/{code}", response_model=WarehouseOut, summary="Change a warehouse")
async def patch_warehouse(
    request: Request,
    code: str,
    body: WarehousePatch,
    _: Annotated[Principal, Depends(require("inventory.manage"))],
) -> Response:
    """Change the given fields only."""
    async with database(request).transaction() as session:
        warehouse = await service.update_warehouse(
            session, code, body.model_dump(exclude_unset=True)
        )
    return json_response(warehouse_doc(warehouse))


@router.post("/stock/movements", status_code=201, summary="Receive, adjust or count stock")
async def stock_movement(
    request: Request,
    body: MovementIn,
    principal: Annotated[Principal, Depends(require("inventory.move"))],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
    """Record a movement in the ledger (replayed, not repeated, for a repeated key); a
    warehouse-scoped caller moves its own warehouses' stock only."""
    if not principal.may_act_for(body.warehouse):
        raise Forbidden(f"warehouse {body.warehouse} is outside this key's scope")

    async def work(session: AsyncSession) -> tuple[int, bytes, dict[str, str]]:
        result = await service.record_movement(
            session,
            warehouse_code=body.warehouse,
            sku=body.sku,
            kind=body.kind,
            quantity=body.quantity,
            reason=body.reason,
            actor=principal.name,
        )
        return 201, orjson.dumps(result), {}

    return await run_idempotent(
        database(request),
        scope=principal.scope,
        key=idempotency_key,
        req_hash=idempotency_service.request_hash(
            "POST", request.url.path, body.model_dump_json().encode()
        ),
        work=work,
    )


@router.get("/stock/{sku}", summary="Stock of a SKU per warehouse and in total")
async def stock_of(
    request: Request, sku: str, _: Annotated[Principal, Depends(require("inventory.read"))]
) -> Response:
    """On hand, reserved, safety stock and available to sell."""
    async with database(request).transaction(write=False) as session:
        view = await service.stock_view(session, sku)
    return json_response(view)


@router.get("/catalog/skus/{code}/availability", summary="Available to sell of a SKU or a bundle")
async def availability_of(
    request: Request, code: str, _: Annotated[Principal, Depends(require("catalog.read"))]
) -> Response:
    """A SKU's available units; a bundle's is the minimum over its components of
    floor(available / units per bundle), with each component's figures."""
    async with database(request).transaction(write=False) as session:
        await catalog_service.get_sku(session, code)
        doc = (await service.availability(session, [code]))[code]
    return json_response(doc)


@router.put("/stock/{sku}/settings", summary="Safety stock and buckets of a SKU in a warehouse")
async def stock_settings(
    request: Request,
    sku: str,
    body: StockSettingsIn,
    principal: Annotated[Principal, Depends(require("inventory.manage"))],
) -> Response:
    """Set safety stock, or spread a hot SKU over more bucket rows."""
    if not principal.may_act_for(body.warehouse):
        raise Forbidden(f"warehouse {body.warehouse} is outside this key's scope")
    async with database(request).transaction() as session:
        await service.configure_stock(
            session,
            warehouse_code=body.warehouse,
            sku=sku,
            safety_stock=body.safety_stock,
            buckets=body.buckets,
        )
        view = await service.stock_view(session, sku)
    return json_response(view)


@router.post("/allocation/simulate", summary="Where would this order ship from (dry run)")
async def simulate(
    request: Request,
    body: SimulateIn,
    _: Annotated[Principal, Depends(require("inventory.read"))],
) -> Response:
    """The routing decision and its explanation, without reserving anything."""
    demand: dict[str, int] = {}
    for line in body.lines:
        demand[line.sku] = demand.get(line.sku, 0) + line.quantity
    async with database(request).transaction(write=False) as session:
        plan = await service.simulate(session, body.shipping_province, demand)
    codes = {c["warehouse"] for c in plan.explanation["chosen"]}
    return json_response({"feasible": plan.ok, "warehouses": sorted(codes), **plan.explanation})
