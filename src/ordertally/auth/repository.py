"""Every query on API keys, the auth revision, users, browser sessions and sign-in attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth.models import ApiKey, AuthRevision, LoginAttempt, User, UserSession
from ordertally.core.db import table_of, upsert_insert


async def add(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store a hashed key; returns its id."""
    result = await session.execute(insert(ApiKey).values(**values).returning(ApiKey.id))
    return int(result.scalar_one())


async def by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """An unrevoked key by its hash."""
    return await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def add_user(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store a user; returns its id."""
    result = await session.execute(insert(User).values(**values).returning(User.id))
    return int(result.scalar_one())


async def user_by_name(session: AsyncSession, username: str) -> User | None:
    """A user by username."""
    return await session.scalar(select(User).where(User.username == username))


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    """A user by id."""
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    """Every user, by username."""
    return list((await session.scalars(select(User).order_by(User.username))).all())


async def count_users(session: AsyncSession) -> int:
    """How many users exist."""
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def set_user_scope(
    session: AsyncSession, user_id: int, values: dict[str, list[str] | None]
) -> None:
    """Replace a user's warehouses and/or channels scope (the keys given)."""
    await session.execute(update(User).where(User.id == user_id).values(**values))


async def set_last_login(session: AsyncSession, user_id: int, at: datetime) -> None:
    """Record a successful sign-in time."""
    await session.execute(update(User).where(User.id == user_id).values(last_login_at=at))


async def add_session(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store a browser session; returns its id."""
    result = await session.execute(insert(UserSession).values(**values).returning(UserSession.id))
    return int(result.scalar_one())


async def session_with_user(
    session: AsyncSession, token_hash: str
) -> tuple[UserSession, User] | None:
    """A browser session and its user, by the hash of its cookie token."""
    row = (
        await session.execute(
            select(UserSession, User)
            .join(User, User.id == UserSession.user_id)
            .where(UserSession.token_hash == token_hash)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def touch_session(session: AsyncSession, session_id: int, at: datetime) -> None:
    """Move a session's idle clock."""
    await session.execute(
        update(UserSession).where(UserSession.id == session_id).values(last_seen_at=at)
    )


async def delete_session(session: AsyncSession, token_hash: str) -> int:
    """Forget a session; returns the rows deleted."""
    result = await session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_sessions_before(
    session: AsyncSession, expired_before: datetime, seen_before: datetime
) -> int:
    """Forget sessions that expired, or were last seen, before the given moments."""
    result = await session.execute(
        delete(UserSession).where(
            or_(UserSession.expires_at < expired_before, UserSession.last_seen_at < seen_before)
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def add_login_attempt(session: AsyncSession, values: dict[str, Any]) -> None:
    """Record one sign-in attempt."""
    await session.execute(insert(LoginAttempt).values(**values))


async def failed_logins_since(
    session: AsyncSession, *, username: str | None, source_ip: str | None, since: datetime
) -> int:
    """Failed sign-ins since a moment, for one username or one source address."""
    stmt = select(func.count()).where(
        LoginAttempt.succeeded.is_(False), LoginAttempt.attempted_at >= since
    )
    if username is not None:
        stmt = stmt.where(LoginAttempt.username == username)
    if source_ip is not None:
        stmt = stmt.where(LoginAttempt.source_ip == source_ip)
    return int(await session.scalar(stmt) or 0)


async def login_attempts(session: AsyncSession, limit: int) -> list[LoginAttempt]:
    """The newest sign-in attempts."""
    stmt = select(LoginAttempt).order_by(LoginAttempt.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def by_id(session: AsyncSession, key_id: int) -> ApiKey | None:
    """A key by its id, revoked or not."""
    return await session.get(ApiKey, key_id)


async def all_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first."""
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.id))).all())


async def revoke(session: AsyncSession, key_id: int, at: datetime) -> bool:
    """Mark a key revoked; False when it was unknown or already revoked."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def bump_revision(session: AsyncSession) -> None:
    """Move the auth revision on (creating its row if needed)."""
    statement = upsert_insert(session, AuthRevision).values(id=1, revision=1)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"revision": AuthRevision.revision + 1}
        )
    )


_REVISION = select(table_of(AuthRevision).c.revision).where(table_of(AuthRevision).c.id == 1)


async def revision(session: AsyncSession) -> int:
    """The current auth revision (0 before any revocation)."""
    # Core, not the ORM: read once per batch of requests on every process's hot path.
    connection = await session.connection()
    value = await connection.scalar(_REVISION)
    return int(value or 0)
