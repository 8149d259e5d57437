"""Who is signed in, what their role may do, and the CSRF check on every state-changing
request. Pages call `signed_in(request, permission)` first and `check_csrf` before any write."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from ordertally.auth import users
from ordertally.auth.service import PERMISSIONS
from ordertally.auth.users import SignedIn
from ordertally.core.db import Database

SESSION_COOKIE = "ot_session"
LOGIN_CSRF_COOKIE = "ot_login_csrf"
LANG_COOKIE = "ot_lang"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class LoginRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """A signed-in user whose role may not open a page or take an action, or (`scope`) whose
    warehouse or channel scope does not cover what it concerns."""

    def __init__(self, user: SignedIn, permission: str, *, scope: bool = False) -> None:
        super().__init__(permission)
        self.user = user
        self.permission = permission
        self.scope = scope


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token."""


def database(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


def secure_cookies(request: Request) -> bool:
    """Cookies are `Secure` everywhere but on the local machine."""
    return (request.url.hostname or "") not in LOCAL_HOSTS


def set_cookie(request: Request, response: Response, name: str, value: str, **kw: object) -> None:
    """An HttpOnly, SameSite=Lax cookie (Secure outside localhost)."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
        **kw,  # type: ignore[arg-type]
    )


def may(user: SignedIn, permission: str) -> bool:
    """Whether a user's role holds a permission (the API's PERMISSIONS table)."""
    return user.role in PERMISSIONS[permission]


async def current_user(request: Request) -> SignedIn | None:
    """The live session of this browser, if any (cached on the request)."""
    if "ot_user" in request.scope:
        cached: SignedIn | None = request.scope["ot_user"]
        return cached
    token = request.cookies.get(SESSION_COOKIE)
    user = None
    if token:
        # Read first; write only to forget an expired session or move the idle clock (at most
        # once a minute), so browsing does not queue behind SQLite's single writer.
        async with database(request).transaction(write=False) as session:
            check = await users.check_session(session, token)
        if check.expired:
            async with database(request).transaction() as session:
                await users.sign_out(session, token)
        elif check.user is not None and check.touch_due:
            async with database(request).transaction() as session:
                await users.touch_session(session, check.user.session_id)
        user = check.user
    request.scope["ot_user"] = user
    return user


async def signed_in(request: Request, permission: str) -> SignedIn:
    """The signed-in user, who must hold `permission`; else LoginRequired or PageForbidden."""
    user = await current_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    if not may(user, permission):
        raise PageForbidden(user, permission)
    return user


def check_channel(user: SignedIn, account_code: str | None, permission: str) -> None:
    """Refuse a channel-scoped user another channel account's work (or work of no account), as
    the API refuses a channel-scoped key."""
    if not user.may_act_for_channel(account_code):
        raise PageForbidden(user, permission, scope=True)


def check_warehouse(user: SignedIn, warehouse_code: str | None, permission: str) -> None:
    """Refuse a warehouse-scoped user another warehouse's work."""
    if not user.may_act_for(warehouse_code):
        raise PageForbidden(user, permission, scope=True)


async def check_csrf(request: Request, user: SignedIn, form: FormData | None = None) -> None:
    """Refuse a write whose CSRF token (header for htmx, form field for forms) is not the
    session's (`form`: the request's form when the handler parsed it itself)."""
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        form = form if form is not None else await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, user.csrf_token):
        raise CsrfRefused()


def new_login_csrf() -> str:
    """A token for the sign-in form, echoed by a cookie (double submit: no session yet)."""
    return secrets.token_urlsafe(24)


def login_url(next_path: str) -> str:
    """The sign-in page, coming back to `next_path`."""
    return f"/ui/login?next={quote(next_path, safe='')}"


def safe_next(value: str | None) -> str:
    """A same-site path to go to after sign-in (never another host)."""
    if value and value.startswith("/ui") and not value.startswith("//"):
        return value
    return "/ui/"
