"""Builders for channel tests: accounts and canonical orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ordertally.channels import service
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)
from ordertally.channels.schemas import AccountCreate
from ordertally.core.db import Database

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


async def make_account(
    db: Database, code: str = "shop_a", platform: str = "shopify", **extra: Any
) -> None:
    body: dict[str, Any] = {"code": code, "platform": platform, "name": f"{code} 店铺", **extra}
    async with db.transaction() as session:
        await service.create_account(session, AccountCreate.model_validate(body))


def canonical(
    external_id: str,
    *,
    status: PlatformStatus = PlatformStatus.PAID,
    updated: timedelta = timedelta(0),
    sku: str = "TEA-LJ-250",
    quantity: int = 1,
    phone: str = "13812345678",
    province: str = "上海市",
    line1: str = "世纪大道1号",
    platform: str = "shopify",
    buyer_id: str = "",
    currency: str = "CNY",
) -> CanonicalOrder:
    return CanonicalOrder(
        platform=platform,
        external_id=external_id,
        status=status,
        currency=currency,
        lines=(CanonicalLine(sku, quantity, 5990, title="龙井", category="tea"),),
        buyer_name="张三",
        buyer_phone=phone,
        address=CanonicalAddress("张三", phone, province, "上海市", "浦东新区", line1, "200120"),
        placed_at=T0,
        updated_at=T0 + updated,
        paid_at=T0 if status is not PlatformStatus.UNPAID else None,
        buyer_platform_id=buyer_id,
        raw={"id": external_id},
    )
