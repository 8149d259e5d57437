"""Back-office users: argon2id passwords, server-side browser sessions with idle and absolute
expiry, a CSRF token per session, and sign-in attempts that are both audited and counted to
refuse guessing (per username and per source address)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth import repository
from ordertally.auth.models import ROLES, LoginAttempt, User
from ordertally.core import clock
from ordertally.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    OrdertallyError,
    Unauthenticated,
)

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about a tenth of a
# second here; hashing runs in a worker thread so the event loop never waits for it.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# A fixed hash verified when the username is unknown, so both paths take the same time.
_DUMMY_HASH = _HASHER.hash("ordertally-no-such-user")

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
SCOPE_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MIN_PASSWORD = 10
SESSION_IDLE = timedelta(minutes=30)
SESSION_ABSOLUTE = timedelta(hours=12)
# The idle clock is moved at most this often, so browsing does not write on every request.
TOUCH_EVERY = timedelta(minutes=1)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USERNAME = 5
MAX_FAILURES_PER_IP = 20


class TooManyAttempts(OrdertallyError):
    status = 429
    code = "auth.too_many_attempts"
    title = "Too many failed sign-ins"


class BadCredentials(Unauthenticated):
    code = "auth.bad_credentials"
    title = "Wrong username or password"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A live browser session: who, with which role and scope, and the token forms must echo."""

    session_id: int
    user_id: int
    username: str
    role: str
    csrf_token: str
    # Warehouse codes the user is limited to; None = not scoped (as for API keys).
    warehouses: tuple[str, ...] | None = None
    # Channel account codes the user is limited to; None = not scoped.
    channels: tuple[str, ...] | None = None

    def may_act_for(self, warehouse_code: str | None) -> bool:
        """Whether a warehouse-scoped user may see or act on this warehouse's work."""
        return self.warehouses is None or warehouse_code in self.warehouses

    def may_act_for_channel(self, account_code: str | None) -> bool:
        """Whether a channel-scoped user may see or act on this channel account."""
        return self.channels is None or account_code in self.channels


def token_hash(token: str) -> str:
    """Session tokens carry 256 bits of entropy: a plain SHA-256 is the right storage form."""
    return hashlib.sha256(token.encode()).hexdigest()


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    """An argon2id hash of a password."""
    return _HASHER.hash(password)


def scope_codes(codes: list[str] | None, field: str) -> list[str] | None:
    """A scope as stored: sorted distinct codes, or None (not scoped); codes are checked."""
    cleaned = sorted({c.strip() for c in codes or [] if c.strip()})
    for code in cleaned:
        if not SCOPE_CODE.match(code):
            raise InvalidRequest(
                f"{field}: codes of 1-32 letters, digits, '_' or '-' ({code!r} is not one)",
                field=field,
            )
    return cleaned or None


def _scope(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


async def create_user(
    session: AsyncSession,
    username: str,
    password: str,
    role: str,
    *,
    warehouses: list[str] | None = None,
    channels: list[str] | None = None,
) -> int:
    """Create an active user, scoped to warehouses and channel accounts when given; returns its
    id."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise InvalidRequest(
            "username: 2-64 lowercase letters, digits, '.', '_' or '-'", field="username"
        )
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(
            f"password must have at least {MIN_PASSWORD} characters", field="password"
        )
    if await repository.user_by_name(session, username) is not None:
        raise Conflict(f"user {username!r} already exists", field="username")
    return await repository.add_user(
        session,
        {
            "username": username,
            "password_hash": await asyncio.to_thread(hash_password, password),
            "role": role,
            "active": True,
            "created_at": clock.now(),
            "warehouses": scope_codes(warehouses, "warehouses"),
            "channels": scope_codes(channels, "channels"),
        },
    )


async def set_scope(
    session: AsyncSession,
    username: str,
    *,
    warehouses: list[str] | None = None,
    channels: list[str] | None = None,
    unscope_warehouses: bool = False,
    unscope_channels: bool = False,
) -> User:
    """Change a user's scope: codes given replace that part of it, `unscope_*` lifts it, a part
    given neither stays as it is. Sessions read the scope with every request, so a signed-in
    user is narrowed (or widened) from the next one. NotFound for an unknown username."""
    user = await repository.user_by_name(session, username.strip().lower())
    if user is None:
        raise NotFound(f"no user {username!r}", field="username")
    values: dict[str, list[str] | None] = {}
    for field, codes, lift in (
        ("warehouses", warehouses, unscope_warehouses),
        ("channels", channels, unscope_channels),
    ):
        if codes and lift:
            raise InvalidRequest(f"{field}: give codes or lift the scope, not both", field=field)
        if lift:
            values[field] = None
        elif codes:
            values[field] = scope_codes(codes, field)
    if values:
        await repository.set_user_scope(session, user.id, values)
        await session.refresh(user)
    return user


def generate_password() -> str:
    """A random password to print once (16 URL-safe characters, ~96 bits)."""
    return secrets.token_urlsafe(12)


async def list_users(session: AsyncSession) -> list[User]:
    """Every user, by username."""
    return await repository.list_users(session)


async def count_users(session: AsyncSession) -> int:
    """How many users exist."""
    return await repository.count_users(session)


async def _attempt(
    session: AsyncSession, username: str, source_ip: str, succeeded: bool, outcome: str
) -> None:
    await repository.add_login_attempt(
        session,
        {
            "username": username[:64],
            "source_ip": source_ip[:64],
            "succeeded": succeeded,
            "outcome": outcome,
            "attempted_at": clock.now(),
        },
    )


async def check_rate(session: AsyncSession, username: str, source_ip: str) -> None:
    """Refuse a sign-in when the username or the address failed too often lately."""
    since = clock.now() - FAILURE_WINDOW
    by_user = await repository.failed_logins_since(
        session, username=username[:64], source_ip=None, since=since
    )
    by_ip = await repository.failed_logins_since(
        session, username=None, source_ip=source_ip[:64], since=since
    )
    if by_user >= MAX_FAILURES_PER_USERNAME or by_ip >= MAX_FAILURES_PER_IP:
        raise TooManyAttempts(
            f"too many failed sign-ins; try again in {int(FAILURE_WINDOW.total_seconds() // 60)}"
            " minutes"
        )


async def sign_in(
    session: AsyncSession, username: str, password: str, source_ip: str
) -> tuple[str, SignedIn]:
    """Check a password and open a session; returns (the raw cookie token, the session).

    Refused attempts are recorded too: the caller commits them even when this raises (the
    attempt row is what the rate limit counts). A rate-limited attempt is recorded and refused
    without checking the password.
    """
    username = username.strip().lower()
    try:
        await check_rate(session, username, source_ip)
    except TooManyAttempts:
        await _attempt(session, username, source_ip, False, "rate_limited")
        raise
    user = await repository.user_by_name(session, username)
    verified = await asyncio.to_thread(
        _verify, user.password_hash if user else _DUMMY_HASH, password
    )
    verified = verified and user is not None
    if user is None or not verified or not user.active:
        outcome = "unknown_user" if user is None else "bad_password" if not verified else "inactive"
        await _attempt(session, username, source_ip, False, outcome)
        raise BadCredentials("wrong username or password")
    now = clock.now()
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session_id = await repository.add_session(
        session,
        {
            "token_hash": token_hash(token),
            "user_id": user.id,
            "csrf_token": csrf,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + SESSION_ABSOLUTE,
            "source_ip": source_ip[:64],
        },
    )
    await repository.set_last_login(session, user.id, now)
    await _attempt(session, username, source_ip, True, "ok")
    return token, SignedIn(
        session_id,
        user.id,
        user.username,
        user.role,
        csrf,
        _scope(user.warehouses),
        _scope(user.channels),
    )


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """What a cookie token leads to: a live session (maybe due a touch), or one to forget."""

    user: SignedIn | None
    expired: bool = False
    touch_due: bool = False


async def check_session(session: AsyncSession, token: str) -> SessionCheck:
    """Read the session behind a cookie token (no write: the caller expires or touches it)."""
    found = await repository.session_with_user(session, token_hash(token))
    if found is None:
        return SessionCheck(None)
    row, user = found
    now = clock.now()
    last_seen = clock.as_utc(row.last_seen_at)
    if not user.active or clock.as_utc(row.expires_at) <= now or last_seen + SESSION_IDLE <= now:
        return SessionCheck(None, expired=True)
    signed = SignedIn(
        row.id,
        user.id,
        user.username,
        user.role,
        row.csrf_token,
        _scope(user.warehouses),
        _scope(user.channels),
    )
    return SessionCheck(signed, touch_due=last_seen + TOUCH_EVERY <= now)


async def touch_session(session: AsyncSession, session_id: int) -> None:
    """Move a session's idle clock to now."""
    await repository.touch_session(session, session_id, clock.now())


async def sign_out(session: AsyncSession, token: str) -> bool:
    """Forget a session; True when there was one."""
    return await repository.delete_session(session, token_hash(token)) > 0


async def purge_sessions(session: AsyncSession, now: datetime) -> int:
    """Forget sessions past their absolute expiry or idle for longer than allowed."""
    return await repository.delete_sessions_before(session, now, now - SESSION_IDLE)


async def recent_attempts(session: AsyncSession, limit: int = 50) -> list[LoginAttempt]:
    """The newest sign-in attempts (the audit view)."""
    return await repository.login_attempts(session, limit)
