"""Channel accounts, their credentials and sync state, and SKU mappings.

Services receive a session and never commit; the caller's boundary does.
Credentials are one JSON document encrypted with the PII cipher, bound to the account code as
associated data, and are never returned by the API (`has_credentials` only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.channels import repository
from ordertally.channels.errors import (
    AccountExists,
    AccountNotFound,
    MappingExists,
    MappingNotFound,
)
from ordertally.channels.models import ChannelAccount, ChannelSkuMapping, ChannelSyncState
from ordertally.channels.schemas import AccountCreate, AccountPatch, SkuMappingIn
from ordertally.core import clock
from ordertally.core.crypto import get_cipher
from ordertally.core.settings import get_settings

_SYNC_FIELDS = (
    "sync_interval_seconds",
    "overlap_seconds",
    "page_size",
    "rate_limit_per_second",
    "rate_limit_burst",
    "empty_streak_threshold",
)


def _credentials_context(code: str) -> str:
    return f"channel_account.credentials:{code}"


def encrypt_credentials(code: str, secrets: dict[str, str]) -> str | None:
    """The stored form of an account's secrets (None when there are none)."""
    if not secrets:
        return None
    return get_cipher().encrypt(orjson.dumps(secrets).decode(), _credentials_context(code))


def credentials_of(account: ChannelAccount) -> dict[str, str]:
    """Decrypt an account's secrets (for the adapters; never for the API)."""
    if not account.credentials_enc:
        return {}
    raw = get_cipher().decrypt(account.credentials_enc, _credentials_context(account.code))
    loaded: dict[str, str] = orjson.loads(raw)
    return loaded


def _defaults() -> dict[str, Any]:
    s = get_settings()
    return {
        "sync_interval_seconds": s.channels_sync_interval_seconds,
        "overlap_seconds": s.channels_sync_overlap_seconds,
        "page_size": s.channels_sync_page_size,
        "rate_limit_per_second": s.channels_rate_limit_per_second,
        "rate_limit_burst": s.channels_rate_limit_burst,
        "empty_streak_threshold": s.channels_empty_streak_threshold,
    }


async def create_account(session: AsyncSession, data: AccountCreate) -> ChannelAccount:
    """Create an account and its sync state (cursor at `start_at`, default now - overlap)."""
    if await get_account_or_none(session, data.code) is not None:
        raise AccountExists(f"channel account {data.code!r} exists", account=data.code)
    now = clock.now()
    values = _defaults()
    for name in _SYNC_FIELDS:
        given = getattr(data, name)
        if given is not None:
            values[name] = given
    try:
        account = await repository.add_account(
            session,
            {
                "code": data.code,
                "platform": data.platform,
                "name": data.name,
                "shop_id": data.shop_id,
                "config": data.config.model_dump(exclude_none=True),
                "credentials_enc": encrypt_credentials(
                    data.code, data.credentials.model_dump(exclude_none=True)
                ),
                "active": data.active,
                "created_at": now,
                "updated_at": now,
                **values,
            },
        )
    except IntegrityError as exc:
        raise AccountExists(f"channel account {data.code!r} exists", account=data.code) from exc
    start = (
        clock.as_utc(data.start_at)
        if data.start_at
        else now - timedelta(seconds=account.overlap_seconds)
    )
    await repository.add_sync_state(
        session,
        {
            "account_id": account.id,
            "cursor_at": start,
            "error_count": 0,
            "empty_streak": 0,
            "orders_seen": 0,
            "updated_at": now,
        },
    )
    return account


async def get_account_or_none(session: AsyncSession, code: str) -> ChannelAccount | None:
    """An account by code, or None."""
    return await repository.account_by_code(session, code)


async def get_account(session: AsyncSession, code: str) -> ChannelAccount:
    """An account by code, or AccountNotFound."""
    account = await get_account_or_none(session, code)
    if account is None:
        raise AccountNotFound(f"channel account {code!r} does not exist", account=code)
    return account


async def list_accounts(session: AsyncSession) -> list[ChannelAccount]:
    """Every account, by code."""
    return await repository.accounts(session)


async def update_account(session: AsyncSession, code: str, patch: AccountPatch) -> ChannelAccount:
    """Change an account; given credentials replace those of the same name."""
    account = await get_account(session, code)
    given = patch.model_dump(exclude_unset=True)
    for name in ("name", "shop_id", "active", *_SYNC_FIELDS):
        if name in given and given[name] is not None:
            setattr(account, name, given[name])
    if patch.config is not None:
        account.config = {**account.config, **patch.config.model_dump(exclude_none=True)}
    if patch.credentials is not None:
        secrets = {**credentials_of(account), **patch.credentials.model_dump(exclude_none=True)}
        account.credentials_enc = encrypt_credentials(code, secrets)
    account.updated_at = clock.now()
    await session.flush()
    return account


def account_view(account: ChannelAccount) -> dict[str, Any]:
    """An account as the API shows it: secrets reduced to their names."""
    names = sorted(credentials_of(account)) if account.credentials_enc else []
    return {
        "code": account.code,
        "platform": account.platform,
        "name": account.name,
        "shop_id": account.shop_id,
        "config": dict(account.config),
        "has_credentials": bool(names),
        "credential_names": names,
        **{name: getattr(account, name) for name in _SYNC_FIELDS},
        "active": account.active,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }


async def sync_state(session: AsyncSession, account_id: int) -> ChannelSyncState:
    """An account's sync state, created (cursor now) when it has none."""
    state = await repository.sync_state(session, account_id)
    if state is None:
        state = await repository.add_sync_state(
            session,
            {
                "account_id": account_id,
                "cursor_at": clock.now(),
                "error_count": 0,
                "empty_streak": 0,
                "orders_seen": 0,
                "updated_at": clock.now(),
            },
        )
    return state


async def status_view(session: AsyncSession, code: str) -> dict[str, Any]:
    """Last success, lag, errors and empty streak of one account."""
    account = await get_account(session, code)
    state = await sync_state(session, account.id)
    linked = await repository.count_links(session, account.id)
    lag = state.lag_seconds
    if state.cursor_at is not None and account.platform in ("amazon", "pinduoduo"):
        lag = max((clock.now() - clock.as_utc(state.cursor_at)).total_seconds(), 0.0)
    return {
        "account": account.code,
        "platform": account.platform,
        "active": account.active,
        "cursor_at": state.cursor_at,
        "last_attempt_at": state.last_attempt_at,
        "last_success_at": state.last_success_at,
        "last_error": state.last_error,
        "error_count": state.error_count,
        "empty_streak": state.empty_streak,
        "empty_streak_alert": state.empty_streak >= account.empty_streak_threshold
        and state.orders_seen > 0,
        "lag_seconds": lag,
        "orders_linked": linked,
    }


# --- SKU mappings ------------------------------------------------------------------------------


async def add_mapping(session: AsyncSession, data: SkuMappingIn) -> ChannelSkuMapping:
    """Map a platform SKU to ours, or MappingExists; ours must be an active catalogue SKU
    (UnknownSku, InactiveSku)."""
    await catalog_service.require_sellable(session, data.sku)
    now = clock.now()
    try:
        return await repository.add_mapping(
            session,
            {
                "platform": data.platform,
                "account_code": data.account_code,
                "platform_sku": data.platform_sku,
                "sku": data.sku,
                "created_at": now,
                "updated_at": now,
            },
        )
    except IntegrityError as exc:
        raise MappingExists(
            f"{data.platform} SKU {data.platform_sku!r} is already mapped",
            platform_sku=data.platform_sku,
        ) from exc


async def list_mappings(
    session: AsyncSession, platform: str | None, account_code: str | None, limit: int, after: int
) -> list[ChannelSkuMapping]:
    """A page of mappings after an id, optionally of one platform and account code."""
    return await repository.mappings(session, platform, account_code, limit, after)


async def get_mapping(session: AsyncSession, mapping_id: int) -> ChannelSkuMapping:
    """A mapping by id, or MappingNotFound."""
    mapping = await repository.mapping(session, mapping_id)
    if mapping is None:
        raise MappingNotFound(f"SKU mapping {mapping_id} does not exist")
    return mapping


async def update_mapping(session: AsyncSession, mapping_id: int, sku: str) -> ChannelSkuMapping:
    """Point a mapping at another SKU (an active catalogue SKU, like `add_mapping`)."""
    mapping = await get_mapping(session, mapping_id)
    await catalog_service.require_sellable(session, sku)
    mapping.sku = sku
    mapping.updated_at = clock.now()
    await session.flush()
    return mapping


async def delete_mapping(session: AsyncSession, mapping_id: int) -> None:
    """Delete a mapping, or MappingNotFound."""
    await repository.delete_mapping(session, await get_mapping(session, mapping_id))
