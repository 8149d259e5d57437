"""Exchange rates over HTTP: list them, record one with the moment it takes effect."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core.http import database
from ordertally.core.settings import get_settings
from ordertally.orders import fx
from ordertally.orders.models import FxRate

router = APIRouter(prefix="/api/v1/fx-rates", tags=["fx"])


class FxRateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    rate: Annotated[str, Field(pattern=r"^\d{1,10}(\.\d{1,8})?$")]
    effective_from: datetime | None = None  # now when omitted


class FxRateOut(BaseModel):
    currency: str
    base_currency: str
    rate: str
    effective_from: datetime
    created_by: str
    created_at: datetime


def _out(row: FxRate) -> dict[str, Any]:
    return {
        "currency": row.currency,
        "base_currency": row.base_currency,
        "rate": row.rate,
        "effective_from": row.effective_from,
        "created_by": row.created_by,
        "created_at": row.created_at,
    }


@router.get("", response_model=list[FxRateOut], summary="Recorded exchange rates")
async def list_rates(
    request: Request, _: Annotated[Principal, Depends(require("orders.read"))]
) -> list[dict[str, Any]]:
    """Every recorded rate to the base currency, newest first per currency."""
    async with database(request).transaction(write=False) as session:
        return [_out(r) for r in await fx.list_rates(session, get_settings())]


@router.post("", response_model=FxRateOut, status_code=201, summary="Record an exchange rate")
async def set_rate(
    request: Request,
    body: FxRateIn,
    principal: Annotated[Principal, Depends(require("fx.manage"))],
) -> dict[str, Any]:
    """Record a rate to the base currency from `effective_from` (now when omitted); orders
    created from then on lock it."""
    async with database(request).transaction() as session:
        row = await fx.set_rate(
            session,
            get_settings(),
            body.currency,
            body.rate,
            effective_from=body.effective_from,
            by=principal.name,
        )
        return _out(row)
