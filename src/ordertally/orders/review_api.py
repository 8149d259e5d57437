"""HTTP routes of order review (审单): the queue per stage; passing, holding and editing an
order waiting in review (each a row of the transition table)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core.http import client_ip, database, json_response
from ordertally.orders import review
from ordertally.orders.schemas import ReviewEditIn, ReviewHoldIn

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
        stage = await review.pass_review(
            session, order_no, principal.role, principal.name, client_ip(request)
        )
    return json_response({"order_no": order_no, "stage": stage})


@router.post("/orders/{order_no}/review/hold", summary="Hold an order waiting in review")
async def hold_review(
    request: Request,
    order_no: str,
    body: ReviewHoldIn,
    principal: Annotated[Principal, Depends(require("orders.review"))],
) -> Response:
    """The order stays in the queue, marked held with the reason, until it is passed; a
    second hold is refused (409)."""
    async with database(request).transaction() as session:
        case_id = await review.hold_review(
            session, order_no, principal.role, principal.name, body.reason, client_ip(request)
        )
    return json_response({"order_no": order_no, "held": True, "case_id": case_id})


@router.post("/orders/{order_no}/review/edit", summary="Edit an order waiting in review")
async def edit_review(
    request: Request,
    order_no: str,
    body: ReviewEditIn,
    principal: Annotated[Principal, Depends(require("orders.review"))],
) -> Response:
    """Change the shipping address, the seller's remark or the warehouse (its units move
    there; `inventory.insufficient` when it does not hold them, and nothing
    changes). The order stays in review."""
    edit = review.ReviewEdit(
        address=body.shipping_address.model_dump() if body.shipping_address else None,
        remark=body.remark,
        warehouse=body.warehouse,
    )
    async with database(request).transaction() as session:
        changed = await review.edit_review(
            session, order_no, principal.role, principal.name, edit, client_ip(request)
        )
    return json_response({"order_no": order_no, "changed": changed})
