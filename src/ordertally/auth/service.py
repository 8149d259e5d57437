"""API keys and roles: who the caller is and what their role may do."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth import repository
from ordertally.auth.errors import ApiKeyNotFound
from ordertally.auth.models import ROLES, ApiKey
from ordertally.core import clock
from ordertally.core.db import Database, SharedRead
from ordertally.core.edge import bearer_token
from ordertally.core.errors import Forbidden, InvalidRequest, Unauthenticated

PERMISSIONS: dict[str, frozenset[str]] = {
    "orders.read": frozenset(ROLES),
    "orders.create": frozenset({"admin", "ops", "cs"}),
    "orders.cancel": frozenset({"admin", "ops", "cs"}),
    "orders.events": frozenset({"admin", "ops", "cs", "finance"}),
    "orders.contact": frozenset({"admin", "ops", "cs", "warehouse"}),
    "orders.review": frozenset({"admin", "ops", "cs", "finance"}),
    "exceptions.resolve": frozenset({"admin", "ops", "cs"}),
    "inventory.read": frozenset(ROLES),
    "inventory.manage": frozenset({"admin", "ops"}),
    "inventory.move": frozenset({"admin", "ops", "warehouse"}),
    "payments.create": frozenset({"admin", "ops", "cs"}),
    "payments.read": frozenset({"admin", "ops", "cs", "finance"}),
    "payments.manual": frozenset({"finance"}),
    "payments.reconcile": frozenset({"admin", "finance"}),
    "fulfillment.read": frozenset(ROLES),
    "fulfillment.ship": frozenset({"admin", "ops", "warehouse"}),
    "fulfillment.manage": frozenset({"admin", "ops"}),
    "notify.read": frozenset({"admin", "ops", "cs"}),
    "notify.manage": frozenset({"admin", "ops"}),
    "channels.read": frozenset({"admin", "ops", "cs", "finance"}),
    "channels.manage": frozenset({"admin", "ops"}),
    "channels.import": frozenset({"admin", "ops"}),
    "customers.read": frozenset({"admin", "ops", "cs"}),
    "customers.manage": frozenset({"admin", "ops"}),
    "users.manage": frozenset({"admin"}),
    "fx.manage": frozenset({"admin", "finance"}),
    "catalog.read": frozenset(ROLES),
    "catalog.manage": frozenset({"admin", "ops"}),
    "auth.manage": frozenset({"admin"}),
    "exports.read": frozenset({"admin", "ops", "cs", "finance"}),
    "exports.create": frozenset({"admin", "ops", "cs", "finance"}),
    "analytics.read": frozenset({"admin", "ops", "cs", "finance"}),
    "analytics.record": frozenset({"admin", "ops"}),
    "cases.read": frozenset(ROLES),
    "cases.work": frozenset(ROLES),
    "cases.manage": frozenset({"admin", "ops"}),
    "cases.batch": frozenset({"admin", "ops", "cs"}),
    "search.read": frozenset(ROLES),
    "search.manage": frozenset({"admin", "ops"}),
    "rules.read": frozenset({"admin", "ops", "cs"}),
    "rules.manage": frozenset({"admin", "ops"}),
    "aftersales.read": frozenset({"admin", "ops", "cs", "finance", "warehouse"}),
    "aftersales.manage": frozenset({"admin", "ops", "cs"}),
    "aftersales.refund": frozenset({"admin", "cs", "finance"}),
    "aftersales.receive": frozenset({"admin", "ops", "warehouse"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    name: str
    role: str
    # Warehouse codes the caller is limited to; None = not scoped.
    warehouses: tuple[str, ...] | None = None
    # Channel account codes the caller is limited to; None = not scoped.
    channels: tuple[str, ...] | None = None

    def may_act_for(self, warehouse_code: str | None) -> bool:
        """Whether a warehouse-scoped caller may see or act on this warehouse's work."""
        return self.warehouses is None or warehouse_code in self.warehouses

    def may_act_for_channel(self, account_code: str | None) -> bool:
        """Whether a channel-scoped caller may see or act on this channel account (a scoped
        caller never acts on what belongs to no account, e.g. a platform-wide mapping)."""
        return self.channels is None or account_code in self.channels

    @property
    def scope(self) -> str:
        """Idempotency keys are scoped to the API key that sent them."""
        return f"apikey:{self.key_id}"


def hash_key(raw: str) -> str:
    """Keys carry 256 bits of entropy, so a plain SHA-256 is the right storage form."""
    return hashlib.sha256(raw.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession,
    name: str,
    role: str,
    warehouses: list[str] | None = None,
    channels: list[str] | None = None,
) -> tuple[int, str]:
    """Create a key; returns (id, the raw key), which is never stored or shown again."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    raw = f"ot_{secrets.token_urlsafe(32)}"
    key_id = await repository.add(
        session,
        {
            "name": name,
            "role": role,
            "key_prefix": raw[:10],
            "key_hash": hash_key(raw),
            "created_at": clock.now(),
            "warehouses": sorted(set(warehouses)) if warehouses else None,
            "channels": sorted(set(channels)) if channels else None,
        },
    )
    return key_id, raw


def key_doc(key: ApiKey) -> dict[str, Any]:
    """What listing a key shows (never its hash)."""
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "key_prefix": key.key_prefix,
        "warehouses": key.warehouses,
        "channels": key.channels,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


async def list_api_keys(session: AsyncSession) -> list[dict[str, Any]]:
    """Every key, revoked ones included."""
    return [key_doc(k) for k in await repository.all_keys(session)]


async def revoke_api_key(session: AsyncSession, key_id: int) -> dict[str, Any]:
    """Revoke a key at once on every process (the auth revision moves); idempotent."""
    if await repository.revoke(session, key_id, clock.now()):
        await repository.bump_revision(session)
    key = await repository.by_id(session, key_id)
    if key is None:
        raise ApiKeyNotFound(f"no API key {key_id}")
    await session.refresh(key)
    return key_doc(key)


def check_permission(principal: Principal, permission: str) -> None:
    """Refuse a role that may not do something."""
    if principal.role not in PERMISSIONS[permission]:
        raise Forbidden(f"role {principal.role!r} may not {permission}", permission=permission)


class Authenticator:
    """Resolves bearer keys, caching hits briefly so a hot path does not query every time.

    A cached key is trusted only at the auth revision it was cached under. A request that
    would use the cache first learns the current revision from a read that *starts after the
    request arrived*: at most one revision read is in flight, and every request arriving
    meanwhile waits for the next one, which they share. So a revocation committed before a
    request was sent is seen by that request, on every process, at the cost of about one tiny
    indexed read per batch of concurrent requests.
    """

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        # key hash -> (expiry, principal, the revision read before the key was looked up)
        self._cache: dict[str, tuple[float, Principal, int]] = {}
        self._revision = SharedRead(lambda: repository.revision_now(db))

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer` header, or Unauthenticated."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("send Authorization: Bearer <api key>")
        key_hash = hash_key(token)
        mono = time.monotonic()
        revision = 0
        if self._ttl > 0:
            revision = await self._revision.get()
            hit = self._cache.get(key_hash)
            if hit is not None and hit[0] > mono and hit[2] == revision:
                return hit[1]
        async with self._db.transaction(write=False) as session:
            row = await repository.by_hash(session, key_hash)
        if row is None:
            self._cache.pop(key_hash, None)
            raise Unauthenticated("unknown or revoked API key")
        scope = tuple(row.warehouses) if row.warehouses else None
        channels = tuple(row.channels) if row.channels else None
        principal = Principal(row.id, row.name, row.role, scope, channels)
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (mono + self._ttl, principal, revision)
        return principal
