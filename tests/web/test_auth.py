"""Signing in and out of the back office: argon2id passwords, server-side sessions with idle and
absolute expiry, the audited and rate-limited attempts, CSRF on the sign-in form, roles."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from ordertally.auth import users
from ordertally.auth.models import User
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.errors import Conflict, InvalidRequest
from tests.web.conftest import SignedInClient
from tests.web.helpers import PASSWORD, attempts, csrf_of, make_user, sessions, sign_in

pytestmark = pytest.mark.anyio


async def test_sign_in_opens_a_server_side_session_with_a_safe_cookie(
    web: httpx.AsyncClient, db: Database
) -> None:
    # Given a cs user
    await make_user(db, "wangfang", "cs")
    # When they sign in with the right password
    response = await sign_in(web, "wangfang")
    # Then they are sent to the dashboard with an HttpOnly, SameSite=Lax, Secure cookie
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("ot_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    # And one session row exists, the attempt is audited, and the last sign-in recorded
    assert await sessions(db) == 1
    assert await attempts(db) == [("wangfang", True, "ok")]
    async with db.transaction(write=False) as session:
        user = await session.scalar(select(User).where(User.username == "wangfang"))
    assert user is not None and user.last_login_at is not None
    assert user.password_hash.startswith("$argon2id$")
    # And the dashboard opens
    page = await web.get("/ui/")
    assert page.status_code == 200
    assert "运营看板" in page.text


async def test_a_wrong_password_is_refused_recorded_and_opens_nothing(
    web: httpx.AsyncClient, db: Database
) -> None:
    # Given a user
    await make_user(db, "wangfang", "cs")
    # When someone signs in with a wrong password, then with an unknown username
    wrong = await sign_in(web, "wangfang", "not the password")
    unknown = await sign_in(web, "nobody", PASSWORD)
    # Then both are refused with the same message and no session is opened
    assert wrong.status_code == 401 and unknown.status_code == 401
    assert "用户名或密码错误" in wrong.text and "用户名或密码错误" in unknown.text
    assert await sessions(db) == 0
    assert await attempts(db) == [
        ("wangfang", False, "bad_password"),
        ("nobody", False, "unknown_user"),
    ]
    # And pages still send the browser to the sign-in form
    page = await web.get("/ui/orders?status=paid")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Forders%3Fstatus%3Dpaid"


async def test_five_failures_lock_the_username_even_for_the_right_password(
    web: httpx.AsyncClient, db: Database
) -> None:
    # Given a user who failed five times in a row
    await make_user(db, "wangfang", "cs")
    for _ in range(users.MAX_FAILURES_PER_USERNAME):
        assert (await sign_in(web, "wangfang", "guess")).status_code == 401
    # When the right password comes next
    response = await sign_in(web, "wangfang")
    # Then it is refused (429) without opening a session, and the refusal is recorded
    assert response.status_code == 429
    assert "登录失败次数过多" in response.text
    assert await sessions(db) == 0
    assert (await attempts(db))[-1] == ("wangfang", False, "rate_limited")
    # And once the window has passed, the right password works again
    clock.advance(users.FAILURE_WINDOW + timedelta(seconds=1))
    assert (await sign_in(web, "wangfang")).status_code == 303
    assert await sessions(db) == 1


async def test_one_address_is_limited_across_usernames(
    web: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an address that failed for many usernames, each below its own limit
    monkeypatch.setattr(users, "MAX_FAILURES_PER_IP", users.MAX_FAILURES_PER_USERNAME + 1)
    await make_user(db, "wangfang", "cs")
    for i in range(users.MAX_FAILURES_PER_IP):
        assert (await sign_in(web, f"guess{i}", "guess")).status_code == 401
    # When a real user signs in from it
    response = await sign_in(web, "wangfang")
    # Then the address is refused
    assert response.status_code == 429
    assert await sessions(db) == 0


async def test_the_sign_in_form_needs_its_csrf_token(web: httpx.AsyncClient, db: Database) -> None:
    # Given a user and a browser that never loaded the form
    await make_user(db, "wangfang", "cs")
    # When a sign-in is posted without the form's token
    response = await web.post(
        "/ui/login", data={"username": "wangfang", "password": PASSWORD, "next": "/ui/"}
    )
    # Then it is refused and nothing is recorded
    assert response.status_code == 403
    assert await sessions(db) == 0
    assert await attempts(db) == []


async def test_sign_out_ends_the_session(signed_in: SignedInClient, db: Database) -> None:
    # Given a signed-in user
    client = await signed_in("ops")
    page = await client.get("/ui/")
    # When they sign out with the page's token
    response = await client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
    # Then the session is gone and pages ask for a sign-in again
    assert response.status_code == 303
    assert await sessions(db) == 0
    assert (await client.get("/ui/")).status_code == 303


async def test_sign_out_without_the_token_is_refused(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a signed-in user
    client = await signed_in("ops")
    # When a sign-out is posted without the token (a cross-site form)
    response = await client.post("/ui/logout", data={})
    # Then it is refused and the session lives on
    assert response.status_code == 403
    assert await sessions(db) == 1


async def test_an_idle_session_expires(signed_in: SignedInClient, db: Database) -> None:
    # Given a signed-in user who keeps browsing within the idle limit
    client = await signed_in("ops")
    clock.advance(users.SESSION_IDLE - timedelta(minutes=1))
    assert (await client.get("/ui/")).status_code == 200
    clock.advance(users.SESSION_IDLE - timedelta(minutes=1))
    assert (await client.get("/ui/")).status_code == 200
    # When they leave the browser idle past the limit
    clock.advance(users.SESSION_IDLE + timedelta(seconds=1))
    response = await client.get("/ui/")
    # Then the session is gone
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")
    assert await sessions(db) == 0


async def test_a_session_ends_at_its_absolute_expiry_however_busy(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a signed-in user who never stays idle
    client = await signed_in("ops")
    steps = int(users.SESSION_ABSOLUTE / timedelta(minutes=20))
    for _ in range(steps - 1):
        clock.advance(timedelta(minutes=20))
        assert (await client.get("/ui/dashboard/figures")).status_code == 200
    # When the absolute lifetime passes
    clock.advance(timedelta(minutes=20, seconds=1))
    response = await client.get("/ui/dashboard/figures")
    # Then the session ends all the same
    assert response.status_code == 303
    assert await sessions(db) == 0


async def test_an_htmx_request_without_a_session_is_redirected_by_header(
    web: httpx.AsyncClient,
) -> None:
    # When htmx polls the dashboard without a session
    response = await web.get("/ui/dashboard/figures", headers={"HX-Request": "true"})
    # Then htmx is told where to go (a 303 would be swapped into the page)
    assert response.status_code == 204
    assert response.headers["hx-redirect"].startswith("/ui/login?next=")


@pytest.mark.parametrize("role", ["ops", "cs", "finance", "warehouse"])
async def test_only_admins_open_the_users_page(
    signed_in: SignedInClient, db: Database, role: str
) -> None:
    # Given a user of a role other than admin
    client = await signed_in(role)
    # When they open the users page, or post a new user with their valid token
    page = await client.get("/ui/users")
    token = csrf_of((await client.get("/ui/")).text)
    post = await client.post(
        "/ui/users",
        data={"csrf_token": token, "username": "intruder", "role": "admin", "password": "x" * 12},
    )
    # Then both are refused and no user was created
    assert page.status_code == 403 and post.status_code == 403
    assert 'data-refused="role"' in page.text
    assert 'href="/ui/users"' not in page.text
    async with db.transaction(write=False) as session:
        assert [u.username for u in await users.list_users(session)] == [f"{role}-1"]


async def test_an_admin_creates_a_user_who_can_then_sign_in(
    signed_in: SignedInClient, web: httpx.AsyncClient, db: Database
) -> None:
    # Given an admin on the users page
    admin = await signed_in("admin")
    page = await admin.get("/ui/users")
    assert page.status_code == 200
    # When they create a cs user
    response = await admin.post(
        "/ui/users",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "Zhang.San",
            "role": "cs",
            "password": "a-long-password",
        },
    )
    # Then the user exists (username lower-cased) and is listed
    assert response.status_code == 303
    listed = await admin.get(response.headers["location"])
    assert 'data-user="zhang.san"' in listed.text
    assert "用户已创建" in listed.text
    # And the same name again is refused, changing nothing
    again = await admin.post(
        "/ui/users",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "zhang.san",
            "role": "ops",
            "password": "a-long-password",
        },
    )
    assert again.status_code == 409
    async with db.transaction(write=False) as session:
        assert sorted(u.username for u in await users.list_users(session)) == [
            "admin-1",
            "zhang.san",
        ]
    # And the new user signs in
    assert (await sign_in(web, "zhang.san", "a-long-password")).status_code == 303


async def test_create_user_validates_its_input(db: Database) -> None:
    # Given one user
    await make_user(db, "wangfang", "cs")
    async with db.transaction() as session:
        # Then a bad username, role or short password is refused
        with pytest.raises(InvalidRequest):
            await users.create_user(session, "有空格 的名字", PASSWORD, "cs")
        with pytest.raises(InvalidRequest):
            await users.create_user(session, "lisi", PASSWORD, "boss")
        with pytest.raises(InvalidRequest):
            await users.create_user(session, "lisi", "short", "cs")
        with pytest.raises(Conflict):
            await users.create_user(session, "WangFang", PASSWORD, "ops")
        assert await users.count_users(session) == 1


async def test_the_purge_forgets_sessions_nobody_can_use(db: Database) -> None:
    # Given two sessions, one of them used recently
    await make_user(db, "wangfang", "cs")
    async with db.transaction() as session:
        await users.sign_in(session, "wangfang", PASSWORD, "10.0.0.1")
    clock.advance(users.SESSION_IDLE - timedelta(minutes=5))
    async with db.transaction() as session:
        token, _ = await users.sign_in(session, "wangfang", PASSWORD, "10.0.0.2")
    # When the purge runs past the first one's idle limit
    clock.advance(timedelta(minutes=6))
    async with db.transaction() as session:
        purged = await users.purge_sessions(session, clock.now())
    # Then only the idle one is gone
    assert purged == 1
    assert await sessions(db) == 1
    async with db.transaction(write=False) as session:
        check = await users.check_session(session, token)
    assert check.user is not None and check.user.username == "wangfang"
