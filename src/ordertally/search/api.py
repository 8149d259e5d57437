"""HTTP routes of the search domain: one search box with filters, and the merchant's synonyms.
Personal data appears masked only, as in the order's JSON. Thin; one transaction per request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope, Send

from ordertally.auth.api import authorize, require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.db import Database
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


def row_doc(row: Any, highlights: list[dict[str, str]]) -> dict[str, Any]:
    """`hit_doc` of a plain result row (the columns of the search's result, by position)."""
    (
        _,
        order_no,
        channel,
        status,
        placed_date,
        has_open_exception,
        total_minor,
        currency,
        customer_name,
        customer_phone,
        ship_city,
        created_at,
        _,
    ) = row
    return {
        "order_no": order_no,
        "channel": channel,
        "status": status,
        "placed_date": placed_date,
        "total": format_minor(total_minor, currency),
        "currency": currency,
        "customer_name": customer_name,
        "customer_phone": customer_phone,
        "ship_city": ship_city,
        "has_open_exception": has_open_exception,
        "created_at": clock.as_utc(created_at).isoformat().replace("+00:00", "Z"),
        "highlights": highlights,
    }


def synonym_doc(s: SearchSynonym) -> dict[str, Any]:
    """A synonym pair."""
    return {"id": s.id, "term": s.term, "synonym": s.synonym, "created_by": s.created_by}


# The string parameters of a search and the longest each may be.
TEXT_PARAMS = {"q": 200, "status": 32, "channel": 32, "warehouse": 32, "carrier": 32, "cursor": 200}
_PLAIN_LIMIT = re.compile(r"[1-9][0-9]{0,2}")
_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PLAIN_BOOL = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class SearchArgs:
    """The parameters of one search, validated."""

    q: str = ""
    status: str | None = None
    channel: str | None = None
    warehouse: str | None = None
    carrier: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    has_open_exception: bool | None = None
    cursor: str | None = None
    limit: int = 20


def plain_args(query_string: bytes) -> SearchArgs | None:
    """The parameters of a search request when every one is in a form its declaration on the
    route takes as it is (a string within its length, `limit` as plain digits in range, ISO
    dates, true or false), read from the query string as FastAPI reads it (the last of a
    repeated name); None when any is not: FastAPI then validates the request as declared (and
    answers 422 when it is invalid)."""
    params = QueryParams(query_string)
    found: dict[str, Any] = {}
    for name, longest in TEXT_PARAMS.items():
        text = params.get(name)
        if text is not None:
            if len(text) > longest:
                return None
            found[name] = text
    for name in ("date_from", "date_to"):
        text = params.get(name)
        if text is not None:
            if not _PLAIN_DATE.fullmatch(text):
                return None
            try:
                found[name] = date.fromisoformat(text)
            except ValueError:
                return None
    text = params.get("has_open_exception")
    if text is not None:
        if text not in _PLAIN_BOOL:
            return None
        found["has_open_exception"] = _PLAIN_BOOL[text]
    text = params.get("limit")
    if text is not None:
        if not _PLAIN_LIMIT.fullmatch(text) or int(text) > service.MAX_LIMIT:
            return None
        found["limit"] = int(text)
    return SearchArgs(**found)


async def answer(app: Any, principal: Principal, args: SearchArgs) -> Response:
    """The search's answer to an authorised caller (both ways a request arrives)."""
    if args.status is not None and args.status not in STATUSES:
        raise InvalidFilter(f"status must be one of {', '.join(STATUSES)}", field="status")
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise InvalidFilter("date_from is after date_to", field="date_from")
    filters = Filters(
        status=args.status,
        channel=args.channel,
        date_from=args.date_from.isoformat() if args.date_from else None,
        date_to=args.date_to.isoformat() if args.date_to else None,
        open_exception=args.has_open_exception,
        channels=principal.channels,
    )
    db: Database = app.state.db
    # The catalogue's word revision (how to cut the query) from a read the concurrent searches
    # share; then the search itself, one statement outside any unit of work (no BEGIN/COMMIT
    # round trips, no session: plain rows).
    words = await dictionary.current(db)
    found = await service.search_rows(
        db,
        args.q,
        filters,
        words=words,
        warehouse=args.warehouse,
        carrier=args.carrier,
        cursor=args.cursor,
        limit=args.limit,
    )
    return json_response(
        {
            "query": [
                {"text": t.text, "kind": t.kind, "words": list(t.words)} for t in found.terms
            ],
            "items": [row_doc(r, h) for r, h in zip(found.rows, found.highlights, strict=True)],
            "next_cursor": found.next_cursor,
        }
    )


class SearchRoute(APIRoute):
    """`GET /api/v1/search`, the hottest read: a request whose parameters are all plain
    (`plain_args`) is answered by plain calls — the caller authorised as `require` does, then
    `answer` — without FastAPI's dependency solving and per-parameter validation; any other
    request goes through FastAPI as the route declares it, to the same `answer`, so a valid one
    gets the same bytes and an invalid one the same 422 problem. Errors raised either way reach
    the app's exception handlers (ADR 0032, addendum session 14)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            args = plain_args(scope["query_string"])
            if args is not None:
                app = scope["app"]
                authorization = Headers(scope=scope).get("authorization")
                principal = await authorize(app, authorization, "search.read")
                response = await answer(app, principal, args)
                await response(scope, receive, send)
                return
        await super().handle(scope, receive, send)


async def search_orders(
    request: Request,
    principal: Annotated[Principal, Depends(require("search.read"))],
    q: Annotated[str, Query(max_length=TEXT_PARAMS["q"])] = "",
    status: Annotated[str | None, Query(max_length=TEXT_PARAMS["status"])] = None,
    channel: Annotated[str | None, Query(max_length=TEXT_PARAMS["channel"])] = None,
    warehouse: Annotated[str | None, Query(max_length=TEXT_PARAMS["warehouse"])] = None,
    carrier: Annotated[str | None, Query(max_length=TEXT_PARAMS["carrier"])] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    has_open_exception: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=TEXT_PARAMS["cursor"])] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 20,
) -> Response:
    """`q` mixes names (汉字, pinyin, initials), phones (full, masked, last four), dates
    (20260125, 1月25日, 昨天), order numbers and their last 6+ characters, platform ids,
    waybills, payment ids, SKUs, product and address words; every term must match. Dates are
    the merchant's local dates. Newest first; page with `next_cursor`."""
    args = SearchArgs(
        q,
        status,
        channel,
        warehouse,
        carrier,
        date_from,
        date_to,
        has_open_exception,
        cursor,
        limit,
    )
    return await answer(request.app, principal, args)


router.add_api_route(
    "/search",
    search_orders,
    methods=["GET"],
    summary="Find orders by whatever the caller says, with filters",
    route_class_override=SearchRoute,
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
