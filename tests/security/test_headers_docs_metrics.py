"""Findings: missing nosniff/no-store/WWW-Authenticate, case-sensitive `Bearer`, open `/metrics`,
CDN-loaded `/docs`, an SQLite file readable by everyone, the demo key printed on every start."""

from __future__ import annotations

import re
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.orders.models import PiiAccess
from tests.factories import auth, make_order

pytestmark = pytest.mark.anyio


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://ordertally.test")


async def test_every_api_response_is_nosniff_and_personal_data_is_no_store(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order
    order = await make_order(db)
    # When its list, its contact and the customers list are read
    listing = await client.get("/api/v1/orders", headers=auth(keys["ops"]))
    contact = await client.get(
        f"/api/v1/orders/{order.order_no}/contact",
        params={"reason": "label print"},
        headers=auth(keys["ops"]),
    )
    customers = await client.get(
        "/api/v1/customers", params={"phone": "13812345678"}, headers=auth(keys["ops"])
    )
    missing = await client.get("/api/v1/nothing-here")
    # Then all are nosniff; only the personal ones are no-store
    assert (listing.status_code, contact.status_code, customers.status_code) == (200, 200, 200)
    for response in (listing, contact, customers, missing):
        assert response.headers["x-content-type-options"] == "nosniff"
    assert contact.headers["cache-control"] == "no-store"
    assert customers.headers["cache-control"] == "no-store"
    assert "cache-control" not in listing.headers


async def test_401_names_the_bearer_scheme_and_the_scheme_is_case_insensitive(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # When a request comes without a key, then with the scheme in other cases
    refused = await client.get("/api/v1/orders")
    lower = await client.get("/api/v1/orders", headers={"Authorization": f"bearer {keys['ops']}"})
    upper = await client.get("/api/v1/orders", headers={"Authorization": f"BEARER {keys['ops']}"})
    basic = await client.get("/api/v1/orders", headers={"Authorization": f"Basic {keys['ops']}"})
    # Then the 401 says which scheme to use, and every spelling of Bearer works
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="ordertally"'
    assert refused.headers["content-type"] == "application/problem+json"
    assert (lower.status_code, upper.status_code, basic.status_code) == (200, 200, 401)


async def test_metrics_want_the_token_when_one_is_configured(db: Database) -> None:
    from ordertally.app import create_app

    # Given a metrics token
    settings = get_settings().model_copy(update={"metrics_token": "scrape-secret-1"})
    app = create_app(settings, db=db)
    async with _client(app) as c:
        # When /metrics is read without, with a wrong and with the right token
        none = await c.get("/metrics")
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await c.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    # Then only the right one reads it
    assert (none.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "ordertally_http_request_duration_seconds" in right.text
    assert "ordertally_" not in none.text


async def test_docs_load_nothing_from_another_host_and_are_off_in_production(db: Database) -> None:
    from ordertally.app import create_app

    # Given the docs on (embedded default) and off (production default: not SQLite)
    on = create_app(get_settings().model_copy(update={"docs_enabled": True}), db=db)
    off = create_app(
        get_settings().model_copy(
            update={"docs_enabled": None, "database_url": "postgresql+asyncpg://h/db"}
        ),
        db=db,
    )
    async with _client(on) as c:
        swagger = await c.get("/docs")
        redoc = await c.get("/redoc")
        urls = re.findall(
            r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", swagger.text + redoc.text
        )
        assets = [await c.get(u) for u in sorted(set(urls)) if u.startswith("/docs-assets/")]
    async with _client(off) as c:
        hidden = await c.get("/docs")
    # Then every URL the pages reference is on this host, and the assets are served
    assert swagger.status_code == redoc.status_code == 200
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "cdn" not in (swagger.text + redoc.text).lower()
    assert len(assets) == 4 and all(a.status_code == 200 and len(a.content) > 100 for a in assets)
    assert hidden.status_code == 404


def test_a_new_sqlite_database_file_is_private(tmp_path: Path) -> None:
    from ordertally.ops.migrations import upgrade

    # When a new embedded database is created (by `migrate`, then opened by the app)
    path = tmp_path / f"fresh-{uuid.uuid4().hex[:6]}.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    Database(f"sqlite+aiosqlite:///{path}")
    # Then only its owner may read it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_contact_reveal_is_still_logged(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given an order / When ops reads its contact / Then one access row names the reader
    order = await make_order(db)
    r = await client.get(
        f"/api/v1/orders/{order.order_no}/contact",
        params={"reason": "label print"},
        headers=auth(keys["ops"]),
    )
    assert r.status_code == 200
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(PiiAccess)) == 1


async def test_body_limits_are_set_per_route_in_one_place(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a body of 1.5 MB (over the 1 MiB default, under the shipped list's 20 MB)
    big = b"order_no,waybill_no\n" + b"OT0000000000000000,SF01\n" * 60_000
    # When it is sent as a shipped list and as an order, and 21 MB as a shipped list
    shipped_list = await client.post(
        "/api/v1/shipments/import",
        content=big,
        headers=auth(keys["warehouse"], **{"Content-Type": "text/csv"}),
    )
    order = await client.post(
        "/api/v1/orders",
        content=big,
        headers=auth(keys["ops"], **{"Content-Type": "application/json"}),
    )
    huge = await client.post(
        "/api/v1/shipments/import",
        content=b"x" * 21_000_000,
        headers=auth(keys["warehouse"], **{"Content-Type": "text/csv"}),
    )
    # Then the list reaches its route (which reads and judges it), the order and the 21 MB list
    # are 413
    assert len(big) > 1_048_576
    assert shipped_list.json()["code"] == "fulfillment.ship_list_invalid", shipped_list.text
    assert (order.status_code, huge.status_code) == (413, 413)
    assert huge.json()["detail"] == "request body exceeds 20000000 bytes"
