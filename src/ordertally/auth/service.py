"""API keys and roles: who the caller is and what their role may do."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth import repository
from ordertally.auth.models import ROLES
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.edge import bearer_token
from ordertally.core.errors import Forbidden, InvalidRequest, Unauthenticated

PERMISSIONS: dict[str, frozenset[str]] = {
    "orders.read": frozenset(ROLES),
    "orders.create": frozenset({"admin", "ops", "cs"}),
    "orders.cancel": frozenset({"admin", "ops", "cs"}),
    "orders.events": frozenset({"admin", "ops", "cs", "finance"}),
    "orders.contact": frozenset({"admin", "ops", "cs", "warehouse"}),
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
}


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    name: str
    role: str

    @property
    def scope(self) -> str:
        """Idempotency keys are scoped to the API key that sent them."""
        return f"apikey:{self.key_id}"


def hash_key(raw: str) -> str:
    """Keys carry 256 bits of entropy, so a plain SHA-256 is the right storage form."""
    return hashlib.sha256(raw.encode()).hexdigest()


async def create_api_key(session: AsyncSession, name: str, role: str) -> tuple[int, str]:
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
        },
    )
    return key_id, raw


def check_permission(principal: Principal, permission: str) -> None:
    """Refuse a role that may not do something."""
    if principal.role not in PERMISSIONS[permission]:
        raise Forbidden(f"role {principal.role!r} may not {permission}", permission=permission)


class Authenticator:
    """Resolves bearer keys, caching hits briefly so a hot path does not query every time."""

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer` header, or Unauthenticated."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("send Authorization: Bearer <api key>")
        key_hash = hash_key(token)
        hit = self._cache.get(key_hash)
        mono = time.monotonic()
        if hit is not None and hit[0] > mono:
            return hit[1]
        async with self._db.transaction(write=False) as session:
            row = await repository.by_hash(session, key_hash)
        if row is None:
            self._cache.pop(key_hash, None)
            raise Unauthenticated("unknown or revoked API key")
        principal = Principal(row.id, row.name, row.role)
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (mono + self._ttl, principal)
        return principal
