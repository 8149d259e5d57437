"""What several benches set up the same way: one well-stocked warehouse of catalogue SKUs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

WAREHOUSE = "WH-BENCH"


async def stocked_warehouse(session: AsyncSession, skus: list[str]) -> None:
    """Warehouse WH-BENCH (Suzhou) holding 100,000,000 units of each SKU, created in the
    catalogue first."""
    from ordertally.catalog import service as catalog_service
    from ordertally.inventory import service as inventory_service

    await inventory_service.create_warehouse(
        session,
        {
            "code": WAREHOUSE,
            "name": "基准仓",
            "province": "江苏省",
            "city": "苏州市",
            "latitude": None,
            "longitude": None,
            "priority": 100,
            "cost_factor": 1.0,
            "active": True,
        },
    )
    await catalog_service.add_skus(
        session, [{"code": c, "name": c, "name_en": c} for c in skus], "bench"
    )
    for sku in skus:
        await inventory_service.record_movement(
            session,
            warehouse_code=WAREHOUSE,
            sku=sku,
            kind="receipt",
            quantity=100_000_000,
            reason="bench",
            actor="bench",
        )
