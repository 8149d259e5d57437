"""Listing manual payment requests (补单): the pending ones a second finance user can decide,
newest first, by state, in pages."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.payments import manual as manual_service
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio


async def _request(db: Database, order_no: str, by: str) -> int:
    async with db.transaction() as session:
        manual = await manual_service.request_manual(
            session,
            order_no,
            reference=f"ICBC-{order_no}",
            amount="159.70",
            paid_at=clock.now() - timedelta(hours=1),
            reason="bank transfer, ticket 4411",
            requested_by=by,
        )
    return manual.id


async def test_pending_requests_are_listed_newest_first_and_decided_ones_by_state(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given three requests by two finance users, one of them rejected
    orders = [await make_order(db, external_id=f"M-{i}") for i in range(3)]
    ids = [await _request(db, o.order_no, "fin-a" if i else "fin-b") for i, o in enumerate(orders)]
    async with db.transaction() as session:
        await manual_service.reject_manual(session, ids[1], "fin-b", "no such transfer")
    # When finance lists the pending ones
    pending = await client.get("/api/v1/manual-payments", headers=auth(keys["finance"]))
    # Then exactly the two undecided ones, newest first, with their evidence
    assert pending.status_code == 200, pending.text
    assert [(m["id"], m["state"], m["requested_by"]) for m in pending.json()] == [
        (ids[2], "pending_approval", "fin-a"),
        (ids[0], "pending_approval", "fin-b"),
    ]
    assert pending.json()[0]["amount"] == "159.70"
    assert pending.json()[0]["reference"] == f"ICBC-{orders[2].order_no}"
    # And by state, all, and in pages
    rejected = await client.get(
        "/api/v1/manual-payments?state=rejected", headers=auth(keys["admin"])
    )
    assert [(m["id"], m["decided_by"]) for m in rejected.json()] == [(ids[1], "fin-b")]
    every = await client.get("/api/v1/manual-payments?state=all", headers=auth(keys["finance"]))
    assert [m["id"] for m in every.json()] == ids[::-1]
    page = await client.get(
        f"/api/v1/manual-payments?state=all&limit=1&before_id={ids[2]}",
        headers=auth(keys["finance"]),
    )
    assert [m["id"] for m in page.json()] == [ids[1]]


async def test_listing_refuses_bad_filters_and_the_warehouse(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given one pending request
    order = await make_order(db)
    await _request(db, order.order_no, "fin-a")
    # When the filter is unknown / the role may not read payments / no key is sent
    unknown = await client.get("/api/v1/manual-payments?state=paid", headers=auth(keys["finance"]))
    warehouse = await client.get("/api/v1/manual-payments", headers=auth(keys["warehouse"]))
    anonymous = await client.get("/api/v1/manual-payments")
    # Then each is refused
    assert unknown.status_code == 422
    assert (warehouse.status_code, warehouse.json()["code"]) == (403, "auth.forbidden")
    assert anonymous.status_code == 401
