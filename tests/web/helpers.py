"""Helpers for the back-office tests: users with known passwords, signing in over HTTP, and
reading tokens out of pages."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select

from ordertally.auth import users
from ordertally.auth.models import LoginAttempt, UserSession
from ordertally.core.db import Database

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def make_user(db: Database, username: str, role: str, password: str = PASSWORD) -> int:
    """A user through the service."""
    async with db.transaction() as session:
        return await users.create_user(session, username, password, role)


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = _CSRF.search(html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    """Open the sign-in form and post it; returns the POST's response."""
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": csrf_of(form.text),
            "next": "/ui/",
        },
    )


async def count(db: Database, model: type) -> int:
    """Rows of a table."""
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def attempts(db: Database) -> list[tuple[str, bool, str]]:
    """(username, succeeded, outcome) of every sign-in attempt, oldest first."""
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(LoginAttempt.username, LoginAttempt.succeeded, LoginAttempt.outcome).order_by(
                LoginAttempt.id
            )
        )
        return [(u, bool(s), o) for u, s, o in rows.all()]


async def sessions(db: Database) -> int:
    """Open browser sessions."""
    return await count(db, UserSession)
