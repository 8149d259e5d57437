"""Analytics reads under a channel scope (issue 14 follow-up, ADR 0026), both databases: an API
key or a back-office user scoped to some channel accounts sees only those channels' figures
(stage table, ship time, carriers, the daily series, the analytics screen) and gets 403 for
another channel's order timeline, as the orders list and order pages do."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from httpx import AsyncClient

from ordertally.auth import service as auth_service
from ordertally.auth import users
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from tests.analytics.test_timeliness import _order, _shipped_by
from tests.factories import auth
from tests.web.helpers import PASSWORD, sign_in

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
DAY = "2026-11-10"
PERIOD = {"date_from": DAY, "date_to": DAY}


async def _orders(db: Database) -> dict[str, list[Any]]:
    """Two shipped jd orders and three douyin orders (two shipped), consumers drained."""
    made: dict[str, list[Any]] = {"jd": [], "douyin": []}
    for i, channel in enumerate(("jd", "douyin", "jd", "douyin", "douyin")):
        hours = [0.5, 1, 1, 2 + i] if i < 4 else [0.5]
        order = await _order(db, T0 + timedelta(minutes=i), hours, channel=channel)
        if len(hours) == 4:
            carrier = "zto" if channel == "jd" else "sf"
            await _shipped_by(db, order, f"WH-{channel}", carrier, T0 + timedelta(hours=9))
        made[channel].append(order)
    await drain(db, get_settings())
    return made


async def test_a_channel_scoped_key_sees_its_channels_figures_only(
    client: AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given orders on jd and douyin, and an ops key scoped to jd
    made = await _orders(db)
    async with db.transaction() as session:
        _, jd_key = await auth_service.create_api_key(session, "ops-jd", "ops", channels=["jd"])

    async def get(path: str, key: str, **params: str) -> Any:
        r = await client.get(
            f"/api/v1/analytics/{path}", params={**PERIOD, **params}, headers=auth(key)
        )
        assert r.status_code == 200, r.text
        return r.json()["items"]

    # When each table is read with the scoped key and with an unscoped one
    for exact in ("false", "true"):
        scoped = await get("stages", jd_key, by="all", exact=exact)
        everyone = await get("stages", keys["ops"], by="all", exact=exact)
        # Then the scoped key counts jd's orders only; the unscoped one every channel's
        assert [(i["stage"], i["orders"]) for i in scoped] == [
            ("pending_to_paid", 2),
            ("paid_to_allocated", 2),
            ("allocated_to_picking", 2),
            ("picking_to_shipped", 2),
            ("ship_time", 2),
        ]
        assert [i["orders"] for i in everyone] == [5, 5, 4, 4, 4]  # the 5th: allocated on payment
        by_channel = await get("stages", jd_key, by="channel", exact=exact)
        assert {i["channel"] for i in by_channel} == {"jd"}
        by_wh = await get("stages", jd_key, by="warehouse", exact=exact)
        assert {i["warehouse"] for i in by_wh if i["stage"] == "ship_time"} == {"WH-jd"}
    assert [(i["channel"], i["orders"]) for i in await get("ship-time", jd_key)] == [("jd", 2)]
    assert [(i["channel"], i["orders"]) for i in await get("ship-time", keys["ops"])] == [
        ("douyin", 2),
        ("jd", 2),
    ]
    assert [(i["channel"], i["orders"]) for i in await get("daily", jd_key)] == [("jd", 2)]
    assert await get("carriers", jd_key) == []  # nothing delivered
    # And another channel's order timeline is refused with the orders' 403, its own is served
    other = await client.get(
        f"/api/v1/analytics/orders/{made['douyin'][0].order_no}/timeline", headers=auth(jd_key)
    )
    assert (other.status_code, other.json()["code"]) == (403, "analytics.out_of_scope")
    own = await client.get(
        f"/api/v1/analytics/orders/{made['jd'][0].order_no}/timeline", headers=auth(jd_key)
    )
    assert own.status_code == 200 and own.json()["channel"] == "jd"


_ORDERS_KPI = re.compile(r'data-kpi="orders">([^<]*)<')
_DAILY = re.compile(r'data-daily="([^"]+)"')


async def test_the_analytics_screen_of_a_channel_scoped_user(app: Any, db: Database) -> None:
    # Given orders on jd and douyin, and an ops user scoped to jd and one who is not
    await _orders(db)
    async with db.transaction() as session:
        await users.create_user(session, "ops-jd", PASSWORD, "ops", channels=["jd"])
        await users.create_user(session, "ops-all", PASSWORD, "ops")
    seen: dict[str, tuple[str, list[str], str]] = {}
    for username in ("ops-jd", "ops-all"):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.8", 4000))
        async with httpx.AsyncClient(
            transport=transport, base_url="https://ordertally.test"
        ) as browser:
            assert (await sign_in(browser, username)).status_code == 303
            # When each opens the analytics screen for the day, by channel
            page = await browser.get("/ui/analytics", params={**PERIOD, "by": "channel"})
            assert page.status_code == 200
            found = _ORDERS_KPI.search(page.text)
            assert found is not None
            seen[username] = (found.group(1), _DAILY.findall(page.text), page.text)
    # Then the scoped user's KPIs, daily rows and stage rows are jd's only
    assert seen["ops-jd"][:2] == ("2", [f"{DAY}/jd/CNY"])
    assert seen["ops-all"][:2] == ("5", [f"{DAY}/douyin/CNY", f"{DAY}/jd/CNY"])
    assert 'data-key="douyin"' not in seen["ops-jd"][2]
    assert 'data-key="jd"' in seen["ops-jd"][2] and 'data-key="douyin"' in seen["ops-all"][2]
