"""Every query of the channels domain: accounts, sync state, SKU mappings, the webhook inbox,
and the ingest path's account refs, mapping rows and order links."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from ordertally.channels.models import (
    ChannelAccount,
    ChannelOrderLink,
    ChannelSkuMapping,
    ChannelSyncState,
    ChannelWebhook,
    FileImport,
)
from ordertally.core.db import dialect_of, table_of, upsert_insert

_INBOX = table_of(ChannelWebhook)


# --- accounts and their sync state --------------------------------------------------------------


async def add_account(session: AsyncSession, values: dict[str, Any]) -> ChannelAccount:
    """Insert an account; IntegrityError when its code is taken."""
    account = ChannelAccount(**values)
    session.add(account)
    await session.flush()
    return account


async def account_by_code(session: AsyncSession, code: str) -> ChannelAccount | None:
    """One account by its code."""
    return await session.scalar(select(ChannelAccount).where(ChannelAccount.code == code))


async def account_by_id(session: AsyncSession, account_id: int) -> ChannelAccount | None:
    """One account by id."""
    return await session.get(ChannelAccount, account_id)


async def accounts(session: AsyncSession) -> list[ChannelAccount]:
    """Every account, by code."""
    return list((await session.scalars(select(ChannelAccount).order_by(ChannelAccount.code))).all())


async def add_sync_state(session: AsyncSession, values: dict[str, Any]) -> ChannelSyncState:
    """Insert an account's sync state."""
    state = ChannelSyncState(**values)
    session.add(state)
    await session.flush()
    return state


async def sync_state(session: AsyncSession, account_id: int) -> ChannelSyncState | None:
    """An account's sync state, read fresh."""
    return await session.get(ChannelSyncState, account_id, populate_existing=True)


async def active_accounts_with_state(
    session: AsyncSession, platforms: Collection[str]
) -> list[tuple[ChannelAccount, ChannelSyncState]]:
    """Active accounts of these platforms with their sync state."""
    rows = await session.execute(
        select(ChannelAccount, ChannelSyncState)
        .join(ChannelSyncState, ChannelSyncState.account_id == ChannelAccount.id)
        .where(ChannelAccount.active.is_(True), ChannelAccount.platform.in_(list(platforms)))
    )
    return [(account, state) for account, state in rows.all()]


async def count_links(session: AsyncSession, account_id: int) -> int:
    """Orders linked to an account."""
    linked = await session.scalar(
        select(func.count())
        .select_from(ChannelOrderLink)
        .where(ChannelOrderLink.account_id == account_id)
    )
    return int(linked or 0)


# --- SKU mappings -------------------------------------------------------------------------------


async def add_mapping(session: AsyncSession, values: dict[str, Any]) -> ChannelSkuMapping:
    """Insert a mapping in a savepoint; IntegrityError (savepoint rolled back) when the platform
    SKU is mapped already."""
    mapping = ChannelSkuMapping(**values)
    async with session.begin_nested():
        session.add(mapping)
        await session.flush()
    return mapping


async def mappings(
    session: AsyncSession, platform: str | None, account_code: str | None, limit: int, after: int
) -> list[ChannelSkuMapping]:
    """Mappings after an id, optionally of one platform and one account code, by id."""
    stmt = select(ChannelSkuMapping).where(ChannelSkuMapping.id > after)
    if platform:
        stmt = stmt.where(ChannelSkuMapping.platform == platform)
    if account_code is not None:
        stmt = stmt.where(ChannelSkuMapping.account_code == account_code)
    return list((await session.scalars(stmt.order_by(ChannelSkuMapping.id).limit(limit))).all())


async def mapping(session: AsyncSession, mapping_id: int) -> ChannelSkuMapping | None:
    """One mapping by id."""
    return await session.get(ChannelSkuMapping, mapping_id)


async def delete_mapping(session: AsyncSession, found: ChannelSkuMapping) -> None:
    """Delete a mapping."""
    await session.delete(found)
    await session.flush()


# --- the webhook inbox --------------------------------------------------------------------------


async def store_webhook(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Insert a received webhook; None when this (account, webhook id) was stored before."""
    stmt = (
        upsert_insert(session, _INBOX)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["account_id", "webhook_id"])
        .returning(_INBOX.c.id)
    )
    receipt_id = (await session.execute(stmt)).scalar_one_or_none()
    return int(receipt_id) if receipt_id is not None else None


async def webhook(session: AsyncSession, receipt_id: int) -> ChannelWebhook | None:
    """One stored webhook, read fresh."""
    return await session.get(ChannelWebhook, receipt_id, populate_existing=True)


async def finish_webhook(
    session: AsyncSession, receipt_id: int, status: str, error: str | None, at: datetime
) -> None:
    """Record the outcome of applying a stored webhook (one more attempt)."""
    await session.execute(
        update(_INBOX)
        .where(_INBOX.c.id == receipt_id)
        .values(status=status, attempts=_INBOX.c.attempts + 1, last_error=error, applied_at=at)
    )


async def purge_webhook_bodies(session: AsyncSession, applied_before: datetime) -> int:
    """Empty the bodies of webhooks applied before a time; returns how many."""
    result = await session.execute(
        update(_INBOX)
        .where(
            _INBOX.c.status == "applied",
            _INBOX.c.applied_at < applied_before,
            _INBOX.c.body != "",
        )
        .values(body="")
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def set_webhook_case(session: AsyncSession, receipt_id: int, case_id: int) -> None:
    """Link a held webhook to its `order_not_created` case."""
    await session.execute(
        update(_INBOX).where(_INBOX.c.id == receipt_id).values(held_case_id=case_id)
    )


async def failed_webhooks(
    session: AsyncSession, limit: int, account_id: int | None = None
) -> list[int]:
    """Ids of webhooks that could not be applied (held), oldest first."""
    stmt = select(_INBOX.c.id).where(_INBOX.c.status == "failed")
    if account_id is not None:
        stmt = stmt.where(_INBOX.c.account_id == account_id)
    rows = await session.scalars(stmt.order_by(_INBOX.c.received_at).limit(limit))
    return [int(i) for i in rows.all()]


async def held_webhook_rows(
    session: AsyncSession, limit: int
) -> list[tuple[int, str, str, str, int, str | None, datetime, int | None]]:
    """(id, account code, webhook id, topic, attempts, last error, received at, held case) of
    the webhooks that could not be applied (held), oldest first."""
    rows = await session.execute(
        select(
            _INBOX.c.id,
            ChannelAccount.code,
            _INBOX.c.webhook_id,
            _INBOX.c.topic,
            _INBOX.c.attempts,
            _INBOX.c.last_error,
            _INBOX.c.received_at,
            _INBOX.c.held_case_id,
        )
        .join(ChannelAccount, ChannelAccount.id == _INBOX.c.account_id)
        .where(_INBOX.c.status == "failed")
        .order_by(_INBOX.c.received_at)
        .limit(limit)
    )
    return [tuple(r) for r in rows.all()]


async def pending_webhooks(
    session: AsyncSession, limit: int, older_than: datetime | None
) -> list[int]:
    """Ids of webhooks not applied yet (received before `older_than`), oldest first."""
    stmt = select(_INBOX.c.id).where(_INBOX.c.status == "pending")
    if older_than is not None:
        stmt = stmt.where(_INBOX.c.received_at < older_than)
    rows = await session.scalars(stmt.order_by(_INBOX.c.received_at).limit(limit))
    return [int(i) for i in rows.all()]


# --- the ingest path: account refs, mapping rows, order links ----------------------------------

_LINK = table_of(ChannelOrderLink)
_INSERT_LINKS = insert(_LINK)
_LINK_COLUMNS = (
    _LINK.c.external_id,
    _LINK.c.order_id,
    _LINK.c.order_no,
    _LINK.c.platform_updated_at,
    _LINK.c.raw_status,
    _LINK.c.address_hash,
)


async def plan_each_query(session: AsyncSession) -> None:
    """PostgreSQL: plan this transaction's statements for their values (no cached generic
    plan), so a table that was empty when a bulk load began is not scanned sequentially."""
    if dialect_of(session) == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def account_ref(session: AsyncSession, code: str) -> Any:
    """An account's (id, code, platform), or None."""
    return (
        await session.execute(
            select(ChannelAccount.id, ChannelAccount.code, ChannelAccount.platform).where(
                ChannelAccount.code == code
            )
        )
    ).first()


async def mapping_rows(session: AsyncSession, platform: str, account_code: str) -> list[Any]:
    """(account_code, platform_sku, sku) of a platform's mappings: platform-wide ('') and the
    account's own."""
    rows = await session.execute(
        select(
            ChannelSkuMapping.account_code, ChannelSkuMapping.platform_sku, ChannelSkuMapping.sku
        ).where(
            ChannelSkuMapping.platform == platform,
            ChannelSkuMapping.account_code.in_(["", account_code]),
        )
    )
    return list(rows.all())


async def links_by_external(
    session: AsyncSession, account_id: int, external_ids: list[str]
) -> list[Any]:
    """The links of an account's orders with these external ids (one row each, with
    external_id, order_id, order_no, platform_updated_at, raw_status, address_hash)."""
    rows = await session.execute(
        select(*_LINK_COLUMNS).where(
            _LINK.c.account_id == account_id, _LINK.c.external_id.in_(external_ids)
        )
    )
    return list(rows.all())


async def add_links(session: AsyncSession, rows: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Insert one link or many (a multi-row INSERT); IntegrityError for a known external id."""
    await session.execute(_INSERT_LINKS, rows)


async def update_link(
    session: AsyncSession, account_id: int, external_id: str, values: dict[str, Any]
) -> None:
    """Remember a newer platform version of a linked order."""
    await session.execute(
        update(_LINK)
        .where(tuple_(_LINK.c.account_id, _LINK.c.external_id) == (account_id, external_id))
        .values(**values)
    )


# --- order files uploaded from the back office --------------------------------------------------


async def add_file_import(session: AsyncSession, values: dict[str, Any]) -> int:
    """Store an uploaded file, queued; returns its id."""
    result = await session.execute(insert(FileImport).values(**values).returning(FileImport.id))
    return int(result.scalar_one())


async def get_file_import(
    session: AsyncSession, import_id: int, *, with_body: bool = False, with_report: bool = False
) -> FileImport | None:
    """One file import (its file and its report only when asked for)."""
    stmt = select(FileImport).where(FileImport.id == import_id)
    if with_body:
        stmt = stmt.options(undefer(FileImport.body))
    if with_report:
        stmt = stmt.options(undefer(FileImport.report))
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def recent_file_imports(session: AsyncSession, limit: int) -> list[FileImport]:
    """The latest file imports, newest first."""
    rows = await session.scalars(select(FileImport).order_by(FileImport.id.desc()).limit(limit))
    return list(rows.all())


async def file_imports_to_run(
    session: AsyncSession, stale_before: datetime, limit: int
) -> list[int]:
    """Queued imports, and running ones whose worker stopped reporting (to run again)."""
    rows = await session.scalars(
        select(FileImport.id)
        .where(
            (FileImport.state == "queued")
            | ((FileImport.state == "running") & (FileImport.beat_at < stale_before))
        )
        .order_by(FileImport.id)
        .limit(limit)
    )
    return [int(i) for i in rows.all()]


async def change_file_import(
    session: AsyncSession,
    import_id: int,
    values: dict[str, Any],
    *,
    from_states: tuple[str, ...] | None = None,
    quiet_since: datetime | None = None,
) -> bool:
    """Update a file import (compare-and-set on its state when `from_states` is given)."""
    stmt = update(FileImport).where(FileImport.id == import_id)
    if from_states is not None:
        stmt = stmt.where(FileImport.state.in_(from_states))
    if quiet_since is not None:  # queued, or running with no report since then
        stmt = stmt.where((FileImport.state == "queued") | (FileImport.beat_at < quiet_since))
    result = await session.execute(stmt.values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]
