"""The orders screen's search box: one query through the search service (exactly as
`GET /api/v1/search` calls it) combined with the screen's filters, its rows shaped like the
list's rows, each with why it matched. Phones stay masked; a role that may not see a contact
also sees a full phone it typed masked in the explanation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.search import service as search_service
from ordertally.search.errors import InvalidCursor
from ordertally.web.i18n import N_

MAX_QUERY = 200
# Why a result matched: the search's field names, as the screen says them.
FIELD_LABELS: dict[str, str] = {
    "order_no": N_("Order no."),
    "order_no_suffix": N_("End of the order no."),
    "platform_order_id": N_("Platform order id"),
    "waybill_no": N_("Waybill"),
    "payment_id": N_("Payment id"),
    "phone": N_("Phone"),
    "phone_last4": N_("Phone, last four"),
    "phone_masked": N_("Masked phone"),
    "name": N_("Name"),
    "name_pinyin": N_("Name in pinyin"),
    "name_initials": N_("Name initials"),
    "name_pinyin_near": N_("Name, near pinyin"),
    "address": N_("Address"),
    "sku": N_("SKU"),
    "product": N_("Product"),
    "brand": N_("Brand"),
    "brand_pinyin": N_("Brand in pinyin"),
    "category": N_("Category"),
    "date": N_("Order date"),
    "status": N_("Status"),
    "channel": N_("Channel"),
    "warehouse": N_("Warehouse"),
    "carrier": N_("Carrier"),
    "open_exception": N_("Open case"),
}
_DIGITS = re.compile(r"\D")


@dataclass(frozen=True, slots=True)
class Row:
    """A result as the orders table shows it (the index keeps the city, not the province)."""

    order_no: str
    channel: str
    status: str
    customer_name_masked: str
    customer_phone_masked: str
    ship_province: str
    ship_city: str
    total_minor: int
    currency: str
    created_at: datetime
    highlights: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Results:
    rows: list[Row]
    next_cursor: str | None


def mask_phone(term: str) -> str:
    """A typed phone as the screens show phones: 13812345678 -> 138****5678."""
    digits = _DIGITS.sub("", term)
    digits = digits[2:] if len(digits) == 13 and digits.startswith("86") else digits
    if len(digits) < 8:
        return "*" * len(digits)
    return f"{digits[:3]}****{digits[-4:]}"


_PHONE_LIKE = re.compile(r"^\+?\d[\d-]{7,}$")


def masked_query(q: str) -> str:
    """The search box's words with every phone-like word masked: what a page may echo back to
    a role that may not see contacts (the search finds masked phones too)."""
    return " ".join(mask_phone(w) if _PHONE_LIKE.match(w) else w for w in q.split())


def _local_day(moment: datetime | None, *, end: bool) -> str | None:
    """The merchant's day of a bound (an end bound is exclusive: the day before it)."""
    if moment is None:
        return None
    if end:
        moment -= timedelta(microseconds=1)
    return clock.to_local(moment, get_settings().timezone).date().isoformat()


def filters_of(
    status: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    *,
    open_case: bool,
    channels: tuple[str, ...] | None = None,
) -> search_service.Filters:
    """The screen's filters in the search's terms (dates are the merchant's days; `channels`:
    a channel-scoped user's accounts)."""
    return search_service.Filters(
        status=status,
        channel=channel,
        date_from=_local_day(created_from, end=False),
        date_to=_local_day(created_to, end=True),
        open_exception=True if open_case else None,
        channels=channels,
    )


async def search(
    session: AsyncSession,
    q: str,
    filters: search_service.Filters,
    *,
    cursor: str | None,
    limit: int,
    may_see_contact: bool,
    order_ids: list[int] | None = None,
) -> Results:
    """One page of results, newest first. A cursor this screen did not give starts over (bad
    input changes nothing). `order_ids` narrows to those orders (an open case of one type):
    a page may then hold fewer rows, and the cursor still walks the whole result."""
    try:
        page = await search_service.search(session, q, filters, cursor=cursor, limit=limit)
    except InvalidCursor:
        page = await search_service.search(session, q, filters, limit=limit)
    wanted = set(order_ids) if order_ids is not None else None
    rows = []
    for hit in page.hits:
        d = hit.doc
        if wanted is not None and d.order_id not in wanted:
            continue
        highlights = [
            {**h, "term": mask_phone(h["term"])}
            if h["field"] == "phone" and not may_see_contact
            else h
            for h in hit.highlights
        ]
        rows.append(
            Row(
                order_no=d.order_no,
                channel=d.channel,
                status=d.status,
                customer_name_masked=d.customer_name_masked,
                customer_phone_masked=d.customer_phone_masked,
                ship_province="",
                ship_city=d.ship_city,
                total_minor=d.total_minor,
                currency=d.currency,
                created_at=d.created_at,
                highlights=highlights,
            )
        )
    return Results(rows, page.next_cursor)


async def matching_order_nos(
    session: AsyncSession,
    q: str,
    filters: search_service.Filters,
    *,
    cap: int,
    order_ids: list[int] | None = None,
) -> list[str] | None:
    """Every order number the search box's words find with these filters, or None when there
    are more than `cap` (a bulk action over a search picks its orders when it is previewed)."""
    wanted = set(order_ids) if order_ids is not None else None
    found: list[str] = []
    cursor: str | None = None
    while True:
        page = await search_service.search(
            session, q, filters, cursor=cursor, limit=search_service.MAX_LIMIT
        )
        found += [h.doc.order_no for h in page.hits if wanted is None or h.doc.order_id in wanted]
        if len(found) > cap:
            return None
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
