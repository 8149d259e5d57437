"""Every query of the customers domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import table_of, upsert_insert
from ordertally.customers.models import (
    Customer,
    CustomerFlag,
    CustomerIdentity,
    CustomerOrder,
    CustomerProfile,
    CustomerTag,
)

NO_SYNC = {"synchronize_session": False}

# --- customers and identities ------------------------------------------------------------------


async def get_customer(session: AsyncSession, customer_id: int) -> Customer | None:
    """One customer by id, read fresh."""
    return await session.scalar(
        select(Customer).where(Customer.id == customer_id).execution_options(populate_existing=True)
    )


async def insert_customer(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert a customer; returns its id."""
    result = await session.execute(insert(Customer).values(**values).returning(Customer.id))
    return int(result.scalar_one())


async def update_customer(session: AsyncSession, customer_id: int, values: dict[str, Any]) -> None:
    """Change some columns of a customer."""
    await session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(**values)
        .execution_options(**NO_SYNC)
    )


async def delete_customer(session: AsyncSession, customer_id: int) -> None:
    """Remove a customer row (one that lost a creation race and owns nothing)."""
    await session.execute(delete(Customer).where(Customer.id == customer_id))


async def find_identity(session: AsyncSession, kind: str, value: str) -> CustomerIdentity | None:
    """The identity with this key, if any."""
    return await session.scalar(
        select(CustomerIdentity)
        .where(CustomerIdentity.kind == kind, CustomerIdentity.value == value)
        .execution_options(populate_existing=True)
    )


async def insert_identity_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert an identity unless its (kind, value) exists; True when inserted."""
    stmt = (
        upsert_insert(session, CustomerIdentity)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "value"])
        .returning(CustomerIdentity.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def get_customers(session: AsyncSession, customer_ids: list[int]) -> dict[int, Customer]:
    """Customers by id, read fresh (those that exist)."""
    if not customer_ids:
        return {}
    rows = await session.scalars(
        select(Customer)
        .where(Customer.id.in_(customer_ids))
        .execution_options(populate_existing=True)
    )
    return {c.id: c for c in rows.all()}


async def insert_customers(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert customers; their ids, in the order of `rows`."""
    if not rows:
        return []
    result = await session.execute(
        insert(Customer).returning(Customer.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars().all()]


async def update_customers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Set the masked name and phone of many customers (`id`, `name_masked`, `phone_masked`,
    `updated_at` per row), in one executemany."""
    if rows:
        await session.execute(
            update(table_of(Customer))
            .where(table_of(Customer).c.id == bindparam("b_id"))
            .values(
                name_masked=bindparam("b_name"),
                phone_masked=bindparam("b_phone"),
                updated_at=bindparam("b_at"),
            ),
            [
                {
                    "b_id": r["id"],
                    "b_name": r["name_masked"],
                    "b_phone": r["phone_masked"],
                    "b_at": r["updated_at"],
                }
                for r in rows
            ],
        )


async def identity_owners(session: AsyncSession, kind: str, values: list[str]) -> dict[str, int]:
    """For identity keys of one kind, the customer each belongs to (keys with none are absent)."""
    if not values:
        return {}
    rows = await session.execute(
        select(CustomerIdentity.value, CustomerIdentity.customer_id).where(
            CustomerIdentity.kind == kind, CustomerIdentity.value.in_(values)
        )
    )
    return {str(value): int(customer_id) for value, customer_id in rows.all()}


async def insert_identities_if_absent(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> set[str]:
    """Insert identities of one kind unless their (kind, value) exists; the values inserted."""
    if not rows:
        return set()
    stmt = (
        upsert_insert(session, CustomerIdentity)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["kind", "value"])
        .returning(CustomerIdentity.value)
    )
    return {str(v) for v in (await session.execute(stmt)).scalars().all()}


async def identities_of(session: AsyncSession, customer_id: int) -> list[CustomerIdentity]:
    """A customer's identities, oldest first."""
    rows = await session.scalars(
        select(CustomerIdentity)
        .where(CustomerIdentity.customer_id == customer_id)
        .order_by(CustomerIdentity.id)
    )
    return list(rows.all())


async def move_owned_rows(session: AsyncSession, from_id: int, to_id: int) -> None:
    """Hand everything a customer owns to another one (a merge)."""
    for model in (CustomerIdentity, CustomerOrder, CustomerFlag):
        await session.execute(
            update(model)
            .where(model.customer_id == from_id)
            .values(customer_id=to_id)
            .execution_options(**NO_SYNC)
        )
    tags = await session.scalars(select(CustomerTag).where(CustomerTag.customer_id == from_id))
    for tag in list(tags.all()):
        await add_tag(session, to_id, tag.tag, tag.created_by, tag.created_at)
    await session.execute(delete(CustomerTag).where(CustomerTag.customer_id == from_id))
    await session.execute(delete(CustomerProfile).where(CustomerProfile.customer_id == from_id))
    # Customers merged earlier into the loser now point at the survivor directly.
    await session.execute(
        update(Customer)
        .where(Customer.merged_into_id == from_id)
        .values(merged_into_id=to_id)
        .execution_options(**NO_SYNC)
    )


async def by_identity_value(session: AsyncSession, kind: str, value: str) -> Customer | None:
    """The customer an identity belongs to."""
    return await session.scalar(
        select(Customer)
        .join(CustomerIdentity, CustomerIdentity.customer_id == Customer.id)
        .where(CustomerIdentity.kind == kind, CustomerIdentity.value == value)
    )


# --- orders --------------------------------------------------------------------------------------


async def customer_orders_of(session: AsyncSession, order_ids: list[int]) -> list[CustomerOrder]:
    """The customers' copies of these orders (those linked), read fresh."""
    if not order_ids:
        return []
    result = await session.scalars(
        select(CustomerOrder)
        .where(CustomerOrder.order_id.in_(order_ids))
        .execution_options(populate_existing=True)
    )
    return list(result.all())


async def get_customer_order(session: AsyncSession, order_id: int) -> CustomerOrder | None:
    """The customer's copy of an order, read fresh."""
    return await session.scalar(
        select(CustomerOrder)
        .where(CustomerOrder.order_id == order_id)
        .execution_options(populate_existing=True)
    )


async def save_customer_order(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert or update the customer's copy of an order (keyed by order_id)."""
    stmt = upsert_insert(session, CustomerOrder).values(**values)
    changes = {k: stmt.excluded[k] for k in values if k != "order_id"}
    await session.execute(stmt.on_conflict_do_update(index_elements=["order_id"], set_=changes))


async def save_customer_orders(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """`save_customer_order` for many rows with the same keys, in one executemany."""
    if not rows:
        return
    stmt = upsert_insert(session, CustomerOrder)
    changes = {k: stmt.excluded[k] for k in rows[0] if k != "order_id"}
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["order_id"], set_=changes), rows
    )


async def orders_for_profiles(
    session: AsyncSession, customer_ids: list[int], placed_since: datetime, refunded_since: datetime
) -> dict[int, list[CustomerOrder]]:
    """`orders_for_profile` for many customers at once, by customer id."""
    found: dict[int, list[CustomerOrder]] = {c: [] for c in customer_ids}
    if not customer_ids:
        return found
    rows = await session.scalars(
        select(CustomerOrder)
        .where(
            CustomerOrder.customer_id.in_(customer_ids),
            or_(
                CustomerOrder.placed_at >= placed_since,
                CustomerOrder.refunded_at >= refunded_since,
            ),
        )
        .order_by(CustomerOrder.customer_id, CustomerOrder.placed_at, CustomerOrder.id)
        .execution_options(populate_existing=True)
    )
    for row in rows.all():
        found.setdefault(row.customer_id, []).append(row)
    return found


async def orders_for_profile(
    session: AsyncSession, customer_id: int, placed_since: datetime, refunded_since: datetime
) -> list[CustomerOrder]:
    """A customer's orders placed in the window or refunded in the returns window."""
    rows = await session.scalars(
        select(CustomerOrder)
        .where(
            CustomerOrder.customer_id == customer_id,
            or_(
                CustomerOrder.placed_at >= placed_since,
                CustomerOrder.refunded_at >= refunded_since,
            ),
        )
        .order_by(CustomerOrder.placed_at, CustomerOrder.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def recent_orders(
    session: AsyncSession,
    customer_id: int,
    limit: int,
    channels: tuple[str, ...] | None = None,
) -> list[CustomerOrder]:
    """A customer's latest orders, newest first (of these channel accounts only, if given)."""
    stmt = select(CustomerOrder).where(CustomerOrder.customer_id == customer_id)
    if channels is not None:
        stmt = stmt.where(CustomerOrder.channel.in_(channels))
    rows = await session.scalars(
        stmt.order_by(CustomerOrder.placed_at.desc(), CustomerOrder.id.desc()).limit(limit)
    )
    return list(rows.all())


async def order_nos_in(
    session: AsyncSession, customer_ids: list[int], channels: tuple[str, ...]
) -> dict[int, set[str]]:
    """Per customer, the numbers of their orders from these channel accounts (customers with
    none are absent)."""
    if not customer_ids or not channels:
        return {}
    rows = await session.execute(
        select(CustomerOrder.customer_id, CustomerOrder.order_no).where(
            CustomerOrder.customer_id.in_(customer_ids), CustomerOrder.channel.in_(channels)
        )
    )
    found: dict[int, set[str]] = {}
    for customer_id, order_no in rows:
        found.setdefault(customer_id, set()).add(order_no)
    return found


# --- profiles ------------------------------------------------------------------------------------


async def get_profile(session: AsyncSession, customer_id: int) -> CustomerProfile | None:
    """A customer's profile, read fresh."""
    return await session.scalar(
        select(CustomerProfile)
        .where(CustomerProfile.customer_id == customer_id)
        .execution_options(populate_existing=True)
    )


async def save_profile(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert or replace a customer's profile."""
    stmt = upsert_insert(session, CustomerProfile).values(**values)
    changes = {k: stmt.excluded[k] for k in values if k != "customer_id"}
    await session.execute(stmt.on_conflict_do_update(index_elements=["customer_id"], set_=changes))


async def get_profiles(
    session: AsyncSession, customer_ids: list[int]
) -> dict[int, CustomerProfile]:
    """Several customers' profiles, read fresh, by customer id."""
    if not customer_ids:
        return {}
    rows = await session.scalars(
        select(CustomerProfile)
        .where(CustomerProfile.customer_id.in_(customer_ids))
        .execution_options(populate_existing=True)
    )
    return {p.customer_id: p for p in rows.all()}


async def save_profiles(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """`save_profile` for many rows with the same keys, in one executemany."""
    if not rows:
        return
    stmt = upsert_insert(session, CustomerProfile)
    changes = {k: stmt.excluded[k] for k in rows[0] if k != "customer_id"}
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["customer_id"], set_=changes), rows
    )


async def profiles_due_for_ageing(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Customers whose figures changed by time alone since they were computed."""
    rows = await session.scalars(
        select(CustomerProfile.customer_id)
        .where(CustomerProfile.next_ageing_at <= now)
        .order_by(CustomerProfile.next_ageing_at)
        .limit(limit)
    )
    return [int(r) for r in rows.all()]


# --- tags ----------------------------------------------------------------------------------------


async def add_tag(session: AsyncSession, customer_id: int, tag: str, by: str, at: datetime) -> bool:
    """Tag a customer; True when the tag was new."""
    stmt = (
        upsert_insert(session, CustomerTag)
        .values(customer_id=customer_id, tag=tag, created_by=by, created_at=at)
        .on_conflict_do_nothing(index_elements=["customer_id", "tag"])
        .returning(CustomerTag.tag)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def remove_tag(session: AsyncSession, customer_id: int, tag: str) -> bool:
    """Untag a customer; True when the tag was there."""
    result = await session.execute(
        delete(CustomerTag).where(CustomerTag.customer_id == customer_id, CustomerTag.tag == tag)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def tags_of(session: AsyncSession, customer_id: int) -> list[str]:
    """A customer's tags, sorted."""
    rows = await session.scalars(
        select(CustomerTag.tag)
        .where(CustomerTag.customer_id == customer_id)
        .order_by(CustomerTag.tag)
    )
    return list(rows.all())


async def tags_of_many(session: AsyncSession, customer_ids: list[int]) -> dict[int, list[str]]:
    """`tags_of` for many customers at once, by customer id."""
    found: dict[int, list[str]] = {c: [] for c in customer_ids}
    if not customer_ids:
        return found
    rows = await session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag)
        .where(CustomerTag.customer_id.in_(customer_ids))
        .order_by(CustomerTag.customer_id, CustomerTag.tag)
    )
    for customer_id, tag in rows.all():
        found.setdefault(int(customer_id), []).append(str(tag))
    return found


async def orders_placed_in(
    session: AsyncSession, ranges: dict[int, tuple[datetime, datetime]]
) -> dict[int, list[CustomerOrder]]:
    """Per customer, their orders placed in (start, end] of that customer's range (one query)."""
    found: dict[int, list[CustomerOrder]] = {c: [] for c in ranges}
    if not ranges:
        return found
    rows = await session.scalars(
        select(CustomerOrder)
        .where(
            or_(
                *(
                    and_(
                        CustomerOrder.customer_id == customer_id,
                        CustomerOrder.placed_at > start,
                        CustomerOrder.placed_at <= end,
                    )
                    for customer_id, (start, end) in sorted(ranges.items())
                )
            )
        )
        .order_by(CustomerOrder.customer_id, CustomerOrder.placed_at, CustomerOrder.id)
    )
    for row in rows.all():
        found.setdefault(row.customer_id, []).append(row)
    return found


async def customers_with_tag(session: AsyncSession, tag: str, limit: int) -> list[Customer]:
    """Customers carrying a tag, by id."""
    rows = await session.scalars(
        select(Customer)
        .join(CustomerTag, CustomerTag.customer_id == Customer.id)
        .where(CustomerTag.tag == tag)
        .order_by(Customer.id)
        .limit(limit)
    )
    return list(rows.all())


# --- risk flags ----------------------------------------------------------------------------------


async def insert_flag_if_absent(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Record a flag unless this order already raised this kind; its id when inserted."""
    stmt = (
        upsert_insert(session, CustomerFlag)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["order_id", "kind"])
        .returning(CustomerFlag.id)
    )
    flag_id = (await session.execute(stmt)).scalar_one_or_none()
    return int(flag_id) if flag_id is not None else None


async def set_flag_case(session: AsyncSession, flag_id: int, case_id: int) -> None:
    """Remember the exception case a flag opened."""
    await session.execute(
        update(CustomerFlag)
        .where(CustomerFlag.id == flag_id)
        .values(case_id=case_id)
        .execution_options(**NO_SYNC)
    )


async def flags_of(
    session: AsyncSession, customer_id: int, since: datetime | None = None
) -> list[CustomerFlag]:
    """A customer's flags (raised since a moment), oldest first."""
    stmt = select(CustomerFlag).where(CustomerFlag.customer_id == customer_id)
    if since is not None:
        stmt = stmt.where(CustomerFlag.created_at >= since)
    rows = await session.scalars(stmt.order_by(CustomerFlag.id))
    return list(rows.all())


async def flags_of_many(
    session: AsyncSession, customer_ids: list[int], since: datetime
) -> dict[int, list[CustomerFlag]]:
    """`flags_of` for many customers at once, by customer id."""
    found: dict[int, list[CustomerFlag]] = {c: [] for c in customer_ids}
    if not customer_ids:
        return found
    rows = await session.scalars(
        select(CustomerFlag)
        .where(CustomerFlag.customer_id.in_(customer_ids), CustomerFlag.created_at >= since)
        .order_by(CustomerFlag.id)
    )
    for row in rows.all():
        found.setdefault(row.customer_id, []).append(row)
    return found
