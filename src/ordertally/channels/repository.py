"""Every query of the channels domain (here: the ingest path's account refs, SKU mapping rows
and order links)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels.models import ChannelAccount, ChannelOrderLink, ChannelSkuMapping
from ordertally.core.db import dialect_of, table_of

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
