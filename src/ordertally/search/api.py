"""HTTP routes of the search domain: one search box with filters, and the merchant's synonyms.
Personal data appears masked only, as in the order's JSON. Thin; one transaction per request."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.http import database, json_response
from ordertally.core.money import format_minor
from ordertally.orders.state_machine import STATUSES
from ordertally.search import dictionary, service
from ordertally.search.errors import InvalidFilter
from ordertally.search.models import SearchSynonym
from ordertally.search.repository import Filters

router = APIRouter(prefix="/api/v1", tags=["search"])

Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class SynonymIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    term: Word
    synonym: Word


def hit_doc(hit: service.Hit, role: str) -> dict[str, Any]:
    """One result: the order's summary (masked), and which term matched which field."""
    d = hit.doc
    return {
        "order_no": d.order_no,
        "channel": d.channel,
        "status": d.status,
        "placed_date": d.placed_date,
        "total": format_minor(d.total_minor, d.currency),
        "currency": d.currency,
        "customer_name": d.customer_name_masked,
        "customer_phone": d.customer_phone_masked,
        "ship_city": d.ship_city,
        "has_open_exception": d.has_open_exception,
        "created_at": clock.as_utc(d.created_at).isoformat().replace("+00:00", "Z"),
        "highlights": hit.highlights,
    }


def synonym_doc(s: SearchSynonym) -> dict[str, Any]:
    """A synonym pair."""
    return {"id": s.id, "term": s.term, "synonym": s.synonym, "created_by": s.created_by}


@router.get("/search", summary="Find orders by whatever the caller says, with filters")
async def search_orders(
    request: Request,
    principal: Annotated[Principal, Depends(require("search.read"))],
    q: Annotated[str, Query(max_length=200)] = "",
    status: Annotated[str | None, Query(max_length=32)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    warehouse: Annotated[str | None, Query(max_length=32)] = None,
    carrier: Annotated[str | None, Query(max_length=32)] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    has_open_exception: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 20,
) -> Response:
    """`q` mixes names (汉字, pinyin, initials), phones (full, masked, last four), dates
    (20260125, 1月25日, 昨天), order numbers and their last 6+ characters, platform ids,
    waybills, payment ids, SKUs, product and address words; every term must match. Dates are
    the merchant's local dates. Newest first; page with `next_cursor`."""
    if status is not None and status not in STATUSES:
        raise InvalidFilter(f"status must be one of {', '.join(STATUSES)}", field="status")
    if date_from and date_to and date_from > date_to:
        raise InvalidFilter("date_from is after date_to", field="date_from")
    filters = Filters(
        status=status,
        channel=channel,
        date_from=date_from.isoformat() if date_from else None,
        date_to=date_to.isoformat() if date_to else None,
        open_exception=has_open_exception,
        channels=principal.channels,
    )
    db = database(request)
    # The catalogue's word revision (how to cut the query) from a read the concurrent searches
    # share; then the search itself, one statement. Reads only, none needing another's
    # snapshot: no BEGIN/COMMIT round trips (Database.reads).
    words = await dictionary.current(db)
    async with db.reads() as session:
        page = await service.search(
            session,
            q,
            filters,
            warehouse=warehouse,
            carrier=carrier,
            cursor=cursor,
            limit=limit,
            words=words,
        )
    return json_response(
        {
            "query": [{"text": t.text, "kind": t.kind, "words": list(t.words)} for t in page.terms],
            "items": [hit_doc(h, principal.role) for h in page.hits],
            "next_cursor": page.next_cursor,
        }
    )


@router.get("/search/synonyms", summary="The merchant's search synonyms")
async def list_synonyms(
    request: Request, _: Annotated[Principal, Depends(require("search.read"))]
) -> Response:
    """Every pair; each works both ways."""
    async with database(request).transaction(write=False) as session:
        rows = await service.list_synonyms(session)
    return json_response({"items": [synonym_doc(s) for s in rows]})


@router.post("/search/synonyms", summary="Say two words mean the same to search")
async def add_synonym(
    request: Request,
    body: SynonymIn,
    principal: Annotated[Principal, Depends(require("search.manage"))],
) -> Response:
    """201 when new, 200 when the pair was already known (in either order)."""
    async with database(request).transaction() as session:
        row, created = await service.add_synonym(session, body.term, body.synonym, principal.name)
    return json_response(synonym_doc(row), status=201 if created else 200)


@router.delete("/search/synonyms/{synonym_id}", status_code=204, summary="Forget a synonym")
async def delete_synonym(
    request: Request,
    synonym_id: int,
    _: Annotated[Principal, Depends(require("search.manage"))],
) -> Response:
    """404 when there is no such pair."""
    async with database(request).transaction() as session:
        await service.delete_synonym(session, synonym_id)
    return Response(status_code=204)
