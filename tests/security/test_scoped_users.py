"""Issue 14: back-office users are scoped to warehouses and channel accounts like API keys.
`ordertally user create --warehouse … --channel …` (a real process) and the users screen set the
scope and show it; a scoped user, signed in over real HTTP to a real server, sees its own
channel accounts' orders, cases and channel desk only and is refused (403 page, nothing changes)
every action on another account's order, another warehouse's stock, and list shipping."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from ordertally.auth import users
from ordertally.auth.models import User
from ordertally.channels.models import ChannelSkuMapping
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.inventory.models import StockMovement
from ordertally.orders.models import SalesOrder
from ordertally.payments import manual as manual_service
from tests.channels.helpers import make_account
from tests.conftest import TEST_WAREHOUSE, LiveServer
from tests.factories import add_warehouse, make_order
from tests.search.helpers import index
from tests.web.helpers import PASSWORD, csrf_of, make_user, sign_in

pytestmark = pytest.mark.anyio

_ORDER_ROW = re.compile(r'data-order="([^"]+)"')
_ACCOUNT = re.compile(r'data-account="([^"]+)"')
_MANUAL = re.compile(r'<tr data-manual="([^"]+)"')


def _cli_user(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", "user", "create", *args, "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


@contextlib.asynccontextmanager
async def _browser(server: LiveServer, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as `username` on the live server (real HTTP, session cookie)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await sign_in(client, username)
        assert response.status_code == 303, response.text
        yield client


async def _status(db: Database, order_no: str) -> str:
    async with db.transaction(write=False) as session:
        status = await session.scalar(
            select(SalesOrder.status).where(SalesOrder.order_no == order_no)
        )
    assert status is not None
    return status


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_the_cli_and_the_users_screen_set_and_show_a_users_scope(
    db: Database, live_server: LiveServer
) -> None:
    # Given an admin, and a user made by the CLI scoped to one warehouse and two channel accounts
    await make_user(db, "boss", "admin")
    made = _cli_user(
        "wh-sh", "--role", "warehouse", "--warehouse", "WH-SH", "--channel", "shop_b",
        "--channel", "shop_a",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "warehouses WH-SH, channels shop_a, shop_b" in made.stdout
    bad_cli = _cli_user("wh-bad", "--role", "warehouse", "--warehouse", "WH SH;drop")
    assert bad_cli.returncode == 2 and "warehouses" in bad_cli.stderr
    async with _browser(live_server, "boss") as admin:
        # When the admin opens the users screen
        page = await admin.get("/ui/users")
        # Then the CLI user's scope is shown, and an unscoped user says so
        assert page.status_code == 200
        assert 'data-warehouses="WH-SH"' in page.text
        assert 'data-channels="shop_a,shop_b"' in page.text
        assert re.search(r'data-scope="boss"><span class="muted" data-unscoped>', page.text)
        # When the admin creates a user scoped through the form, and one with a bad code
        created = await admin.post(
            "/ui/users",
            data={
                "csrf_token": csrf_of(page.text),
                "username": "cs-a",
                "role": "cs",
                "password": PASSWORD,
                "warehouses": "",
                "channels": "shop_a， shop_c",
            },
        )
        refused = await admin.post(
            "/ui/users",
            data={
                "csrf_token": csrf_of(page.text),
                "username": "cs-bad",
                "role": "cs",
                "password": PASSWORD,
                "channels": "shop_a,<script>",
            },
        )
    # Then the first is stored with its scope, the second refused and not created
    assert created.status_code == 303
    assert refused.status_code == 422 and "渠道账号" in refused.text
    async with db.transaction(write=False) as session:
        rows = (await session.execute(select(User.username, User.warehouses, User.channels))).all()
    assert sorted((u, w, c) for u, w, c in rows) == [
        ("boss", None, None),
        ("cs-a", None, ["shop_a", "shop_c"]),
        ("wh-sh", ["WH-SH"], ["shop_a", "shop_b"]),
    ]


async def test_the_cli_changes_a_users_scope_from_their_next_request(
    db: Database, live_server: LiveServer
) -> None:
    # Given an unscoped ops user signed in, and an order of each of two accounts
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    await make_user(db, "ops-move", "ops")

    def scope(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ordertally", "user", "scope", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
            check=False,
        )

    async with _browser(live_server, "ops-move") as user:
        before = await user.get(f"/ui/orders/{theirs.order_no}")
        # When the CLI limits the user to shop_a (the session stays open)
        narrowed = scope("ops-move", "--channel", "shop_a")
        after = await user.get(f"/ui/orders/{theirs.order_no}")
        own = await user.get(f"/ui/orders/{mine.order_no}")
        # And bad requests change nothing: an unknown user, a bad code, codes and a lift at once
        refused = [
            scope("nobody", "--channel", "shop_a"),
            scope("ops-move", "--channel", "shop a;"),
            scope("ops-move", "--channel", "shop_b", "--all-channels"),
        ]
        still = await user.get(f"/ui/orders/{theirs.order_no}")
        # When the limit is lifted again
        lifted = scope("ops-move", "--all-channels")
        again = await user.get(f"/ui/orders/{theirs.order_no}")
    # Then the next request after each change follows it
    assert before.status_code == 200
    assert narrowed.returncode == 0, narrowed.stderr
    assert "channels shop_a" in narrowed.stdout and "warehouses all" in narrowed.stdout
    assert after.status_code == 403 and 'data-refused="scope"' in after.text
    assert own.status_code == 200
    assert [r.returncode for r in refused] == [2, 2, 2]
    assert "nobody" in refused[0].stderr and "channels" in refused[1].stderr
    assert still.status_code == 403
    assert lifted.returncode == 0 and "channels all" in lifted.stdout
    assert again.status_code == 200
    async with db.transaction(write=False) as session:
        row = (
            await session.execute(
                select(User.warehouses, User.channels).where(User.username == "ops-move")
            )
        ).one()
    assert tuple(row) == (None, None)


async def test_a_channel_scoped_user_sees_and_acts_on_its_accounts_only(
    db: Database, live_server: LiveServer
) -> None:
    # Given two accounts, an unpaid order of each, and an ops user scoped to shop_a
    await make_account(db, "shop_a", "pinduoduo")
    await make_account(db, "shop_b", "pinduoduo")
    mine = await make_order(db, channel="shop_a")
    theirs = await make_order(db, channel="shop_b")
    await index(db)  # the search index (the outbox, then the search lane)
    made = _cli_user("ops-a", "--role", "ops", "--channel", "shop_a")
    assert made.returncode == 0, made.stderr
    await make_user(db, "ops-all", "ops")
    async with (
        _browser(live_server, "ops-a") as user,
        _browser(live_server, "ops-all") as unscoped,
    ):
        # When it lists orders, searches for the other account's order, and opens it
        listed = await user.get("/ui/orders")
        searched = await user.get("/ui/orders", params={"q": theirs.order_no})
        searched_mine = await user.get("/ui/orders", params={"q": mine.order_no})
        other_page = await user.get(f"/ui/orders/{theirs.order_no}")
        own_page = await user.get(f"/ui/orders/{mine.order_no}")
        # And it tries to cancel the other account's order, pull it and map a SKU for it
        token = csrf_of(own_page.text)
        cancel_theirs = await user.post(
            f"/ui/orders/{theirs.order_no}/cancel", data={"csrf_token": token, "reason": "x"}
        )
        desk = await user.get("/ui/channels")
        sync_theirs = await user.post("/ui/channels/shop_b/sync", data={"csrf_token": token})
        map_theirs = await user.post(
            "/ui/channels/mappings",
            data={
                "csrf_token": token,
                "platform": "pinduoduo",
                "account_code": "shop_b",
                "platform_sku": "P-1",
                "sku": "TEA-LJ-250",
            },
        )
        map_everywhere = await user.post(
            "/ui/channels/mappings",
            data={
                "csrf_token": token,
                "platform": "pinduoduo",
                "account_code": "",
                "platform_sku": "P-1",
                "sku": "TEA-LJ-250",
            },
        )
        # And an unscoped ops user sees both
        everyone = await unscoped.get("/ui/orders")
        everyone_desk = await unscoped.get("/ui/channels")
        # And the scoped user cancels its own order
        cancel_mine = await user.post(
            f"/ui/orders/{mine.order_no}/cancel", data={"csrf_token": token, "reason": "buyer"}
        )
    # Then it sees its own account's order only, in the list, the search and the desk
    assert _ORDER_ROW.findall(listed.text) == [mine.order_no]
    assert _ORDER_ROW.findall(searched.text) == []
    assert _ORDER_ROW.findall(searched_mine.text) == [mine.order_no]
    assert _ACCOUNT.findall(desk.text) == ["shop_a"]
    assert sorted(_ORDER_ROW.findall(everyone.text)) == sorted([mine.order_no, theirs.order_no])
    assert sorted(_ACCOUNT.findall(everyone_desk.text)) == ["shop_a", "shop_b"]
    # And every action on the other account is the 403 page saying why, with nothing changed
    assert own_page.status_code == 200
    for refused in (other_page, cancel_theirs, sync_theirs, map_theirs, map_everywhere):
        assert refused.status_code == 403, refused.text
        assert 'data-refused="scope"' in refused.text
    assert await _status(db, theirs.order_no) == "pending_payment"
    assert await _count(db, ChannelSkuMapping) == 0
    # And its own order was cancelled
    assert cancel_mine.status_code == 303
    assert await _status(db, mine.order_no) == "closed"


async def test_a_warehouse_scoped_user_moves_its_own_warehouses_stock_only(
    db: Database, live_server: LiveServer
) -> None:
    # Given a second warehouse and a warehouse user scoped to it
    await add_warehouse(db, "WH-SH")
    made = _cli_user("wh-sh", "--role", "warehouse", "--warehouse", "WH-SH")
    assert made.returncode == 0, made.stderr
    paid = await make_order(db, status="allocated")
    before = await _count(db, StockMovement)
    async with _browser(live_server, "wh-sh") as user:
        page = await user.get("/ui/inventory")
        token = csrf_of(page.text)
        # When it books a receipt into the other warehouse, then into its own
        other = await user.post(
            "/ui/inventory/receipts",
            data={"csrf_token": token, "warehouse": TEST_WAREHOUSE, "sku": "TEA-LJ-250",
                  "quantity": "5"},
        )  # fmt: skip
        own = await user.post(
            "/ui/inventory/receipts",
            data={"csrf_token": token, "warehouse": "WH-SH", "sku": "TEA-LJ-250", "quantity": "5"},
        )
        # And it ships a list naming an order of the other warehouse
        shipped = await user.post(
            "/ui/shipping",
            data={"csrf_token": token, "list": f"order_no,waybill_no\n{paid.order_no},SF1234567\n"},
        )
    # Then the other warehouse's receipt and the list are refused, its own receipt is booked
    assert (other.status_code, shipped.status_code) == (403, 403)
    assert 'data-refused="scope"' in other.text and 'data-refused="scope"' in shipped.text
    assert own.status_code == 303
    assert await _count(db, StockMovement) == before + 1
    assert await _status(db, paid.order_no) == "allocated"


async def test_a_channel_scoped_finance_user_sees_and_decides_its_accounts_requests_only(
    db: Database, live_server: LiveServer
) -> None:
    # Given an unpaid order of each of two accounts, each with a 补单 request, and a finance
    # user scoped to shop_a
    await make_account(db, "shop_a", "pinduoduo")
    await make_account(db, "shop_b", "pinduoduo")
    requests: dict[str, int] = {}
    orders = {channel: await make_order(db, channel=channel) for channel in ("shop_a", "shop_b")}
    async with db.transaction() as session:
        for channel, order in orders.items():
            manual = await manual_service.request_manual(
                session,
                order.order_no,
                reference=f"ICBC-{channel}",
                amount="159.70",
                paid_at=clock.now() - timedelta(hours=1),
                reason="bank transfer",
                requested_by="finance-tester",
            )
            requests[channel] = manual.id
    async with db.transaction() as session:
        await users.create_user(session, "fin-a", PASSWORD, "finance", channels=["shop_a"])
    async with _browser(live_server, "fin-a") as user:
        # When it opens the finance screen and rejects the other account's request
        page = await user.get("/ui/payments")
        token = csrf_of(page.text)
        rejected = await user.post(
            f"/ui/payments/manual/{requests['shop_b']}/reject",
            data={"csrf_token": token, "note": "not ours"},
        )
        bill = await user.post(
            "/ui/payments/reconcile", data={"csrf_token": token, "provider": "wechatpay"}
        )
    # Then it sees its own account's request only, and the other stays pending
    assert _MANUAL.findall(page.text) == [str(requests["shop_a"])]
    assert rejected.status_code == 403
    assert str(requests["shop_b"]) not in _MANUAL.findall(rejected.text)
    assert bill.status_code == 403
    async with db.transaction(write=False) as session:
        other = await manual_service.get_manual(session, requests["shop_b"])
    assert other.state == "pending_approval"
