"""HTTP routes of order review (审单): the queue per stage and passing an order's stage."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core.http import database, json_response
from ordertally.orders import review

router = APIRouter(prefix="/api/v1", tags=["orders"])


@router.get("/review/queue", summary="Orders waiting in review, with the reasons")
async def review_queue(
    request: Request,
    _: Annotated[Principal, Depends(require("orders.review"))],
    stage: Literal["cs", "finance"] = "cs",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Customer service's queue (`cs`) or finance's (`finance`), oldest first."""
    async with database(request).transaction(write=False) as session:
        items = await review.queue(session, stage, limit)
    return json_response({"items": items})


@router.post("/orders/{order_no}/review/pass", summary="Pass an order's review stage")
async def pass_review(
    request: Request,
    order_no: str,
    principal: Annotated[Principal, Depends(require("orders.review"))],
) -> Response:
    """cs passes the first stage; finance the second when a rule asked for it. The order
    allocates on the next sweep once nothing else holds it."""
    async with database(request).transaction() as session:
        stage = await review.pass_review(session, order_no, principal.role, principal.name)
    return json_response({"order_no": order_no, "stage": stage})
