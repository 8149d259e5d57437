"""HTTP routes of the customers domain: a customer's profile, lookup by phone or tag, tags.
Personal data appears masked only. Thin; one transaction per request."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.money import format_minor
from ordertally.customers import service
from ordertally.customers.models import Customer

router = APIRouter(prefix="/api/v1", tags=["customers"])

JSON = "application/json"
Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"^[^\s,]+$")
]


class TagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: Tag


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def summary_doc(c: Customer) -> dict[str, Any]:
    """A customer in a list."""
    return {"id": c.id, "name": c.name_masked, "phone": c.phone_masked}


def customer_doc(v: service.CustomerView) -> dict[str, Any]:
    """A customer's JSON: masked identities, the profile's figures, tags, flags and orders (for
    a channel-scoped caller, what `service.view` narrowed)."""
    p = v.profile
    profile = None
    if p is not None:
        cur = p["currency"]
        profile = {
            "orders_90d": p["orders_90d"],
            "spend_90d": format_minor(p["spend_90d_minor"], cur),
            "average_order_value_90d": format_minor(p["aov_90d_minor"], cur),
            "currency": cur,
            "returns_30d": p["returns_30d"],
            "channels": p["channels"],
            "favourite_categories": p["favourite_categories"],
            "risk_flags": p["risk_flags"],
            "last_order_at": _iso(p["last_order_at"]),
            "computed_at": _iso(p["computed_at"]),
        }
    return {
        "id": v.customer.id,
        "merged_from": v.requested_id if v.requested_id != v.customer.id else None,
        "name": v.customer.name_masked,
        "phone": v.customer.phone_masked,
        "identities": [
            {"kind": i.kind, "platform": i.platform or None, "masked": i.masked}
            for i in v.identities
        ],
        "profile": profile,
        "tags": v.tags,
        "flags": [
            {
                "kind": f.kind,
                "order_no": f.detail.get("order_no"),
                "case_id": f.case_id,
                "created_at": _iso(f.created_at),
            }
            for f in v.flags
        ],
        "orders": [
            {
                "order_no": o.order_no,
                "channel": o.channel,
                "placed_at": _iso(o.placed_at),
                "amount": format_minor(o.amount_minor, o.currency),
                "currency": o.currency,
                "status": o.status,
                "skus": o.skus,
                "categories": o.categories,
            }
            for o in v.orders
        ],
        "created_at": _iso(v.customer.created_at),
    }


@router.get("/customers/{customer_id}", summary="A customer's profile, identities and orders")
async def get_customer(
    request: Request,
    customer_id: int,
    principal: Annotated[Principal, Depends(require("customers.read"))],
) -> Response:
    """One customer; an id merged into another answers with the surviving customer."""
    async with _db(request).transaction(write=False) as session:
        found = await service.view(session, customer_id, channels=principal.channels)
    return _json(customer_doc(found))


@router.get("/customers", summary="Find customers by phone or by tag")
async def find_customers(
    request: Request,
    principal: Annotated[Principal, Depends(require("customers.read"))],
    phone: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
) -> Response:
    """Exactly one of `phone` (matched through its blind index) or `tag` (a channel-scoped
    caller finds only buyers with an order from its accounts)."""
    async with _db(request).transaction(write=False) as session:
        found = await service.lookup(session, phone=phone, tag=tag, channels=principal.channels)
    return _json({"items": [summary_doc(c) for c in found]})


@router.post("/customers/{customer_id}/tags", summary="Tag a customer")
async def add_tag(
    request: Request,
    customer_id: int,
    body: TagIn,
    principal: Annotated[Principal, Depends(require("customers.manage"))],
) -> Response:
    """Add a tag (201 when new, 200 when the customer already had it)."""
    async with _db(request).transaction() as session:
        await service.check_in_scope(session, customer_id, principal.channels)
        tags, created = await service.add_tag(session, customer_id, body.tag, principal.name)
    return _json({"tags": tags}, 201 if created else 200)


@router.delete(
    "/customers/{customer_id}/tags/{tag}", status_code=204, summary="Remove a customer's tag"
)
async def remove_tag(
    request: Request,
    customer_id: int,
    tag: str,
    principal: Annotated[Principal, Depends(require("customers.manage"))],
) -> Response:
    """Remove a tag; 404 when the customer does not carry it."""
    async with _db(request).transaction() as session:
        await service.check_in_scope(session, customer_id, principal.channels)
        await service.remove_tag(session, customer_id, tag)
    return Response(status_code=204)
