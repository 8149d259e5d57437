"""Saved views of the orders screen: a search and its filters kept under a name, for the user
who saved it, or shared with everyone by an admin. Saving again under a taken name replaces
that view's query (the person asked for that name twice)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.orders import repository
from ordertally.orders.errors import SavedViewNotFound, SavedViewNotYours, SavedViewsFull
from ordertally.orders.models import SavedView
from ordertally.orders.schemas import SavedViewIn

MAX_PER_USER = 50
SHARE_ROLES = frozenset({"admin"})


async def views_for(session: AsyncSession, username: str) -> list[SavedView]:
    """The views a user can apply: the shared ones, then their own."""
    return await repository.views_for(session, username)


async def save(session: AsyncSession, username: str, role: str, body: SavedViewIn) -> int:
    """Save (or replace, by name) a user's view; only an admin may share one."""
    if body.shared and role not in SHARE_ROLES:
        raise SavedViewNotYours("only an admin may share a view", field="shared")
    values = {"query": body.query.model_dump(), "shared": body.shared, "created_at": clock.now()}
    existing = await repository.view_named(session, username, body.name)
    if existing is not None:
        await repository.replace_view(session, existing.id, values)
        return existing.id
    if await repository.count_views(session, username) >= MAX_PER_USER:
        raise SavedViewsFull(f"{username} has {MAX_PER_USER} saved views", limit=MAX_PER_USER)
    return await repository.add_view(session, {"owner": username, "name": body.name, **values})


async def delete(session: AsyncSession, view_id: int, username: str, role: str) -> None:
    """Delete a view: its owner may, and an admin may delete a shared one."""
    view = await repository.get_view(session, view_id)
    if view is None:
        raise SavedViewNotFound(f"saved view {view_id} does not exist")
    if view.owner != username and not (view.shared and role in SHARE_ROLES):
        raise SavedViewNotYours(f"saved view {view_id} belongs to {view.owner}")
    if not await repository.delete_view(session, view_id):
        raise SavedViewNotFound(f"saved view {view_id} does not exist")
