"""Every query of the inventory domain."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.db import Read, end_fold_with, execute_driver_sql, insert_rows, table_of
from ordertally.inventory.models import (
    Allocation,
    Reservation,
    Stock,
    StockMovement,
    Warehouse,
)

AVAILABLE = Stock.on_hand - Stock.reserved - Stock.safety_stock
_STOCK = table_of(Stock)
_WAREHOUSE = table_of(Warehouse)
_TRY_RESERVE = (
    update(_STOCK)
    .where(
        _STOCK.c.id == bindparam("stock_id"),
        _STOCK.c.on_hand - _STOCK.c.reserved - _STOCK.c.safety_stock >= bindparam("qty"),
    )
    .values(reserved=_STOCK.c.reserved + bindparam("qty"))
)
_CANDIDATE_BUCKETS = (
    select(
        _STOCK.c.id,
        _STOCK.c.warehouse_id,
        _STOCK.c.sku,
        _STOCK.c.bucket,
        (_STOCK.c.on_hand - _STOCK.c.reserved - _STOCK.c.safety_stock).label("available"),
        _WAREHOUSE.c.code,
        _WAREHOUSE.c.province,
        _WAREHOUSE.c.latitude,
        _WAREHOUSE.c.longitude,
        _WAREHOUSE.c.priority,
        _WAREHOUSE.c.cost_factor,
    )
    .join(_WAREHOUSE, _WAREHOUSE.c.id == _STOCK.c.warehouse_id)
    .where(_STOCK.c.sku.in_(bindparam("skus", expanding=True)), _WAREHOUSE.c.active.is_(True))
    .order_by(_STOCK.c.warehouse_id, _STOCK.c.sku, _STOCK.c.bucket)
)

# --- warehouses and SKUs -----------------------------------------------------------------------


async def add_warehouse(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert a warehouse; returns its id."""
    result = await session.execute(insert(Warehouse).values(**values).returning(Warehouse.id))
    return int(result.scalar_one())


async def update_warehouse(
    session: AsyncSession, warehouse_id: int, values: dict[str, Any]
) -> None:
    """Change a warehouse's attributes."""
    await session.execute(update(Warehouse).where(Warehouse.id == warehouse_id).values(**values))


async def warehouse_by_code(session: AsyncSession, code: str) -> Warehouse | None:
    """One warehouse by code, read fresh."""
    return await session.scalar(
        select(Warehouse).where(Warehouse.code == code).execution_options(populate_existing=True)
    )


async def warehouses(session: AsyncSession, *, active_only: bool = False) -> list[Warehouse]:
    """Every warehouse by code."""
    stmt = select(Warehouse).order_by(Warehouse.code)
    if active_only:
        stmt = stmt.where(Warehouse.active.is_(True))
    return list((await session.scalars(stmt)).all())


async def count_warehouses(session: AsyncSession) -> int:
    """How many warehouses exist."""
    return int(await session.scalar(select(func.count()).select_from(Warehouse)) or 0)


# --- stock rows --------------------------------------------------------------------------------


async def stock_rows(session: AsyncSession, warehouse_id: int, sku: str) -> list[Stock]:
    """Bucket rows of one (warehouse, SKU), read fresh, by bucket."""
    rows = await session.scalars(
        select(Stock)
        .where(Stock.warehouse_id == warehouse_id, Stock.sku == sku)
        .order_by(Stock.bucket)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def lock_stock_of(session: AsyncSession, skus: list[str]) -> list[int]:
    """Lock every bucket row of these SKUs (all warehouses) in stock id order, as the UPDATEs
    that follow would (FOR NO KEY UPDATE); returns the ids. SQLite locks the whole database
    for a writer and renders no FOR clause."""
    rows = await session.scalars(
        select(Stock.id)
        .where(Stock.sku.in_(skus))
        .order_by(Stock.id)
        .with_for_update(key_share=True)
    )
    return [int(i) for i in rows.all()]


async def lock_committed_stock_of(session: AsyncSession, order_ids: list[int]) -> list[int]:
    """Lock the stock rows the orders' committed reservations sit on, in stock id order
    (FOR NO KEY UPDATE, as consume's UPDATE would); returns the ids."""
    rows = await session.scalars(
        select(Stock.id)
        .where(
            Stock.id.in_(
                select(Reservation.stock_id).where(
                    Reservation.order_id.in_(order_ids), Reservation.state == "committed"
                )
            )
        )
        .order_by(Stock.id)
        .with_for_update(key_share=True)
    )
    return [int(i) for i in rows.all()]


async def add_stock_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Create bucket rows."""
    await session.execute(insert(Stock), rows)


async def candidate_buckets(session: AsyncSession, skus: list[str]) -> list[Any]:
    """Every bucket of the SKUs in active warehouses, with its warehouse's routing attributes:
    one query for the whole routing decision."""
    return list((await session.execute(_CANDIDATE_BUCKETS, {"skus": skus})).all())


class Bucket(NamedTuple):
    """A row of `candidate_buckets`."""

    id: int
    warehouse_id: int
    sku: str
    bucket: int
    available: int
    code: str
    province: str
    latitude: Any
    longitude: Any
    priority: int
    cost_factor: Any


def candidate_buckets_read(session: AsyncSession, skus: list[str]) -> Read[list[Any]]:
    """`candidate_buckets` as a `read_together` read (PostgreSQL; one statement text whatever
    the number of SKUs)."""
    return Read(
        "SELECT s.id, s.warehouse_id, s.sku, s.bucket,"
        " (s.on_hand - s.reserved) - s.safety_stock AS available,"
        " w.code, w.province, w.latitude, w.longitude, w.priority, w.cost_factor"
        " FROM stock s JOIN warehouse w ON w.id = s.warehouse_id"
        " WHERE s.sku = ANY(CAST($1 AS text[])) AND w.active IS true"
        " ORDER BY s.warehouse_id, s.sku, s.bucket",
        [skus],
        lambda rows: [Bucket(*row) for row in rows],
        lambda: candidate_buckets(session, skus),
    )


async def bucket_availability(
    session: AsyncSession, warehouse_id: int, sku: str
) -> list[tuple[int, int]]:
    """(stock id, available) per bucket of one (warehouse, SKU), by bucket."""
    rows = await session.execute(
        select(Stock.id, AVAILABLE)
        .where(Stock.warehouse_id == warehouse_id, Stock.sku == sku)
        .order_by(Stock.bucket)
    )
    return [(int(i), int(a)) for i, a in rows.all()]


_TRY_RESERVE = (
    update(table_of(Stock))
    .where(Stock.id == bindparam("stock_id"), bindparam("quantity") <= AVAILABLE)
    .values(reserved=Stock.reserved + bindparam("quantity"))
)


async def try_reserve(session: AsyncSession, stock_id: int, quantity: int) -> bool:
    """Reserve units on one bucket only if enough is available to sell right now."""
    result = await session.execute(_TRY_RESERVE, {"stock_id": stock_id, "quantity": quantity})
    return result.rowcount == 1  # type: ignore[attr-defined]


# Several rows at once (PostgreSQL), in one statement whatever their number: the CTE locks the
# rows in id order (the fixed lock order two batches must agree on; a CTE with FOR NO KEY UPDATE
# is not inlined, and it yields each row only once it holds it), and the UPDATE takes each row's
# units only if they are still there to sell. A row is updated only after the CTE has yielded
# it, so every lock this statement waits for is taken in id order; a row another transaction
# changed meanwhile is checked again on its newest version (READ COMMITTED's re-check of an
# UPDATE), as the separate lock statement ensured before (ADR 0055: one round trip fewer
# with the hot rows held).
_TAKE_ROWS = """
    WITH locked AS (
        SELECT id FROM stock WHERE id = ANY(CAST($1 AS bigint[]))
        ORDER BY id FOR NO KEY UPDATE
    )
    UPDATE stock SET reserved = stock.reserved + wanted.units
    FROM unnest(CAST($1 AS bigint[]), CAST($2 AS integer[])) AS wanted(id, units)
    WHERE stock.id = wanted.id
      AND stock.id IN (SELECT id FROM locked)
      AND wanted.units <= (stock.on_hand - stock.reserved) - stock.safety_stock
    RETURNING stock.id
    """


async def try_reserve_many(session: AsyncSession, totals: dict[int, int]) -> bool:
    """Reserve units on several buckets at once, each only if enough is available to sell right
    now; False unless every one of them could (the caller rolls the transaction back)."""
    ids = sorted(totals)
    result = await execute_driver_sql(session, _TAKE_ROWS, [ids, [totals[i] for i in ids]])
    return len(result.all()) == len(ids)


async def try_reserve_many_at_end(
    session: AsyncSession, totals: dict[int, int], short: Callable[[], None]
) -> bool:
    """`try_reserve_many` as the last statement of the enclosing `folded_inserts` block (one
    round trip with its INSERTs, when the block ends), calling `short` then unless every row
    had its units; False, and nothing done, outside such a block."""
    ids = sorted(totals)

    def check(rows: list[Any]) -> None:
        if len(rows) != len(ids):
            short()

    return await end_fold_with(session, _TAKE_ROWS, [ids, [totals[i] for i in ids]], check)


async def unreserve(session: AsyncSession, stock_id: int, quantity: int) -> None:
    """Give reserved units back to a bucket."""
    await session.execute(
        update(table_of(Stock))
        .where(Stock.id == stock_id)
        .values(reserved=Stock.reserved - quantity)
    )


async def unreserve_many(session: AsyncSession, quantities: list[tuple[int, int]]) -> None:
    """`unreserve` for many buckets, one executemany in the order given ((stock id, quantity)
    each: callers pass stock id order, the one lock order)."""
    if quantities:
        await session.execute(
            update(_STOCK)
            .where(_STOCK.c.id == bindparam("sid"))
            .values(reserved=_STOCK.c.reserved - bindparam("qty")),
            [{"sid": stock_id, "qty": quantity} for stock_id, quantity in quantities],
        )


async def consume(session: AsyncSession, stock_id: int, quantity: int) -> None:
    """Units leave the warehouse: on hand and reserved both drop."""
    await session.execute(
        update(table_of(Stock))
        .where(Stock.id == stock_id)
        .values(on_hand=Stock.on_hand - quantity, reserved=Stock.reserved - quantity)
    )


async def consume_many(session: AsyncSession, quantities: list[tuple[int, int]]) -> None:
    """`consume` for many buckets, one executemany in the order given ((stock id, quantity)
    each: callers pass stock id order, the one lock order)."""
    if quantities:
        await session.execute(
            update(_STOCK)
            .where(_STOCK.c.id == bindparam("sid"))
            .values(
                on_hand=_STOCK.c.on_hand - bindparam("qty"),
                reserved=_STOCK.c.reserved - bindparam("qty"),
            ),
            [{"sid": stock_id, "qty": quantity} for stock_id, quantity in quantities],
        )


async def add_on_hand(session: AsyncSession, stock_id: int, delta: int) -> bool:
    """Change on hand; refused (False) when it would drop below reserved."""
    result = await session.execute(
        update(table_of(Stock))
        .where(Stock.id == stock_id, Stock.on_hand + delta >= Stock.reserved)
        .values(on_hand=Stock.on_hand + delta)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def set_safety(session: AsyncSession, stock_id: int, safety: int) -> None:
    """Set one bucket's safety stock."""
    await session.execute(
        update(table_of(Stock)).where(Stock.id == stock_id).values(safety_stock=safety)
    )


async def stock_of_sku(
    session: AsyncSession, sku: str
) -> list[tuple[Warehouse, int, int, int, int]]:
    """Per warehouse: (warehouse, on hand, reserved, safety stock, buckets) for a SKU."""
    rows = await session.execute(
        select(
            Warehouse,
            func.sum(Stock.on_hand),
            func.sum(Stock.reserved),
            func.sum(Stock.safety_stock),
            func.count(),
        )
        .join(Stock, Stock.warehouse_id == Warehouse.id)
        .where(Stock.sku == sku)
        .group_by(Warehouse.id)
        .order_by(Warehouse.code)
    )
    return [(w, int(o), int(r), int(s), int(b)) for w, o, r, s, b in rows.all()]


async def stock_page(
    session: AsyncSession, sku_prefix: str | None, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str, int, int, int]]:
    """(sku, warehouse code, on hand, reserved, safety stock) by SKU then warehouse, after the
    (sku, code) key `after` (keyset pages), optionally of SKUs starting with `sku_prefix`."""
    query = (
        select(
            Stock.sku,
            Warehouse.code,
            func.sum(Stock.on_hand),
            func.sum(Stock.reserved),
            func.sum(Stock.safety_stock),
        )
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .group_by(Stock.sku, Warehouse.code)
        .order_by(Stock.sku, Warehouse.code)
        .limit(limit)
    )
    if sku_prefix:
        escaped = sku_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Stock.sku.like(f"{escaped}%", escape="\\"))
    if after is not None:
        query = query.having(
            (Stock.sku > after[0]) | and_(Stock.sku == after[0], Warehouse.code > after[1])
        )
    rows = await session.execute(query)
    return [(sku, code, int(o), int(r), int(s)) for sku, code, o, r, s in rows.all()]


async def movements_page(
    session: AsyncSession,
    *,
    sku: str | None,
    kind: str | None,
    before_id: int | None,
    limit: int,
) -> list[tuple[StockMovement, str]]:
    """Ledger rows with their warehouse code, newest first, by SKU and kind."""
    query = (
        select(StockMovement, Warehouse.code)
        .join(Warehouse, Warehouse.id == StockMovement.warehouse_id)
        .order_by(StockMovement.id.desc())
        .limit(limit)
    )
    if sku:
        query = query.where(StockMovement.sku == sku)
    if kind:
        query = query.where(StockMovement.kind == kind)
    if before_id is not None:
        query = query.where(StockMovement.id < before_id)
    rows = await session.execute(query)
    return [(m, code) for m, code in rows.all()]


async def available_totals(session: AsyncSession, skus: list[str]) -> dict[str, int]:
    """Available to sell per SKU over the active warehouses (sku -> units)."""
    rows = await session.execute(
        select(Stock.sku, func.sum(AVAILABLE))
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .where(Stock.sku.in_(skus), Warehouse.active.is_(True))
        .group_by(Stock.sku)
    )
    return {str(sku): int(units or 0) for sku, units in rows.all()}


# --- movements ---------------------------------------------------------------------------------


async def add_movement(session: AsyncSession, values: dict[str, Any]) -> None:
    """Append one ledger row."""
    await session.execute(insert(StockMovement).values(**values))


async def add_movements(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append ledger rows."""
    if rows:
        await session.execute(insert(StockMovement), rows)


# --- reservations ------------------------------------------------------------------------------


async def add_reservations(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert reservation rows."""
    await insert_rows(session, table_of(Reservation), rows)


# What a move of reservations returns: (reservation id, stock id, warehouse id, sku, quantity).
_MOVED = (
    Reservation.id,
    Reservation.stock_id,
    Reservation.warehouse_id,
    Reservation.sku,
    Reservation.quantity,
)


def _moved(rows: Any) -> list[tuple[int, int, int, str, int]]:
    return sorted((int(a), int(b), int(c), str(d), int(e)) for a, b, c, d, e in rows)


async def move_reservations(
    session: AsyncSession,
    order_id: int,
    from_states: tuple[str, ...],
    to_state: str,
    at: datetime,
    *,
    clear_expiry: bool = False,
    warehouse_id: int | None = None,
) -> list[tuple[int, int, int, str, int]]:
    """Compare-and-set an order's reservations (at one warehouse, if given) between states;
    returns the rows moved as (reservation id, stock id, warehouse id, sku, quantity)."""
    values: dict[str, Any] = {"state": to_state, "updated_at": at}
    if clear_expiry:
        values["expires_at"] = None
    where = [Reservation.order_id == order_id, Reservation.state.in_(from_states)]
    if warehouse_id is not None:
        where.append(Reservation.warehouse_id == warehouse_id)
    result = await session.execute(
        update(table_of(Reservation)).where(*where).values(**values).returning(*_MOVED)
    )
    return _moved(result.all())


async def move_reservations_many(
    session: AsyncSession,
    order_ids: list[int],
    from_states: tuple[str, ...],
    to_state: str,
    at: datetime,
) -> list[tuple[int, int, int, str, int]]:
    """`move_reservations` for many orders in one statement; returns the rows moved as
    (reservation id, stock id, warehouse id, sku, quantity)."""
    if not order_ids:
        return []
    result = await session.execute(
        update(table_of(Reservation))
        .where(Reservation.order_id.in_(order_ids), Reservation.state.in_(from_states))
        .values(state=to_state, updated_at=at)
        .returning(*_MOVED)
    )
    return _moved(result.all())


async def consume_committed_many(
    session: AsyncSession, order_ids: list[int], at: datetime
) -> list[tuple[int, int, int, str, int]]:
    """Many orders' committed reservations become consumed, in one statement; returns the rows
    moved as (order id, stock id, warehouse id, sku, quantity)."""
    if not order_ids:
        return []
    result = await session.execute(
        update(table_of(Reservation))
        .where(Reservation.order_id.in_(order_ids), Reservation.state == "committed")
        .values(state="consumed", updated_at=at)
        .returning(
            Reservation.order_id,
            Reservation.stock_id,
            Reservation.warehouse_id,
            Reservation.sku,
            Reservation.quantity,
        )
    )
    return sorted((int(a), int(b), int(c), str(d), int(e)) for a, b, c, d, e in result.all())


async def commit_held_many(session: AsyncSession, order_ids: list[int], at: datetime) -> None:
    """Payment arrived for many orders: their held reservations become committed, no expiry."""
    await session.execute(
        update(table_of(Reservation))
        .where(Reservation.order_id.in_(order_ids), Reservation.state == "held")
        .values(state="committed", updated_at=at, expires_at=None)
    )


async def committed_per_line(
    session: AsyncSession, order_ids: list[int]
) -> dict[tuple[int, str], int]:
    """Units committed or consumed per order line and SKU (a bundle line reserves several
    components), for many orders ((order_line_id, sku) -> units)."""
    rows = await session.execute(
        select(Reservation.order_line_id, Reservation.sku, func.sum(Reservation.quantity))
        .where(
            Reservation.order_id.in_(order_ids),
            Reservation.state.in_(("committed", "consumed")),
        )
        .group_by(Reservation.order_line_id, Reservation.sku)
    )
    return {
        (int(line_id), str(sku)): int(units)
        for line_id, sku, units in rows.all()
        if line_id is not None
    }


async def expired_held(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> list[Reservation]:
    """Held reservations past their expiry."""
    stmt = (
        select(Reservation)
        .where(Reservation.state == "held", Reservation.expires_at < now)
        .order_by(Reservation.expires_at)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def release_one(session: AsyncSession, reservation_id: int, at: datetime) -> bool:
    """Release one held reservation, only if it is still held."""
    result = await session.execute(
        update(table_of(Reservation))
        .where(Reservation.id == reservation_id, Reservation.state == "held")
        .values(state="released", updated_at=at)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def reservations_of(session: AsyncSession, order_id: int) -> list[tuple[Reservation, str]]:
    """An order's reservations with their warehouse codes."""
    rows = await session.execute(
        select(Reservation, Warehouse.code)
        .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
        .where(Reservation.order_id == order_id)
        .order_by(Reservation.id)
    )
    return [(r, str(code)) for r, code in rows.all()]


async def reservations_of_orders(
    session: AsyncSession, order_ids: list[int]
) -> list[tuple[Reservation, str]]:
    """The reservations of several orders with their warehouse codes, in id order."""
    if not order_ids:
        return []
    rows = await session.execute(
        select(Reservation, Warehouse.code)
        .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
        .where(Reservation.order_id.in_(order_ids))
        .order_by(Reservation.id)
    )
    return [(r, str(code)) for r, code in rows.all()]


async def open_reservations(
    session: AsyncSession,
    state: str,
    *,
    sku: str | None = None,
    warehouses: tuple[str, ...] | None = None,
    limit: int = 100,
) -> list[tuple[Reservation, str]]:
    """Reservations in one state with their warehouse codes: held ones soonest to expire
    first (ix_reservation_state_expires), committed ones newest first."""
    stmt = (
        select(Reservation, Warehouse.code)
        .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
        .where(Reservation.state == state)
    )
    if sku:
        stmt = stmt.where(Reservation.sku == sku)
    if warehouses is not None:
        stmt = stmt.where(Warehouse.code.in_(warehouses))
    order = (
        (Reservation.expires_at, Reservation.id) if state == "held" else (Reservation.id.desc(),)
    )
    rows = await session.execute(stmt.order_by(*order).limit(limit))
    return [(r, str(code)) for r, code in rows.all()]


async def reservation_warehouses_of(
    session: AsyncSession, order_ids: list[int]
) -> list[tuple[int, str]]:
    """(order id, warehouse code) of every reservation of these orders."""
    rows = await session.execute(
        select(Reservation.order_id, Warehouse.code)
        .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
        .where(Reservation.order_id.in_(order_ids))
        .distinct()
    )
    return [(int(o), str(c)) for o, c in rows.all()]


async def add_allocation(session: AsyncSession, values: dict[str, Any]) -> None:
    """Record an order's routing explanation."""
    await insert_rows(session, table_of(Allocation), values)


async def allocation_of(session: AsyncSession, order_id: int) -> Allocation | None:
    """An order's routing explanation."""
    return await session.get(Allocation, order_id)


# --- checks and gauges -------------------------------------------------------------------------


async def reservation_state_counts(session: AsyncSession) -> dict[str, int]:
    """Reservations per state."""
    rows = await session.execute(
        select(Reservation.state, func.count()).group_by(Reservation.state)
    )
    return {str(s): int(n) for s, n in rows.all()}


async def oldest_expired_held(session: AsyncSession, now: datetime) -> datetime | None:
    """Expiry of the oldest held reservation already past it."""
    value = await session.scalar(
        select(func.min(Reservation.expires_at)).where(
            Reservation.state == "held", Reservation.expires_at < now
        )
    )
    return value if isinstance(value, datetime) or value is None else datetime.fromisoformat(value)


async def reserved_mismatches(session: AsyncSession) -> list[tuple[int, int, int]]:
    """Stock rows whose reserved differs from their live reservations: (stock id, reserved, sum)."""
    live = (
        select(Reservation.stock_id, func.sum(Reservation.quantity).label("qty"))
        .where(Reservation.state.in_(("held", "committed")))
        .group_by(Reservation.stock_id)
        .subquery()
    )
    rows = await session.execute(
        select(Stock.id, Stock.reserved, func.coalesce(live.c.qty, 0))
        .outerjoin(live, live.c.stock_id == Stock.id)
        .where(Stock.reserved != func.coalesce(live.c.qty, 0))
    )
    return [(int(a), int(b), int(c)) for a, b, c in rows.all()]


async def on_hand_mismatches(session: AsyncSession) -> list[tuple[int, str, int, int]]:
    """(warehouse, SKU) whose on hand differs from the sum of its movements."""
    ledger = (
        select(
            StockMovement.warehouse_id,
            StockMovement.sku,
            func.sum(StockMovement.quantity).label("qty"),
        )
        .group_by(StockMovement.warehouse_id, StockMovement.sku)
        .subquery()
    )
    stock = (
        select(Stock.warehouse_id, Stock.sku, func.sum(Stock.on_hand).label("on_hand"))
        .group_by(Stock.warehouse_id, Stock.sku)
        .subquery()
    )
    rows = await session.execute(
        select(stock.c.warehouse_id, stock.c.sku, stock.c.on_hand, func.coalesce(ledger.c.qty, 0))
        .outerjoin(
            ledger,
            and_(ledger.c.warehouse_id == stock.c.warehouse_id, ledger.c.sku == stock.c.sku),
        )
        .where(stock.c.on_hand != func.coalesce(ledger.c.qty, 0))
    )
    return [(int(a), str(b), int(c), int(d)) for a, b, c, d in rows.all()]


async def count_negative_available(session: AsyncSession) -> int:
    """Stock rows whose available to sell is below zero."""
    return int(await session.scalar(select(func.count()).where(AVAILABLE < 0)) or 0)


async def stock_levels(session: AsyncSession) -> list[tuple[str, str, int, int, int]]:
    """Per (SKU, warehouse): (sku, warehouse code, on hand, reserved, safety stock), in that
    order."""
    rows = await session.execute(
        select(
            Stock.sku,
            Warehouse.code,
            func.sum(Stock.on_hand),
            func.sum(Stock.reserved),
            func.sum(Stock.safety_stock),
        )
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .group_by(Stock.sku, Warehouse.code)
        .order_by(Stock.sku, Warehouse.code)
    )
    return [(str(s), str(w), int(o), int(r), int(f)) for s, w, o, r, f in rows.all()]


async def movement_total(session: AsyncSession, kind: str, reason_like: str | None = None) -> int:
    """The sum of the ledger's movements of a kind (optionally with a reason pattern)."""
    query = select(func.coalesce(func.sum(StockMovement.quantity), 0)).where(
        StockMovement.kind == kind
    )
    if reason_like is not None:
        query = query.where(StockMovement.reason.like(reason_like))
    return int(await session.scalar(query) or 0)
